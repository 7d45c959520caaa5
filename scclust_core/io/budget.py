"""Memory budget for reading: declared sizes are checked against it *before* anything is allocated.

A small file can declare a huge matrix (an HDF5 dataset of 50k × 50k, a Matrix Market header of 2e9 × 2e9,
a gzip that inflates 500-fold), so readers ask :func:`require` with what the file declares and the
decompressors stop at :func:`copy_capped`'s cap. The budget is half the memory available when the read
starts, or ``SCCLUST_MAX_BYTES`` (bytes; ``K``/``M``/``G`` suffixes allowed), or ``read(max_bytes=…)``.

Disk is capped on its own: what one read writes to the temp folder (unpacked archive members, inflated gzip)
is limited to ``SCCLUST_MAX_TEMP_BYTES`` (default :data:`DEFAULT_MAX_TEMP_BYTES`) and never more than the free
space there minus :data:`DISK_MARGIN_BYTES`. A stream that comes out more than :data:`MAX_COMPRESSION_RATIO`
times larger than the compressed bytes it consumed is refused while it streams (headers can lie).
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
import re
import shutil
import tempfile
from typing import IO, Callable, Iterator

from .errors import fmt_bytes

__all__ = ["memory_budget", "available_memory", "require", "copy_capped", "budget_scope", "current_budget",
           "temp_cap", "check_ratio", "MAX_COMPRESSION_RATIO", "DEFAULT_MAX_TEMP_BYTES"]

#: Fraction of the available memory one read may use.
BUDGET_FRACTION = 0.5
ENV_VAR = "SCCLUST_MAX_BYTES"
_FALLBACK_AVAILABLE = 4 * 1024**3
#: Refuse a compressed stream or archive member that comes out more than this many times larger than the
#: compressed bytes it consumed. Count data compresses 3–20-fold (gzip'd CSV, matrix.mtx.gz); a bomb 1000-fold.
MAX_COMPRESSION_RATIO = 200
#: The ratio is enforced once this much has come out: a small file may compress very well and do no harm.
RATIO_GRACE_BYTES = 8 * 1024**2
#: Bytes asked of a decompressor at a time: it reads about as many compressed bytes ahead, so small chunks
#: keep the measured input close to what was really inflated (a bomb stops within ~16 MiB, not 200 MiB).
_COPY_CHUNK = 64 * 1024
TEMP_ENV_VAR = "SCCLUST_MAX_TEMP_BYTES"
#: Default cap on the bytes one read writes to the temp folder (``SCCLUST_MAX_TEMP_BYTES`` overrides it).
DEFAULT_MAX_TEMP_BYTES = 16 * 1024**3
#: Free disk space a read always leaves: its temp cap is never more than the free space minus this.
DISK_MARGIN_BYTES = 1024**3

_current: contextvars.ContextVar[int | None] = contextvars.ContextVar("scclust_io_budget", default=None)


@dataclasses.dataclass
class _TempAllowance:
    """Bytes one read may still write to temp files, and where its limit comes from (for the message)."""

    cap: int
    why: str
    left: int


_temp_left: contextvars.ContextVar[_TempAllowance | None] = contextvars.ContextVar("scclust_io_temp", default=None)


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


def _parse_bytes(text: str, var: str = ENV_VAR) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"{var}={text!r} is not a size: use bytes, or a number with K, M, G or T (e.g. 8G)")
    scale = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}[m.group(2).upper()]
    value = int(float(m.group(1)) * scale)
    if value <= 0:
        raise ValueError(f"{var}={text!r} must be a positive size")
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
    """Fix the memory budget and the temp-disk allowance for the duration of one read (thread- and task-local)."""
    if max_bytes is not None and int(max_bytes) <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    value = int(max_bytes) if max_bytes is not None else memory_budget()
    cap, why = temp_cap()  # the temp-disk allowance is per read too, shared by all its temp files
    token, temp_token = _current.set(value), _temp_left.set(_TempAllowance(cap, why, cap))
    try:
        yield value
    finally:
        _temp_left.reset(temp_token)
        _current.reset(token)


def free_temp_space() -> int:
    """Free bytes on the file system of the temp folder (0 when it cannot be told)."""
    try:
        return int(shutil.disk_usage(tempfile.gettempdir()).free)
    except OSError:
        return 0


def temp_cap() -> tuple[int, str]:
    """Bytes one read may write to the temp folder, and where the limit comes from (for messages)."""
    env = os.environ.get(TEMP_ENV_VAR)
    cap = _parse_bytes(env, TEMP_ENV_VAR) if env else DEFAULT_MAX_TEMP_BYTES
    why = f"{TEMP_ENV_VAR}={env}" if env else f"the default; set {TEMP_ENV_VAR} to change it"
    room = free_temp_space() - DISK_MARGIN_BYTES
    if room < cap:
        cap = max(0, room)
        why = f"the free space in {tempfile.gettempdir()} less a {fmt_bytes(DISK_MARGIN_BYTES)} margin; free some disk"
    return cap, why


def _allowance() -> _TempAllowance:
    """The read's temp-disk allowance; outside :func:`budget_scope`, a fresh one for this copy alone."""
    allowance = _temp_left.get()
    if allowance is None:
        cap, why = temp_cap()
        allowance = _TempAllowance(cap, why, cap)
    return allowance


def _charge_temp(allowance: _TempAllowance, n_bytes: int, what: str) -> None:
    allowance.left -= n_bytes
    if allowance.left < 0:
        raise ValueError(
            f"{what} unpacks to more than {fmt_bytes(allowance.cap)} of temporary files, the disk limit for one "
            f"read ({allowance.why}): upload a smaller file or a sparse format (10x .h5)"
        )


def check_ratio(out_bytes: int, in_bytes: int, what: str) -> None:
    """Refuse output more than :data:`MAX_COMPRESSION_RATIO` times its compressed input (past the grace)."""
    if out_bytes > RATIO_GRACE_BYTES and out_bytes > MAX_COMPRESSION_RATIO * max(in_bytes, 1):
        raise ValueError(
            f"{what} expands more than {MAX_COMPRESSION_RATIO}-fold ({fmt_bytes(out_bytes)} from "
            f"{fmt_bytes(in_bytes)} of compressed data), the limit for compressed input: that looks like a "
            "decompression bomb, not count data (which compresses 3–20-fold); upload it uncompressed or "
            "normally compressed"
        )


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


def copy_capped(src: IO[bytes], dst: IO[bytes], cap: int, what: str,
                consumed: Callable[[], int] | None = None) -> int:
    """Stream ``src`` into a temp file ``dst``, refusing once more than ``cap`` bytes came out (memory), the
    read's temp-disk allowance is spent, or, given ``consumed`` (compressed bytes read so far), the output
    outgrows :data:`MAX_COMPRESSION_RATIO` times the input: decompression bombs stop early."""
    total, allowance = 0, _allowance()
    start = consumed() if consumed is not None else 0
    while True:
        chunk = src.read(_COPY_CHUNK)
        if not chunk:
            return total
        total += len(chunk)
        if total > cap:
            raise ValueError(
                f"{what} unpacks to more than {fmt_bytes(cap)} (the limit for one read; {_source_hint()}): "
                "upload a smaller file or a sparse format (10x .h5 or matrix folder)"
            )
        _charge_temp(allowance, len(chunk), what)
        if consumed is not None:
            check_ratio(total, consumed() - start, what)
        dst.write(chunk)
