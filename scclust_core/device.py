"""Device selection and description (CPU / CUDA), shared by methods, run records and the UI."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

__all__ = ["cuda_available", "resolve_device", "describe_devices", "set_threads", "torch_threads"]


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard requirement
        return False
    return bool(torch.cuda.is_available())


def resolve_device(device: str = "auto") -> str:
    """``auto`` → ``cuda`` when present, else ``cpu``; asking for CUDA without one is an error."""
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device.startswith("cuda") and not cuda_available():
        raise ValueError("device='cuda' was requested but no CUDA GPU is available; use device='cpu' or 'auto'")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"Unknown device {device!r}; use 'auto', 'cpu' or 'cuda'")
    return device


def describe_devices() -> list[dict]:
    """What exists: CPU (cores) and each CUDA GPU (name, memory in GiB)."""
    out = [{"device": "cpu", "name": f"CPU ({os.cpu_count()} cores)", "memory_gib": None}]
    if cuda_available():
        import torch

        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            out.append({"device": f"cuda:{i}" if i else "cuda", "name": p.name,
                        "memory_gib": round(p.total_memory / 2**30, 1)})
    return out


def set_threads() -> int:
    """Use every core, but no more: oversubscribing a small CPU slows torch down.

    ``SCCLUST_THREADS=n`` overrides this: on a machine shared with other jobs, fewer threads than cores is
    often faster (measured here: 1 thread beat 2 by several times while other jobs loaded both cores).
    """
    import torch

    env = os.environ.get("SCCLUST_THREADS", "").strip()
    if env:
        try:
            n = max(1, int(env))
        except ValueError:
            raise ValueError(f"SCCLUST_THREADS must be a positive integer, got {env!r}") from None
    else:
        n = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


@contextmanager
def torch_threads(n: int, device: str = "cpu") -> Iterator[None]:
    """Run a block with ``n`` torch CPU threads (0 = leave as is), restoring the previous number after."""
    import torch

    prev = torch.get_num_threads()
    if device == "cpu" and n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != prev:
            torch.set_num_threads(prev)
