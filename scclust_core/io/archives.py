"""Zip/tar archives of a 10x matrix folder, unpacked safely.

Only the files a 10x folder needs (``matrix.mtx``, ``features.tsv``/``genes.tsv``, ``barcodes.tsv``, each
optionally ``.gz``) are written out; every member name is checked for path traversal; links are skipped;
the number of members and the bytes they unpack to are capped before and while extracting: by the memory
budget, by the read's temp-disk allowance, and by :data:`~.budget.MAX_COMPRESSION_RATIO` (per member from
the compressed bytes it really consumed, and for the whole archive from its size on disk).
"""
from __future__ import annotations

import logging
import re
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO, Callable

from .budget import check_ratio, copy_capped, current_budget
from .errors import SUPPORTED_FORMATS_HINT, corrupt, fmt_bytes

logger = logging.getLogger(__name__)

#: Refuse archives with more members than this (a 10x folder has three files).
MAX_ARCHIVE_MEMBERS = 10_000
#: Refuse archives whose members (all of them, as declared) unpack to more than this many bytes.
MAX_ARCHIVE_BYTES = 32 * 1024**3
_WANTED = re.compile(r"^(matrix\.mtx|features\.tsv|genes\.tsv|barcodes\.tsv)(\.gz)?$", re.IGNORECASE)


def _cap() -> int:
    """Bytes the wanted members may unpack to: the smaller of the fixed cap and the memory budget."""
    return int(min(MAX_ARCHIVE_BYTES, current_budget()))


def check_member_name(name: str, archive: str) -> PurePosixPath | None:
    """Return a safe relative path for an archive member, or raise on path traversal."""
    norm = name.replace("\\", "/")
    rel = PurePosixPath(norm)
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm) or ".." in rel.parts:
        raise ValueError(
            f"Archive '{archive}' contains an unsafe path '{name}' (absolute or with '..'): "
            "re-create the archive from the 10x folder with relative paths"
        )
    parts = [p for p in rel.parts if p not in ("", ".")]
    if not parts or parts[0] == "__MACOSX":
        return None
    return PurePosixPath(*parts)


def _copy_member(src: IO[bytes], dest_root: Path, rel: PurePosixPath, cap: int, what: str,
                 consumed: Callable[[], int]) -> int:
    target = dest_root.joinpath(*rel.parts)
    if not target.resolve().is_relative_to(dest_root.resolve()):  # belt and braces
        raise ValueError(f"Archive member '{rel}' escapes the extraction folder: re-create the archive")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        return copy_capped(src, out, cap, what, consumed=consumed)


def _check_counts(n_members: int, declared: int, name: str) -> None:
    if n_members > MAX_ARCHIVE_MEMBERS:
        raise ValueError(
            f"Archive '{name}' has more than {MAX_ARCHIVE_MEMBERS:,} members; a 10x matrix folder has three "
            "files: zip only the folder with matrix.mtx, features.tsv and barcodes.tsv"
        )
    if declared > MAX_ARCHIVE_BYTES:
        raise ValueError(
            f"Archive '{name}' would unpack to {fmt_bytes(declared)}, more than the {fmt_bytes(MAX_ARCHIVE_BYTES)} "
            "limit: upload the 10x .h5 file or a smaller archive"
        )


def extract_zip(path: Path, dest: Path, label: str | None = None) -> None:
    """Extract the 10x files of archive ``path`` into ``dest``; ``label`` is the user's file name for messages."""
    name = label or path.name
    try:
        with open(path, "rb") as raw, zipfile.ZipFile(raw) as zf:
            infos = zf.infolist()
            _check_counts(len(infos), sum(i.file_size for i in infos), name)
            cap, size = _cap(), path.stat().st_size
            written = 0
            for info in infos:
                rel = check_member_name(info.filename, name)
                mode = info.external_attr >> 16
                if rel is None or info.is_dir() or stat.S_ISLNK(mode) or not _WANTED.match(rel.name):
                    if stat.S_ISLNK(mode):
                        logger.warning("Skipping symlink '%s' in archive", info.filename)
                    continue
                check_ratio(info.file_size, info.compress_size, f"Archive '{name}' (member '{rel}', as declared)")
                with zf.open(info) as src:  # raw.tell() advances with the member's compressed bytes read
                    written += _copy_member(src, dest, rel, cap - written, f"Archive '{name}' (member '{rel}')",
                                            raw.tell)
                check_ratio(written, size, f"Archive '{name}'")  # overlapping members can share compressed data
    except ValueError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, zlib.error, NotImplementedError,
            RuntimeError) as exc:
        raise corrupt(f"zip archive '{name}' could not be extracted", exc) from exc


def extract_tar(path: Path, dest: Path, label: str | None = None) -> None:
    """Extract the 10x files of archive ``path`` into ``dest``; ``label`` is the user's file name for messages."""
    name = label or path.name
    try:
        with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r:*") as tf:
            n, declared, left, size = 0, 0, _cap(), path.stat().st_size
            for member in tf:  # streamed: a tar bomb is stopped at the caps, not listed in full first
                n += 1
                declared += member.size if member.isfile() else 0
                _check_counts(n, declared, name)
                # reaching (or skipping) this member inflates the stream up to its end: bound that by the file
                check_ratio(member.offset_data + member.size, size, f"Archive '{name}' (up to member "
                            f"'{member.name}', as declared)")
                rel = check_member_name(member.name, name)
                if rel is None or not member.isfile() or not _WANTED.match(rel.name):
                    if member.issym() or member.islnk():
                        logger.warning("Skipping link '%s' in archive", member.name)
                    continue
                src = tf.extractfile(member)
                if src is None:
                    continue
                with src:
                    left -= _copy_member(src, dest, rel, left, f"Archive '{name}' (member '{rel}')", raw.tell)
    except ValueError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error, RuntimeError) as exc:
        raise corrupt(f"tar archive '{name}' could not be extracted", exc) from exc


def find_mtx_folder(root: Path, archive: str) -> Path:
    """Locate the (shallowest) folder holding ``matrix.mtx[.gz]`` inside an extracted archive."""
    hits = sorted(
        (p for p in root.rglob("*") if p.is_file() and p.name.lower() in ("matrix.mtx", "matrix.mtx.gz")),
        key=lambda p: (len(p.relative_to(root).parts), str(p)),
    )
    if not hits:
        raise ValueError(
            f"Archive '{archive}' holds no 10x matrix (matrix.mtx[.gz] with features/genes.tsv and "
            f"barcodes.tsv): zip the 10x output folder, or {SUPPORTED_FORMATS_HINT}"
        )
    depth = len(hits[0].relative_to(root).parts)
    same_depth = {p.parent for p in hits if len(p.relative_to(root).parts) == depth}
    if len(same_depth) > 1:
        raise ValueError(
            f"Archive '{archive}' holds {len(same_depth)} 10x matrices at the same level: "
            "upload one sample per archive"
        )
    return hits[0].parent
