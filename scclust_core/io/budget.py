"""Memory budget for reading: declared sizes are checked against it *before* anything is allocated.

A small file can declare a huge matrix (an HDF5 dataset of 50k × 50k, a Matrix Market header of 2e9 × 2e9,
a gzip that inflates 500-fold), so readers ask :func:`require` with what the file declares and the
decompressors stop at :func:`copy_capped`'s cap. The budget is half the memory available when the read
starts, or ``SCCLUST_MAX_BYTES`` (bytes; ``K``/``M``/``G`` suffixes allowed), or ``read(max_bytes=…)``.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import re
from typing import IO, Iterator

from .errors import fmt_bytes

__all__ = ["memory_budget", "available_memory", "require", "copy_capped", "budget_scope", "current_budget"]

#: Fraction of the available memory one read may use.
BUDGET_FRACTION = 0.5
ENV_VAR = "SCCLUST_MAX_BYTES"
_FALLBACK_AVAILABLE = 4 * 1024**3

_current: contextvars.ContextVar[int | None] = contextvars.ContextVar("scclust_io_budget", default=None)


def available_memory() -> int:
    """Bytes of memory the OS reports as available (Linux ``MemAvailable``; else free pages; else 4 GiB)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return _FALLBACK_AVAILABLE


def _parse_bytes(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"{ENV_VAR}={text!r} is not a size: use bytes, or a number with K, M, G or T (e.g. 8G)")
    scale = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}[m.group(2).upper()]
    value = int(float(m.group(1)) * scale)
    if value <= 0:
        raise ValueError(f"{ENV_VAR}={text!r} must be a positive size")
    return value


def memory_budget() -> int:
    """The default budget: ``SCCLUST_MAX_BYTES`` when set, else half of the available memory."""
    env = os.environ.get(ENV_VAR)
    if env:
        return _parse_bytes(env)
    return int(available_memory() * BUDGET_FRACTION)


def current_budget() -> int:
    """Budget of the read in progress (set by :func:`budget_scope`), else :func:`memory_budget`."""
    value = _current.get()
    return value if value is not None else memory_budget()


@contextlib.contextmanager
def budget_scope(max_bytes: int | None) -> Iterator[int]:
    """Fix the budget for the duration of one read (thread- and task-local)."""
    if max_bytes is not None and int(max_bytes) <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    value = int(max_bytes) if max_bytes is not None else memory_budget()
    token = _current.set(value)
    try:
        yield value
    finally:
        _current.reset(token)


def _source_hint() -> str:
    return f"set {ENV_VAR} (bytes) or read(max_bytes=…) to allow more" if not os.environ.get(ENV_VAR) else \
        f"raise {ENV_VAR} to allow more"


def require(n_bytes: float, what: str, hint: str = "") -> None:
    """Raise ``ValueError`` when ``what`` would need more than the budget (checked before allocating)."""
    budget = current_budget()
    if n_bytes > budget:
        raise ValueError(
            f"{what} would need about {fmt_bytes(n_bytes)} of memory, more than the {fmt_bytes(budget)} allowed "
            f"for reading ({_source_hint()})" + (f": {hint}" if hint else "")
        )


def copy_capped(src: IO[bytes], dst: IO[bytes], cap: int, what: str) -> int:
    """Stream ``src`` into ``dst``, refusing once more than ``cap`` bytes came out (decompression bombs)."""
    total = 0
    while True:
        chunk = src.read(1 << 20)
        if not chunk:
            return total
        total += len(chunk)
        if total > cap:
            raise ValueError(
                f"{what} unpacks to more than {fmt_bytes(cap)} (the limit for one read; {_source_hint()}): "
                "upload a smaller file or a sparse format (10x .h5 or matrix folder)"
            )
        dst.write(chunk)
