"""Device selection and description (CPU / CUDA), shared by methods, run records and the UI."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

__all__ = ["cuda_available", "resolve_device", "describe_devices", "choose_threads", "free_core_threads",
           "busy_cores_elsewhere",
           "fit_threads", "hold_threads"]


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


def choose_threads(explicit: int = 0) -> tuple[int, str]:
    """How many torch CPU threads a fit should use, and why.

    An explicit setting wins (a config's ``torch_threads`` > 0, then ``SCCLUST_THREADS``). Otherwise the free
    cores (:func:`free_core_threads`): the cores this process may run on minus those other processes keep busy,
    at least 1. On a
    2-core machine two jobs with 2 threads each measured several times slower than with 1 each (OpenMP
    threads spin-waiting on a busy core), so a loaded machine gets fewer threads.
    """
    return _explicit_threads(explicit) or free_core_threads()


def _explicit_threads(explicit: int) -> tuple[int, str] | None:
    """A config's ``torch_threads`` > 0, then ``SCCLUST_THREADS``; None when neither is set."""
    if explicit and explicit > 0:
        return int(explicit), "config torch_threads"
    env = os.environ.get("SCCLUST_THREADS", "").strip()
    if not env:
        return None
    try:
        n = int(env)
    except ValueError:
        raise ValueError(f"SCCLUST_THREADS must be a positive integer, got {env!r}") from None
    if n < 1:
        raise ValueError(f"SCCLUST_THREADS must be a positive integer, got {env!r}")
    return n, "SCCLUST_THREADS"


def free_core_threads() -> tuple[int, str]:
    """Threads for the cores free now (other processes' use over 0.15 s; the load average without ``/proc``)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = busy_cores_elsewhere()
    if busy is not None:
        return max(1, min(cores, int(cores - busy + 0.5))), f"free cores: {cores} cores, {busy:.1f} busy elsewhere"
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover - platforms without a load average
        return cores, f"all {cores} cores (no load average)"
    n = max(1, min(cores, int(cores - load + 0.5)))
    return n, f"free cores: {cores} cores, load {load:.1f}"


def _cpu_ticks() -> tuple[int, int, int]:
    """(all CPUs' total ticks, their idle ticks, this process's user + system ticks) from ``/proc``."""
    with open("/proc/stat") as fh:
        vals = [int(v) for v in fh.readline().split()[1:]]
    with open("/proc/self/stat") as fh:
        own = fh.read().rsplit(")", 1)[1].split()
    return sum(vals), vals[3] + (vals[4] if len(vals) > 4 else 0), int(own[11]) + int(own[12])


def busy_cores_elsewhere(window: float = 0.15) -> float | None:
    """Cores kept busy by other processes over the next ``window`` seconds (None without ``/proc``)."""
    import time

    try:
        t0, idle0, own0 = _cpu_ticks()
        time.sleep(window)
        t1, idle1, own1 = _cpu_ticks()
    except (OSError, ValueError, IndexError):
        return None
    total = t1 - t0
    if total <= 0:
        return None
    busy = max(0, (total - (idle1 - idle0)) - (own1 - own0))
    return busy / total * (os.cpu_count() or 1)


@contextmanager
def fit_threads(explicit: int, device: str) -> Iterator[dict[str, Any]]:
    """Set the torch CPU thread count for one fit (see :func:`choose_threads`), restoring it afterwards.

    Yields ``{"n": threads, "source": why}``, which the fit records in the run's extras. On CUDA the count
    is left alone (the CPU only feeds the GPU) and the source says so.
    """
    import torch

    prev = torch.get_num_threads()
    if device != "cpu":
        info = {"n": prev, "source": f"unchanged ({device})"}
    else:
        fixed = _explicit_threads(explicit)
        n, why = fixed or free_core_threads()
        info = {"n": n, "source": why}
        if fixed is None:
            info["auto"] = True  # chosen from the free cores: looked at again after preprocessing
        torch.set_num_threads(n)  # always: torch reports OpenMP's count only (see hold_threads)
    try:
        yield info
    finally:
        if device == "cpu":
            torch.set_num_threads(prev)


def hold_threads(info: dict[str, Any], device: str) -> None:
    """Re-apply the thread count chosen by :func:`fit_threads`, choosing it again when it came from the free cores.

    Needed after preprocessing: scanpy's recipes (numba / OpenMP under the hood) reset torch's intra-op threads
    to the core count — measured here: 1 → 2 after ``recipe_r2``, which made a 1-thread run on a loaded 2-core
    machine 5× slower and not the computation the user asked for. A count chosen from the free cores is measured
    again here, when the training starts: at the click on Start the browser and the app are busy redrawing the
    page for a second or two, which gave the app's runs one thread where the same fit from Python got two.
    """
    import torch

    if device != "cpu":
        return
    if info.get("auto"):
        n, why = free_core_threads()
        info.update(n=n, source=f"{why} (after preprocessing)")
    # Always set, even when torch already reports this count: ``torch.get_num_threads()`` reads OpenMP's count,
    # which scanpy's recipes reset, while MKL's (the matrix products) keeps the earlier ``set_num_threads``.
    # Skipping the call when the counts matched left the app's runs with MKL on one thread after a 1-thread
    # choice at the click (CICL on 1,000 cells: 94-103 s against 55-61 s; the second thread slept 76 % of the time).
    torch.set_num_threads(int(info["n"]))
