"""Atomic file writes: a reader (another page, another process, a server restarted mid-write) sees the old file
or the new one, never half of one, and a failed write (disk full) leaves the old file untouched.

Every write goes to a *unique* temporary name in the destination's directory (so two writers never share a
temporary file and ``os.replace`` stays a same-filesystem rename), is flushed to disk, then replaces the target.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_bytes"]


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; on a clean exit it replaces ``path``, on error it is removed.

    For writers that want a file name (``AnnData.write_h5ad``, ``np.save``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
    except OSError:  # pragma: no cover - some filesystems do not support fsync
        pass
    finally:
        os.close(fd)
