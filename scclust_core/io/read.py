"""``read``: one entry point for every supported input, from a path or from uploaded bytes.

Everything a reader decides on the user's behalf is kept as a :class:`~.report.ReadReport` in
``adata.uns['scclust_read']``; every failure is a ``ValueError`` whose message says what to do, including
memory and disk failures (:func:`~.errors.resource_errors`), files that declare more than the memory
budget allows, and compressed input that inflates past the compression-ratio or temp-disk caps (:mod:`.budget`).
"""
from __future__ import annotations

import gzip
import logging
import re
import tempfile
import warnings
import zlib
from pathlib import Path, PurePosixPath
from typing import IO, Any, Union

import anndata as ad

from . import archives, detect, h5, h5safety, tables, tenx
from .budget import budget_scope, copy_capped, current_budget
from .errors import corrupt, resource_errors
from .report import UNS_KEY, ReadReport, report_scope
from .validate import finalize

logger = logging.getLogger(__name__)

Source = Union[str, Path, bytes, bytearray, memoryview, IO[bytes]]


def read(
    source: Source,
    *,
    filename: str | None = None,
    transpose: bool | None = None,
    sep: str | None = None,
    max_bytes: int | None = None,
    header: bool | None = None,
) -> ad.AnnData:
    """Load a count matrix from a path or uploaded bytes into a validated cells × genes AnnData.

    Parameters
    ----------
    source
        A file or directory path, raw ``bytes``, or a binary file-like object (e.g. Streamlit's
        ``UploadedFile``/``BytesIO``; its ``.name`` is used when ``filename`` is not given).
    filename
        Name used to infer the format for in-memory input (only the extension matters).
    transpose
        Tables only: ``True`` if rows are genes, ``False`` if rows are cells, ``None`` to decide from the
        content; when the content does not tell, :class:`OrientationUnclearError` (a ``ValueError``) asks.
    sep
        Tables only: column separator; auto-detected (tab, comma, semicolon, whitespace) when ``None``.
    max_bytes
        Memory budget for this read; default ``SCCLUST_MAX_BYTES`` or half the available memory.
    header
        Tables only: ``True`` if the first line names the columns even when it holds numbers (e.g. Entrez
        gene ids), ``False`` if there is no header row (columns are named ``col1``, ``col2``, …), ``None`` to
        take the first line as the header and refuse numbers there (they usually mean a missing header).

    Returns
    -------
    The AnnData, with how it was read in ``uns['scclust_read']`` (see :func:`read_report`).

    Raises
    ------
    ValueError
        For empty, unknown, corrupt, oversized or invalid input; the message says what to do.
    """
    if transpose is not None and not isinstance(transpose, bool):
        raise ValueError(f"transpose must be True, False or None, got {transpose!r}")
    if header is not None and not isinstance(header, bool):
        raise ValueError(f"header must be True (first line names the columns), False (no header row) or None "
                         f"(detect), got {header!r}")
    opts = {"transpose": transpose, "sep": sep, "header": header}
    with budget_scope(max_bytes), report_scope() as notes:
        adata, fmt, label = _read_source(source, filename, opts)
        adata.uns[UNS_KEY] = ReadReport(source=label, format=fmt, notes=list(notes)).to_uns()
    return adata


def _read_source(source: Source, filename: str | None, opts: dict[str, Any]) -> tuple[ad.AnnData, str, str]:
    """``opts``: the table options (transpose, sep, header) passed through to :func:`tables.read_table`."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            logger.info("Reading 10x matrix folder %s", path)
            with warnings.catch_warnings(), resource_errors(path.name, None):
                warnings.filterwarnings("ignore", message=r".* names are not unique", category=UserWarning)
                return finalize(tenx.read_mtx_dir(path), origin="10x mtx"), "10x matrix folder", path.name
        if not path.exists():
            raise ValueError(f"File '{path}' does not exist: check the path")
        name = filename or path.name
        return _read_path(path, name, opts)
    data, name = _bytes_and_name(source, filename)
    if not data:
        raise ValueError(f"The file '{name or 'upload'}' is empty (0 bytes): upload a file with data")
    if name is None:
        name = "upload" + detect.guess_suffix_from_bytes(data[:512])
    with tempfile.TemporaryDirectory(prefix="scclust_upload_") as tmp:
        path = Path(tmp) / safe_basename(name)
        with resource_errors(name, len(data)):
            path.write_bytes(data)
        return _read_path(path, name, opts)


def safe_basename(name: str) -> str:
    """A short ASCII file name for the temp copy of an upload: it cannot escape the temp dir, and a long
    non-ASCII name (limits are in bytes, not characters) cannot make the OS refuse it. Keeps the suffixes."""
    base = PurePosixPath(name.replace("\\", "/")).name
    suffixes = [s for s in PurePosixPath(base).suffixes[-2:] if re.fullmatch(r"\.[A-Za-z0-9]{1,8}", s)]
    return "upload" + "".join(suffixes)


def _bytes_and_name(source: Any, filename: str | None) -> tuple[bytes, str | None]:
    """Pull the bytes out of an in-memory upload without assuming its exact type."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), filename
    if hasattr(source, "read"):
        name = filename or getattr(source, "name", None)
        if hasattr(source, "seek"):
            try:
                source.seek(0)
            except (OSError, ValueError):
                pass
        data = source.read()
        if isinstance(data, str):
            data = data.encode("utf-8")
        return bytes(data), (str(name) if name is not None else None)
    raise ValueError(
        f"Cannot read data of type {type(source).__name__}: pass a file path, bytes, or a binary file object"
    )


def _read_path(path: Path, name: str, opts: dict[str, Any]) -> tuple[ad.AnnData, str, str]:
    """Dispatch a single file to its reader once extension and content agree."""
    label = PurePosixPath(name.replace("\\", "/")).name
    size = path.stat().st_size
    with warnings.catch_warnings(), resource_errors(label, size):
        # anndata warns about duplicate names on construction; ensure_unique_names says it better
        warnings.filterwarnings("ignore", message=r".* names are not unique", category=UserWarning)
        adata, fmt = _dispatch(path, name, opts)
    return adata, fmt, label


def _dispatch(path: Path, name: str, opts: dict[str, Any]) -> tuple[ad.AnnData, str]:
    if path.stat().st_size == 0:
        raise ValueError(f"The file '{name}' is empty (0 bytes): upload a file with data")
    by_content = detect.content_kind(path)
    if by_content == "hdf5":  # before anything opens it the usual way, which would follow its links
        h5safety.check_self_contained(path, name)
    kind = detect.resolve_kind(path, name, detect.name_kind(name), by_content)
    logger.info("Reading '%s' as %s", name, kind)
    if kind == "h5ad":
        return finalize(h5.read_h5ad(path, _base(name)), origin="h5ad"), "AnnData .h5ad"
    if kind == "10x_h5":
        return finalize(h5.read_10x_h5(path, _base(name)), origin="10x h5"), "10x Genomics HDF5"
    if kind in ("zip", "tar"):
        return finalize(_read_archive(path, kind, _base(name)), origin="10x mtx"), \
            f"10x matrix folder ({kind} archive)"
    if by_content == "gzip":
        with tempfile.TemporaryDirectory(prefix="scclust_gz_") as tmp:
            plain = Path(tmp) / "table.txt"
            _gunzip(path, plain, name)
            return finalize(tables.read_table(plain, name, **opts), origin="table"), \
                "gzipped text table"
    return finalize(tables.read_table(path, name, **opts), origin="table"), "text table"


def _gunzip(src: Path, dst: Path, name: str) -> None:
    """Inflate a gzip'd table into ``dst`` under the memory, temp-disk and compression-ratio caps."""
    try:
        with open(src, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as fin, open(dst, "wb") as fout:
            copy_capped(fin, fout, current_budget(), f"'{name}'", consumed=raw.tell)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise corrupt("table could not be decompressed", exc) from exc


def _base(name: str) -> str:
    return PurePosixPath(name.replace("\\", "/")).name


def _read_archive(path: Path, kind: str, label: str) -> ad.AnnData:
    """Unpack a zip/tar safely into a temp dir and read the 10x folder inside."""
    with tempfile.TemporaryDirectory(prefix="scclust_archive_") as tmp:
        dest = Path(tmp)
        if kind == "zip":
            archives.extract_zip(path, dest, label)
        else:
            archives.extract_tar(path, dest, label)
        folder = archives.find_mtx_folder(dest, label)
        rel = folder.relative_to(dest).as_posix()
        return tenx.read_mtx_dir(folder, label=f"Archive '{label}'" + (f" (folder '{rel}')" if rel != "." else ""))
