"""Error messages shared by the readers, so every unreadable upload is reported the same way."""
from __future__ import annotations

import contextlib
from typing import Iterator

SUPPORTED_FORMATS_HINT = "upload .h5ad, 10x .h5, a zipped 10x matrix folder, or a CSV/TSV count table"


class OrientationUnclearError(ValueError):
    """A table's orientation cannot be told from its content; the caller must pass ``transpose=``.

    ``preview`` is a small DataFrame of the table's corner (as written) and ``evidence`` the lines of
    reasoning, so an app can show both and ask the user instead of guessing.
    """

    def __init__(self, message: str, *, preview=None, evidence: list[str] | None = None):
        super().__init__(message)
        self.preview = preview
        self.evidence = list(evidence or [])


def corrupt(what: str, exc: BaseException) -> ValueError:
    """The one message for every unreadable-file failure so the UI stays consistent."""
    detail = f"{type(exc).__name__}: {exc}".strip()
    if len(detail) > 300:
        detail = detail[:300] + "…"
    return ValueError(f"The file looks truncated or corrupt ({what}; {detail}): re-export or re-download it")


def unknown_format(name: str) -> ValueError:
    return ValueError(f"Unknown file format '{name}': {SUPPORTED_FORMATS_HINT}")


def fmt_bytes(n: float) -> str:
    """Human-readable size (binary units)."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


@contextlib.contextmanager
def resource_errors(name: str, size: int | None) -> Iterator[None]:
    """Turn ``MemoryError``/``OSError`` raised while reading into a ``ValueError`` that names the size."""
    where = f"'{name}'" + (f" ({fmt_bytes(size)})" if size is not None else "")
    try:
        yield
    except MemoryError:
        raise ValueError(
            f"Not enough memory to read {where}: the data it holds does not fit in this machine's free memory; "
            "upload a smaller or sparse file (a 10x .h5 or matrix folder keeps zeros out of memory)"
        ) from None
    except OSError as exc:
        raise ValueError(
            f"Could not read {where}: {exc.strerror or exc} (the disk may be full or the file unreadable); "
            "free some space or re-upload the file"
        ) from None
