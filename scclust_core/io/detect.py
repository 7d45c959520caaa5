"""Which reader a file needs: extension and magic bytes must agree, and HDF5 files are told apart by layout.

The content decides, not the name: a 10x ``.h5`` renamed ``.h5ad`` is read as 10x (with a note), an HDF5
file of another kind (loom, a Keras model, …) is named as such rather than called "truncated".
"""
from __future__ import annotations

import re
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from .errors import SUPPORTED_FORMATS_HINT, corrupt, unknown_format
from .report import note

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # normal / empty archive
_TABLE_EXTS = (".csv", ".tsv", ".txt")
_TAR_EXTS = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz")


def _magic(head: bytes) -> tuple[str, str] | None:
    """``(kind, suffix)`` from the leading bytes, ``None`` for plain text or unknown content."""
    for magic, kind, suffix in ((HDF5_MAGIC, "hdf5", ".h5"), (ZIP_MAGICS, "zip", ".zip"), (GZIP_MAGIC, "gzip", ".gz")):
        if head.startswith(magic):
            return kind, suffix
    if len(head) > 262 and head[257:262] == b"ustar":
        return "tar", ".tar"
    return None


def guess_suffix_from_bytes(head: bytes) -> str:
    """Give nameless uploads an extension from their content so detection can proceed."""
    found = _magic(head)
    return found[1] if found else ".csv"


def name_kind(name: str) -> str | None:
    """Format implied by the file name alone (``None`` if the extension is not one we know)."""
    low = name.lower()
    if low.endswith(".h5ad"):
        return "h5ad"
    if low.endswith((".h5", ".hdf5")):
        return "h5"
    if low.endswith(".zip"):
        return "zip"
    if low.endswith(_TAR_EXTS):
        return "tar"
    stem = low[:-3] if low.endswith(".gz") else low
    if stem.endswith(_TABLE_EXTS):
        return "table"
    return None


def content_kind(path: Path) -> str | None:
    """Format implied by the magic bytes (``None`` for plain text or unknown)."""
    with open(path, "rb") as fh:
        found = _magic(fh.read(512))
    return found[0] if found else None


def _looks_like_text(path: Path) -> str | None:
    """A short description when the file starts with printable text (a table saved under the wrong name)."""
    with open(path, "rb") as fh:
        head = fh.read(2048)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text or any(ord(c) < 9 or 13 < ord(c) < 32 for c in text):
        return None
    first = text.splitlines()[0] if text.splitlines() else ""
    sep = "tab" if "\t" in first else "comma" if "," in first else None
    return f"plain text that looks like a {sep}-separated table" if sep else "plain text"


def resolve_kind(path: Path, name: str, by_name: str | None, by_content: str | None) -> str:
    """Combine extension and magic bytes; a mismatch means a damaged or mislabelled file."""
    base = PurePosixPath(name.replace("\\", "/")).name
    if by_name in ("h5ad", "h5"):
        if by_content != "hdf5":
            text = _looks_like_text(path)
            if text:
                raise ValueError(
                    f"'{base}' is not an HDF5 file: it holds {text}. Rename it .csv/.tsv if it is a count table; "
                    "if it should be an .h5ad/.h5 it is truncated or corrupt: re-export it"
                )
            raise corrupt(f"'{base}' is not an HDF5 file", ValueError("missing HDF5 signature"))
        kind = sniff_hdf5(path, base)
        if by_name == "h5ad" and kind == "10x_h5":
            note(f"'{base}' is named .h5ad but holds a 10x Genomics HDF5 matrix: read as 10x .h5")
        elif by_name == "h5" and kind == "h5ad":
            note(f"'{base}' is named .h5 but holds an AnnData: read as .h5ad")
        return kind
    if by_name == "zip":
        if by_content != "zip":
            raise corrupt(f"'{base}' is not a zip archive", ValueError("missing zip signature"))
        return "zip"
    if by_name == "tar":
        if by_content not in ("gzip", "tar") and not is_tar(path):
            raise corrupt(f"'{base}' is not a tar archive", ValueError("missing tar/gzip signature"))
        return "tar"
    if by_name == "table":
        if name.lower().endswith(".gz") and by_content != "gzip":
            raise corrupt(f"'{base}' is not gzip-compressed", ValueError("missing gzip signature"))
        if by_content in ("hdf5", "zip", "tar"):
            raise ValueError(
                f"'{base}' has a table extension but binary ({by_content}) content: "
                "rename it with its real extension (.h5ad, .h5, .zip, .tar.gz) or re-export the table"
            )
        return "table"
    if base.lower().endswith((".mtx", ".mtx.gz")):
        raise ValueError(
            f"'{base}' is a Matrix Market file on its own: it has no gene or cell names. Upload the whole 10x folder "
            "(matrix.mtx, features.tsv or genes.tsv, barcodes.tsv) as a .zip or .tar.gz, or the 10x .h5 file")
    if PurePosixPath(base).suffix and not re.fullmatch(r"upload\.(gz|csv|h5|zip|tar)", base):
        raise unknown_format(base)  # an extension we do not support (.xlsx, .loom, …)
    if by_content == "hdf5":
        return sniff_hdf5(path, base)
    if by_content == "zip":
        return "zip"
    if by_content == "tar" or (by_content == "gzip" and is_tar(path)):
        return "tar"
    if by_content == "gzip" or base.endswith(".csv"):
        return "table"
    raise unknown_format(base)


def is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except (OSError, EOFError, tarfile.TarError, zlib.error):
        return False


def sniff_hdf5(path: Path, name: str) -> str:
    """Tell an h5ad from a 10x h5 by their top-level layout; name any other HDF5 kind."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            keys = set(f.keys())
            if "matrix" in keys and isinstance(f["matrix"], h5py.Group):
                return "10x_h5"
            if "obs" in keys and ("X" in keys or "var" in keys):
                return "h5ad"
            for key in keys:  # CellRanger v2: one group per genome with barcodes/genes
                obj = f[key]
                if isinstance(obj, h5py.Group) and "barcodes" in obj and "indptr" in obj:
                    return "10x_h5"
    except Exception as exc:  # noqa: BLE001 - any parser failure means an unreadable upload
        if isinstance(exc, MemoryError):
            raise
        raise corrupt(f"HDF5 file '{name}' could not be opened", exc) from exc
    shown = ", ".join(sorted(keys)[:8]) or "none"
    kind = " (it looks like a .loom file: convert it with scanpy.read_loom and save as .h5ad)" \
        if {"matrix", "row_attrs", "col_attrs"} <= keys else ""
    raise ValueError(
        f"'{name}' is an HDF5 file but neither an AnnData (.h5ad) nor a 10x Genomics (.h5) matrix{kind}; "
        f"its top-level entries are: {shown}. {SUPPORTED_FORMATS_HINT}"
    )
