"""Atomic file writes: a reader (another page, another process, a server restarted mid-write) sees the old file
or the new one, never half of one, and a failed write (disk full) leaves the old file untouched.

Every write goes to a *unique* temporary name in the destination's directory (so two writers never share a
temporary file and ``os.replace`` stays a same-filesystem rename), is flushed to disk, then replaces the target.

A full disk (``ENOSPC``, a quota) or the file-size limit (``EFBIG``, ``RLIMIT_FSIZE``) becomes a
:class:`DiskFullError`: a ``ValueError`` (every caller shows those as a message) that is still an ``OSError``,
saying how much room there is and what to do. :func:`file_digest` / :func:`check_digest` record and verify the
length and sha256 of a file written here, so a file cut short later is never read back as if it were whole.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_bytes", "DiskFullError", "disk_errors",
           "check_free_space", "free_bytes", "is_disk_full", "disk_full_error", "file_digest", "bytes_digest",
           "check_digest"]

#: errors that mean "no room for this write": full disk, disk quota, file-size limit
_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
_FULL_TEXTS = ("no space left", "file too large", "disk quota exceeded")
#: numpy's ``tofile`` reports a short write without an errno ("640000 requested and 249968 written")
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")
_TEMP_NAME = re.compile(r"\.(.+)\.[A-Za-z0-9_]{8}\.tmp")  # what atomic_path's mkstemp names look like


class DiskFullError(ValueError, OSError):
    """No room for a write (full disk, quota or file-size limit): a ValueError with a message that says what to do,
    still an ``OSError`` so code that handles I/O errors keeps handling it."""

    def __str__(self) -> str:  # OSError would print "[Errno 28] None: path" once errno is set
        return str(self.args[0]) if self.args else ""


def is_disk_full(exc: BaseException) -> bool:
    """True for an ``OSError`` meaning "no room" (h5py sets ``errno`` too; its text is checked as a fallback)."""
    if isinstance(exc, DiskFullError):
        return True
    if not isinstance(exc, OSError):
        return False
    text = str(exc).lower()
    return exc.errno in _FULL_ERRNOS or any(t in text for t in _FULL_TEXTS) or bool(_SHORT_WRITE.search(text))


def free_bytes(path: str | Path) -> int | None:
    """Room for one new file at ``path``: free disk space there, capped by this process's file-size limit."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe if probe.is_dir() else probe.parent).free
    except OSError:
        return None
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if soft != resource.RLIM_INFINITY and soft >= 0:
            free = min(free, int(soft))
    except (ImportError, ValueError, OSError):  # pragma: no cover - no rlimits on this platform
        pass
    return int(free)


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MB" if n < 10 * 2**20 else f"{n / 2**20:,.0f} MB"


def disk_full_error(path: str | Path, needed: int = 0, cause: BaseException | str | None = None) -> DiskFullError:
    """The :class:`DiskFullError` for a write of about ``needed`` bytes to ``path`` (its message says what to do)."""
    path = Path(path)
    free = free_bytes(path)
    shown = _TEMP_NAME.fullmatch(path.name)  # a temporary file of atomic_path: name the file it stands for
    name = shown.group(1) if shown else path.name
    room = f"{_mb(free)} free" if free is not None else "no free space known"
    need = f", {_mb(needed)} needed" if needed > 0 else ""
    code = getattr(cause, "errno", None)
    why = f" [{os.strerror(code) if isinstance(code, int) else str(cause)[:200]}]" if cause else ""
    err = DiskFullError(f"Cannot write {name} in {path.parent}: the disk is full ({room}{need}): free space "
                        f"or choose another folder{why}")
    err.errno = getattr(cause, "errno", None) or errno.ENOSPC
    err.filename = str(path)
    return err


def check_free_space(path: str | Path, needed: int) -> None:
    """Refuse a write of about ``needed`` bytes before it starts when ``path``'s disk has less room."""
    free = free_bytes(path)
    if needed > 0 and free is not None and free < needed:
        raise disk_full_error(path, needed)


@contextlib.contextmanager
def disk_errors(path: str | Path, needed: int = 0) -> Iterator[None]:
    """Turn a "no room" ``OSError`` raised inside the block into a :class:`DiskFullError` about ``path``."""
    try:
        yield
    except DiskFullError:
        raise
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(path, needed, exc) from exc
        raise


@contextlib.contextmanager
def atomic_path(path: str | Path, *, needed: int = 0) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; on a clean exit it replaces ``path``, on error it is removed.

    For writers that want a file name (``AnnData.write_h5ad``, ``np.save``). ``needed``: the expected size, checked
    against the free space first; a full disk inside the block is raised as :class:`DiskFullError`.
    """
    path = Path(path)
    with disk_errors(path, needed):
        path.parent.mkdir(parents=True, exist_ok=True)
        check_free_space(path, needed)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            yield tmp_path
            _fsync(tmp_path)
            os.replace(tmp_path, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _fsync(path: Path) -> None:
    """Flush the file's data before the rename, so a crash cannot leave a renamed but empty file."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - the writer removed it; os.replace will say so
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # a write that never reached the disk (ENOSPC, EIO) must not replace the old file
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def bytes_digest(data: bytes) -> dict[str, Any]:
    """``{"size", "sha256"}`` of ``data`` (what :func:`check_digest` verifies)."""
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def file_digest(path: str | Path) -> dict[str, Any]:
    """``{"size", "sha256"}`` of the file at ``path``, read in 1 MiB blocks (about 1 GB/s)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(2**20), b""):
            h.update(block)
            size += len(block)
    return {"size": size, "sha256": h.hexdigest()}


def check_digest(path: str | Path, expected: dict[str, Any], *, full: bool = True) -> str | None:
    """What is wrong with the file at ``path`` compared with ``expected`` (a :func:`file_digest`), or None.

    ``full=False`` compares the length only (a ``stat``: cheap enough for every listing of runs).
    """
    try:
        size = os.stat(path).st_size
    except OSError:
        return "it is missing"
    want = expected.get("size")
    if isinstance(want, int) and size != want:
        return f"it has {size:,} bytes, {want:,} were written (cut short or changed)"
    if full and expected.get("sha256") and file_digest(path)["sha256"] != expected["sha256"]:
        return "its content changed since it was written (checksum differs)"
    return None
