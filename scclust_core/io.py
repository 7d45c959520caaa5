"""Read, validate, describe and write single-cell count data.

Uploads come from users, so every reader here validates what it gets and turns parser failures into a
``ValueError`` that says what is wrong *and* what to do about it; the UI can show the message verbatim.
Nothing is ever unpickled or executed: h5ad files are read with anndata (no pickled objects), archives are
unpacked member by member with path-traversal checks, tables are parsed as plain text.

Supported inputs (detected by extension and confirmed by sniffing the first bytes):

* ``.h5ad`` (AnnData),
* 10x Genomics HDF5 ``.h5`` (CellRanger v2/v3),
* a 10x matrix folder (``matrix.mtx[.gz]``, ``features.tsv[.gz]``/``genes.tsv[.gz]``,
  ``barcodes.tsv[.gz]``) given as a directory, a ``.zip`` or a ``.tar[.gz]``/``.tgz`` (nested folders ok),
* a CSV/TSV/TXT count table (optionally gzipped) with row names in the first column and a header row.

Whatever the input, the result has cells as observations and genes as variables, string names, and a
float32 ``X`` that is a CSR matrix when more than half of the entries are zero (dense otherwise).
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import logging
import re
import shutil
import stat
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, Mapping, Union

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

logger = logging.getLogger(__name__)

__all__ = [
    "read",
    "write",
    "describe",
    "DataSummary",
    "is_integer_counts",
    "sanitize_uns",
    "dataset_fingerprint",
    "SUPPORTED_FORMATS_HINT",
]

Source = Union[str, Path, bytes, bytearray, memoryview, IO[bytes]]

SUPPORTED_FORMATS_HINT = "upload .h5ad, 10x .h5, a zipped 10x matrix folder, or a CSV/TSV count table"

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # normal / empty archive
_TABLE_EXTS = (".csv", ".tsv", ".txt")
_TAR_EXTS = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz")

#: Refuse archives that declare more than this many uncompressed bytes (zip-bomb guard).
MAX_ARCHIVE_BYTES = 32 * 1024**3
#: ``is_integer_counts`` looks at no more than this many stored values (evenly strided sample).
INTEGER_CHECK_MAX_VALUES = 1_000_000

_ENSEMBL_RE = re.compile(r"^ENS[A-Z]*G\d{6,}", re.IGNORECASE)
_MITO_RE = re.compile(r"^MT-", re.IGNORECASE)
_BARCODE_RE = re.compile(r"[ACGT]{8,}")
_CELL_PREFIX_RE = re.compile(r"^(?:cell|barcode|bc|sample)[_\-.]?\d", re.IGNORECASE)
_QC_COLUMN_RE = re.compile(
    r"^(n_counts|n_genes|n_genes_by_counts|n_cells|n_cells_by_counts|total_counts.*|log1p_.*|pct_.*"
    r"|percent_.*|frac_.*|size_factors?|.*_score|mt_frac|mito_frac|mean_counts|nUMI|nGene"
    r"|nCount_.*|nFeature_.*)$",
    re.IGNORECASE,
)


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------


def _corrupt(what: str, exc: BaseException) -> ValueError:
    """Build the one message we use for every unreadable-file failure so the UI stays consistent."""
    detail = f"{type(exc).__name__}: {exc}".strip()
    if len(detail) > 300:
        detail = detail[:300] + "…"
    return ValueError(f"The file looks truncated or corrupt ({what}; {detail}): re-export or re-download it")


def _unknown_format(name: str) -> ValueError:
    return ValueError(f"Unknown file format '{name}': {SUPPORTED_FORMATS_HINT}")


# --------------------------------------------------------------------------------------------------
# read: entry point and format detection
# --------------------------------------------------------------------------------------------------


def read(
    source: Source,
    *,
    filename: str | None = None,
    transpose: bool | None = None,
    sep: str | None = None,
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
        Tables only: ``True`` if rows are genes, ``False`` if rows are cells, ``None`` to guess from
        the row/column names (see :func:`_decide_orientation`).
    sep
        Tables only: column separator; auto-detected (tab, comma, whitespace) when ``None``.

    Raises
    ------
    ValueError
        For empty, unknown, corrupt or invalid input; the message says what to do.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            logger.info("Reading 10x matrix folder %s", path)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r".* names are not unique", category=UserWarning)
                return _finalize(_read_mtx_dir(path), origin="10x mtx")
        if not path.exists():
            raise ValueError(f"File '{path}' does not exist: check the path")
        return _read_path(path, filename or path.name, transpose=transpose, sep=sep)

    data, name = _bytes_and_name(source, filename)
    if not data:
        raise ValueError(f"The file '{name or 'upload'}' is empty (0 bytes): upload a file with data")
    if name is None:
        name = "upload" + _guess_suffix_from_bytes(data[:512])
    with tempfile.TemporaryDirectory(prefix="scclust_upload_") as tmp:
        path = Path(tmp) / _safe_basename(name)
        path.write_bytes(data)
        return _read_path(path, name, transpose=transpose, sep=sep)


def _safe_basename(name: str) -> str:
    """A file name for the temp copy of an upload that cannot escape the temp dir."""
    base = PurePosixPath(name.replace("\\", "/")).name
    if base in ("", ".", "..") or len(base) > 200 or "\x00" in base:
        suffix = "".join(s for s in PurePosixPath(base).suffixes[-2:] if re.fullmatch(r"\.[A-Za-z0-9]{1,8}", s))
        return "upload" + suffix
    return base


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


def _guess_suffix_from_bytes(head: bytes) -> str:
    """Give nameless uploads an extension from their content so detection can proceed."""
    if head.startswith(_HDF5_MAGIC):
        return ".h5"
    if head.startswith(_ZIP_MAGICS):
        return ".zip"
    if head.startswith(_GZIP_MAGIC):
        return ".gz"
    if len(head) > 262 and head[257:262] == b"ustar":
        return ".tar"
    return ".csv"


def _name_kind(name: str) -> str | None:
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


def _content_kind(path: Path) -> str | None:
    """Format implied by the magic bytes (``None`` for plain text or unknown)."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith(_HDF5_MAGIC):
        return "hdf5"
    if head.startswith(_ZIP_MAGICS):
        return "zip"
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if len(head) > 262 and head[257:262] == b"ustar":
        return "tar"
    return None


def _read_path(path: Path, name: str, *, transpose: bool | None, sep: str | None) -> ad.AnnData:
    """Dispatch a single file to its reader once extension and content agree."""
    with warnings.catch_warnings():
        # anndata warns about duplicate names on construction; _ensure_unique_names says it better
        warnings.filterwarnings("ignore", message=r".* names are not unique", category=UserWarning)
        return _dispatch(path, name, transpose=transpose, sep=sep)


def _dispatch(path: Path, name: str, *, transpose: bool | None, sep: str | None) -> ad.AnnData:
    if path.stat().st_size == 0:
        raise ValueError(f"The file '{name}' is empty (0 bytes): upload a file with data")
    by_name = _name_kind(name)
    by_content = _content_kind(path)
    kind = _resolve_kind(path, name, by_name, by_content)
    logger.info("Reading '%s' as %s", name, kind)
    if kind == "h5ad":
        return _finalize(_read_h5ad(path), origin="h5ad")
    if kind == "10x_h5":
        return _finalize(_read_10x_h5(path), origin="10x h5")
    if kind in ("zip", "tar"):
        return _finalize(_read_archive(path, kind), origin="10x mtx")
    if kind == "table":
        gz = by_content == "gzip"
        return _finalize(_read_table(path, name, transpose=transpose, sep=sep, gz=gz), origin="table")
    raise _unknown_format(name)  # pragma: no cover - _resolve_kind already raised


def _resolve_kind(path: Path, name: str, by_name: str | None, by_content: str | None) -> str:
    """Combine extension and magic bytes; a mismatch means a damaged or mislabelled file."""
    if by_name in ("h5ad", "h5"):
        if by_content != "hdf5":
            raise _corrupt(f"'{name}' is not an HDF5 file", ValueError("missing HDF5 signature"))
        return "h5ad" if by_name == "h5ad" else _sniff_hdf5(path, name, default="10x_h5")
    if by_name == "zip":
        if by_content != "zip":
            raise _corrupt(f"'{name}' is not a zip archive", ValueError("missing zip signature"))
        return "zip"
    if by_name == "tar":
        if by_content not in ("gzip", "tar") and not _is_tar(path):
            raise _corrupt(f"'{name}' is not a tar archive", ValueError("missing tar/gzip signature"))
        return "tar"
    if by_name == "table":
        if name.lower().endswith(".gz") and by_content != "gzip":
            raise _corrupt(f"'{name}' is not gzip-compressed", ValueError("missing gzip signature"))
        if by_content in ("hdf5", "zip", "tar"):
            raise ValueError(
                f"'{name}' has a table extension but binary ({by_content}) content: "
                "rename it with its real extension (.h5ad, .h5, .zip, .tar.gz) or re-export the table"
            )
        return "table"
    if PurePosixPath(name.replace("\\", "/")).suffix:  # an extension we do not support (.xlsx, .loom, …)
        raise _unknown_format(PurePosixPath(name.replace("\\", "/")).name)
    # No extension at all: trust the content when it is unambiguous.
    if by_content == "hdf5":
        return _sniff_hdf5(path, name, default=None)
    if by_content == "zip":
        return "zip"
    if by_content == "tar" or (by_content == "gzip" and _is_tar(path)):
        return "tar"
    raise _unknown_format(PurePosixPath(name.replace("\\", "/")).name)


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except (OSError, EOFError, tarfile.TarError, zlib.error):
        return False


def _sniff_hdf5(path: Path, name: str, default: str | None) -> str:
    """Tell an h5ad from a 10x h5 by their top-level layout."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            keys = set(f.keys())
            if "matrix" in keys:
                return "10x_h5"
            if {"X", "obs", "var"} & keys and "obs" in keys:
                return "h5ad"
            for key in keys:  # CellRanger v2: one group per genome with barcodes/genes
                obj = f[key]
                if isinstance(obj, h5py.Group) and "barcodes" in obj and "indptr" in obj:
                    return "10x_h5"
    except Exception as exc:  # noqa: BLE001 - any parser failure means an unreadable upload
        if isinstance(exc, MemoryError):
            raise
        raise _corrupt(f"HDF5 file '{name}' could not be opened", exc) from exc
    if default is not None:
        return default
    raise ValueError(
        f"'{name}' is an HDF5 file but neither an AnnData (.h5ad) nor a 10x Genomics (.h5) matrix: "
        f"{SUPPORTED_FORMATS_HINT}"
    )


# --------------------------------------------------------------------------------------------------
# readers
# --------------------------------------------------------------------------------------------------


def _read_h5ad(path: Path) -> ad.AnnData:
    try:
        adata = ad.read_h5ad(path)
    except Exception as exc:  # noqa: BLE001 - any parser failure means an unreadable upload
        if isinstance(exc, MemoryError):
            raise
        raise _corrupt("h5ad could not be read", exc) from exc
    if adata.X is None:
        if "counts" in adata.layers:
            logger.info("h5ad has no X; using layers['counts'] as X")
            adata.X = adata.layers["counts"].copy()
        else:
            raise ValueError(
                "The .h5ad file has no expression matrix (.X is empty and there is no layers['counts']): "
                "save the AnnData with its count matrix in .X"
            )
    return adata


def _read_10x_h5(path: Path) -> ad.AnnData:
    import scanpy as sc

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not unique.*")
            adata = sc.read_10x_h5(path)
    except Exception as exc:  # noqa: BLE001 - any parser failure means an unreadable upload
        if isinstance(exc, MemoryError):
            raise
        raise _corrupt("10x HDF5 could not be read", exc) from exc
    return adata


def _read_archive(path: Path, kind: str) -> ad.AnnData:
    """Unpack a zip/tar safely into a temp dir and read the 10x folder inside."""
    with tempfile.TemporaryDirectory(prefix="scclust_archive_") as tmp:
        dest = Path(tmp)
        if kind == "zip":
            _extract_zip(path, dest)
        else:
            _extract_tar(path, dest)
        folder = _find_mtx_folder(dest, path.name)
        return _read_mtx_dir(folder)


def _check_member_name(name: str, archive: str) -> PurePosixPath | None:
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


def _copy_member(src: IO[bytes], dest_root: Path, rel: PurePosixPath) -> None:
    target = dest_root.joinpath(*rel.parts)
    if not target.resolve().is_relative_to(dest_root.resolve()):  # belt and braces
        raise ValueError(f"Archive member '{rel}' escapes the extraction folder: re-create the archive")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        shutil.copyfileobj(src, out, length=1 << 20)


def _extract_zip(path: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            _check_archive_size(sum(i.file_size for i in infos), path.name)
            for info in infos:
                rel = _check_member_name(info.filename, path.name)
                mode = info.external_attr >> 16
                if rel is None or info.is_dir() or stat.S_ISLNK(mode):
                    if stat.S_ISLNK(mode):
                        logger.warning("Skipping symlink '%s' in archive", info.filename)
                    continue
                with zf.open(info) as src:
                    _copy_member(src, dest, rel)
    except ValueError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, zlib.error, NotImplementedError) as exc:
        raise _corrupt(f"zip archive '{path.name}' could not be extracted", exc) from exc


def _extract_tar(path: Path, dest: Path) -> None:
    try:
        with tarfile.open(path, mode="r:*") as tf:
            members = tf.getmembers()
            _check_archive_size(sum(m.size for m in members if m.isfile()), path.name)
            for member in members:
                rel = _check_member_name(member.name, path.name)
                if rel is None or not member.isfile():
                    if member.issym() or member.islnk():
                        logger.warning("Skipping link '%s' in archive", member.name)
                    continue
                src = tf.extractfile(member)
                if src is None:
                    continue
                with src:
                    _copy_member(src, dest, rel)
    except ValueError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise _corrupt(f"tar archive '{path.name}' could not be extracted", exc) from exc


def _check_archive_size(total: int, name: str) -> None:
    if total > MAX_ARCHIVE_BYTES:
        raise ValueError(
            f"Archive '{name}' would unpack to {total / 1024**3:.1f} GiB, more than the "
            f"{MAX_ARCHIVE_BYTES / 1024**3:.0f} GiB limit: upload the 10x .h5 file or a smaller archive"
        )


def _find_mtx_folder(root: Path, archive: str) -> Path:
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


def _find_one(folder: Path, stems: tuple[str, ...]) -> Path | None:
    for stem in stems:
        for cand in (folder / stem, folder / f"{stem}.gz"):
            if cand.is_file():
                return cand
    lowered = {p.name.lower(): p for p in folder.iterdir() if p.is_file()}
    for stem in stems:
        for key in (stem, f"{stem}.gz"):
            if key in lowered:
                return lowered[key]
    return None


def _open_maybe_gz(path: Path) -> IO[bytes]:
    with open(path, "rb") as fh:
        magic = fh.read(2)
    return gzip.open(path, "rb") if magic == _GZIP_MAGIC else open(path, "rb")


def _read_tsv_column_frame(path: Path, what: str) -> pd.DataFrame:
    try:
        with _open_maybe_gz(path) as fh:
            frame = pd.read_csv(fh, sep="\t", header=None, dtype=str, quoting=csv.QUOTE_NONE, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ValueError(f"The {what} file '{path.name}' is empty: re-export the 10x folder") from None
    except Exception as exc:  # noqa: BLE001 - any parser failure means an unreadable upload
        if isinstance(exc, MemoryError):
            raise
        raise _corrupt(f"{what} file '{path.name}' could not be parsed", exc) from exc
    return frame


def _read_mtx_dir(folder: Path) -> ad.AnnData:
    """Read a 10x ``matrix.mtx`` folder (genes × cells on disk) into cells × genes."""
    import scipy.io

    matrix = _find_one(folder, ("matrix.mtx",))
    features = _find_one(folder, ("features.tsv", "genes.tsv"))
    barcodes = _find_one(folder, ("barcodes.tsv",))
    missing = [n for n, p in (("matrix.mtx", matrix), ("features.tsv/genes.tsv", features),
                              ("barcodes.tsv", barcodes)) if p is None]
    if missing:
        raise ValueError(
            f"10x folder '{folder.name}' is missing {', '.join(missing)} (optionally .gz): "
            "include all three files of the CellRanger output folder"
        )
    try:
        with _open_maybe_gz(matrix) as fh:
            mat = scipy.io.mmread(fh)
    except Exception as exc:  # noqa: BLE001 - any parser failure means an unreadable upload
        if isinstance(exc, MemoryError):
            raise
        raise _corrupt(f"Matrix Market file '{matrix.name}' could not be parsed", exc) from exc
    mat = sp.csr_matrix(mat) if sp.issparse(mat) else np.asarray(mat)

    feat = _read_tsv_column_frame(features, "features")
    bc = _read_tsv_column_frame(barcodes, "barcodes")
    n_feat, n_bc = len(feat), len(bc)
    if mat.shape == (n_feat, n_bc):
        mat = mat.T
    elif mat.shape != (n_bc, n_feat):
        raise ValueError(
            f"10x folder '{folder.name}': matrix is {mat.shape[0]}×{mat.shape[1]} but there are {n_feat} "
            f"features and {n_bc} barcodes: the files come from different runs, re-export the folder"
        )
    ids = feat.iloc[:, 0].astype(str).to_numpy()
    symbols = feat.iloc[:, 1].astype(str).to_numpy() if feat.shape[1] > 1 else ids
    var = pd.DataFrame({"gene_ids": ids}, index=pd.Index(symbols, dtype=str))
    if feat.shape[1] > 2:
        var["feature_types"] = feat.iloc[:, 2].astype(str).to_numpy()
    obs = pd.DataFrame(index=pd.Index(bc.iloc[:, 0].astype(str).to_numpy(), dtype=str))
    X = sp.csr_matrix(mat) if sp.issparse(mat) else np.asarray(mat)
    return ad.AnnData(X=X, obs=obs, var=var)


def _sniff_sep(path: Path, name: str, gz: bool) -> str:
    """Pick tab, comma or whitespace from the header line: whichever the line actually uses."""
    opener = gzip.open if gz else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
            line = ""
            for line in fh:
                if line.strip():
                    break
    except (OSError, EOFError, zlib.error) as exc:
        raise _corrupt("table could not be decompressed", exc) from exc
    if "\t" in line:
        return "\t"
    if "," in line:
        return ","
    if ";" in line:
        return ";"
    low = name.lower().removesuffix(".gz")
    if low.endswith(".csv"):
        return ","
    if low.endswith(".tsv"):
        return "\t"
    return r"\s+"


def _read_table(path: Path, name: str, *, transpose: bool | None, sep: str | None, gz: bool) -> ad.AnnData:
    """Parse a delimited count table, check it is numeric, and orient it as cells × genes."""
    sep = sep or _sniff_sep(path, name, gz)
    logger.info("Table separator: %r", sep)
    try:
        frame = pd.read_csv(
            path,
            sep=sep,
            index_col=0,
            header=0,
            compression="gzip" if gz else None,
            engine="python" if sep == r"\s+" else "c",
        )
    except pd.errors.EmptyDataError:
        raise ValueError(f"The table '{name}' has no content: upload a table with a header row and counts") from None
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"The table '{name}' is not UTF-8 text: save it as UTF-8 CSV/TSV, or {SUPPORTED_FORMATS_HINT}"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - any parser failure means an unreadable upload
        if isinstance(exc, MemoryError):
            raise
        raise _corrupt(f"table '{name}' could not be parsed", exc) from exc
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(
            f"The table '{name}' has {frame.shape[0]} data rows and {frame.shape[1]} value columns: "
            "it needs row names in the first column, a header row, and at least one row and column of counts"
        )
    cols = _header_names(path, sep, gz, frame.shape[1], frame.columns)
    values = _numeric_values(frame, name, cols)
    rows = frame.index.astype(str)
    rows_are_genes, reason = _decide_orientation(rows, cols, transpose)
    logger.info(
        "Table '%s' (%d×%d): rows are %s (%s)", name, frame.shape[0], frame.shape[1],
        "genes, transposing to cells × genes" if rows_are_genes else "cells", reason,
    )
    if rows_are_genes:
        values, rows, cols = values.T, cols, rows
    return ad.AnnData(
        X=np.ascontiguousarray(values),
        obs=pd.DataFrame(index=pd.Index(rows, dtype=str)),
        var=pd.DataFrame(index=pd.Index(cols, dtype=str)),
    )


def _numeric_values(frame: pd.DataFrame, name: str, columns: pd.Index) -> np.ndarray:
    """Convert the table to float32, naming the first non-numeric cell if there is one."""
    suspect = [
        pos for pos, dtype in enumerate(frame.dtypes)
        if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype)
    ]
    for pos in suspect:  # usually none: numeric columns need no per-column work
        series = frame.iloc[:, pos]
        if pd.api.types.is_bool_dtype(series):
            bad = series.notna()
        else:
            coerced = pd.to_numeric(series, errors="coerce")
            bad = coerced.isna() & series.notna()
        if bad.any():
            row = bad.to_numpy().nonzero()[0][0]
            raise ValueError(
                f"The table '{name}' has a non-numeric value {series.iloc[row]!r} at row "
                f"'{frame.index[row]}', column '{columns[pos]}': the table must hold only counts apart from "
                "the first column (row names) and the header row"
            )
        frame.isetitem(pos, coerced)
    return frame.to_numpy(dtype=np.float32)


def _header_names(path: Path, sep: str, gz: bool, n_values: int, parsed: pd.Index) -> pd.Index:
    """Column names exactly as written (pandas renames duplicates to ``X.1``; we de-duplicate later)."""
    try:
        head = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str, keep_default_na=False,
                           compression="gzip" if gz else None, engine="python" if sep == r"\s+" else "c")
    except Exception:  # noqa: BLE001 - the main parse succeeded; fall back to its names
        return parsed.astype(str)
    names = head.iloc[0].tolist()
    if len(names) == n_values + 1:
        return pd.Index([str(v) for v in names[1:]], dtype=str)
    return parsed.astype(str)


def _name_scores(names: pd.Index) -> tuple[float, float]:
    """Fraction of names that look like cells, and a score for looking like genes."""
    s = pd.Series(np.asarray(names, dtype=str))
    if len(s) > 5000:
        s = s.iloc[np.linspace(0, len(s) - 1, 5000).astype(int)]
    cell = float((s.str.contains(_BARCODE_RE) | s.str.contains(_CELL_PREFIX_RE)).mean())
    ens = float(s.str.contains(_ENSEMBL_RE).mean())
    has_mito = bool(s.str.contains(_MITO_RE).any())
    gene = min(1.0, ens + (0.5 if has_mito else 0.0))
    return cell, gene


def _decide_orientation(rows: pd.Index, cols: pd.Index, transpose: bool | None) -> tuple[bool, str]:
    """Return (rows_are_genes, reason).

    Heuristic, in order: an explicit ``transpose`` wins; then name patterns -- barcode-like names
    (``[ACGT]{8,}``, ``cell…``/``barcode…``) mark cells, Ensembl ids (``ENS…G000…``) and mitochondrial
    genes (``MT-…``) mark genes; if the names are inconclusive (score margin < 0.25), the larger dimension
    is taken to be genes, which holds for most full-transcriptome tables.
    """
    if transpose is not None:
        return bool(transpose), "transpose given explicitly"
    row_cell, row_gene = _name_scores(rows)
    col_cell, col_gene = _name_scores(cols)
    margin = (col_cell - row_cell) + (row_gene - col_gene)
    if margin >= 0.25:
        return True, f"row names look like genes / column names like cells (score {margin:+.2f})"
    if margin <= -0.25:
        return False, f"row names look like cells / column names like genes (score {margin:+.2f})"
    if len(rows) != len(cols):
        genes_in_rows = len(rows) > len(cols)
        return genes_in_rows, "names inconclusive; assuming the larger dimension is genes"
    return False, "names inconclusive and table square; assuming rows are cells (pass transpose= to override)"


# --------------------------------------------------------------------------------------------------
# validation / normalisation of the result
# --------------------------------------------------------------------------------------------------


def _finalize(adata: ad.AnnData, *, origin: str) -> ad.AnnData:
    """Apply the invariants every reader promises: shape, finite non-negative values, names, X type."""
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(
            f"The data has {adata.n_obs} cells and {adata.n_vars} genes: upload a matrix with at least one "
            "cell and one gene"
        )
    X = adata.X
    if not (sp.issparse(X) or isinstance(X, np.ndarray)):
        X = np.asarray(X)
    values = X.data if sp.issparse(X) else X
    if values.dtype.kind not in "biuf":
        raise ValueError(
            f"The expression matrix has dtype {values.dtype}, not numbers: store counts as integers or floats"
        )
    _check_finite(values)
    counts_elsewhere = origin == "h5ad" and _counts_elsewhere(adata)
    if values.size and values.min() < 0 and not counts_elsewhere:
        raise ValueError(_negative_message(X))
    adata.X = _as_output_matrix(X)
    _ensure_unique_names(adata)
    logger.info("Loaded %s: %d cells × %d genes (%s X)", origin, adata.n_obs, adata.n_vars,
                "sparse" if sp.issparse(adata.X) else "dense")
    return adata


def _counts_elsewhere(adata: ad.AnnData) -> bool:
    if "counts" in adata.layers and is_integer_counts(adata.layers["counts"]):
        return True
    return adata.raw is not None and is_integer_counts(adata.raw.X)


def _check_finite(values: np.ndarray) -> None:
    if values.dtype.kind != "f":
        return
    finite = np.isfinite(values)
    if finite.all():
        return
    n_nan = int(np.isnan(values).sum())
    n_inf = int((~finite).sum()) - n_nan
    raise ValueError(
        f"The matrix contains {n_nan} NaN (missing) and {n_inf} infinite values: counts must be finite "
        "numbers; fill missing entries with 0 or remove those rows/columns before uploading"
    )


def _negative_message(X: Any) -> str:
    if sp.issparse(X):
        coo = X.tocoo()
        k = int(np.argmin(coo.data))
        where, value = (int(coo.row[k]), int(coo.col[k])), coo.data[k]
    else:
        k = int(np.argmin(X))
        where, value = np.unravel_index(k, X.shape), X.flat[k]
    n_neg = int(((X.data if sp.issparse(X) else X) < 0).sum())
    return (
        f"The matrix contains {n_neg} negative values (e.g. {float(value):g} at cell {int(where[0])}, gene "
        f"{int(where[1])}): counts cannot be negative; upload raw counts, not scaled/centred data"
    )


def _as_output_matrix(X: Any) -> sp.csr_matrix | np.ndarray:
    """float32 CSR when more than half the entries are zero, dense float32 otherwise."""
    n_total = X.shape[0] * X.shape[1]
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float32)
        X.eliminate_zeros()
        if X.nnz > 0.5 * n_total:
            return np.asarray(X.toarray(), dtype=np.float32)
        X.sort_indices()
        return X
    X = np.asarray(X, dtype=np.float32)
    if np.count_nonzero(X) < 0.5 * n_total:
        return sp.csr_matrix(X)
    return np.ascontiguousarray(X)


def _ensure_unique_names(adata: ad.AnnData) -> None:
    """Cast names to str and de-duplicate them, warning how many were renamed."""
    adata.obs_names = pd.Index(np.asarray(adata.obs_names, dtype=str), dtype=str)
    adata.var_names = pd.Index(np.asarray(adata.var_names, dtype=str), dtype=str)
    n_dup_var = int(adata.var_names.duplicated().sum())
    if n_dup_var:
        warnings.warn(
            f"{n_dup_var} duplicated gene names were made unique by appending '-1', '-2', …",
            UserWarning,
            stacklevel=2,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adata.var_names_make_unique()
    n_dup_obs = int(adata.obs_names.duplicated().sum())
    if n_dup_obs:
        warnings.warn(
            f"{n_dup_obs} duplicated cell names were made unique by appending '-1', '-2', …",
            UserWarning,
            stacklevel=2,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adata.obs_names_make_unique()


# --------------------------------------------------------------------------------------------------
# describe
# --------------------------------------------------------------------------------------------------


def is_integer_counts(matrix: Any) -> bool:
    """Whether ``matrix`` looks like raw counts: finite, non-negative and integer-valued.

    Sparse matrices are judged on their stored values. For speed, at most
    :data:`INTEGER_CHECK_MAX_VALUES` values are inspected (an evenly strided sample), so a matrix with
    very few non-integer entries could pass; that is acceptable for deciding how to preprocess.
    """
    if matrix is None:
        return False
    values = matrix.data if sp.issparse(matrix) else np.asarray(matrix)
    if values.dtype.kind in "biu":
        return bool(values.size == 0 or values.min() >= 0)
    if values.dtype.kind != "f":
        return False
    values = values.ravel()
    if values.size > INTEGER_CHECK_MAX_VALUES:
        step = int(np.ceil(values.size / INTEGER_CHECK_MAX_VALUES))
        values = values[::step]
    if values.size == 0:
        return True
    if not np.isfinite(values).all() or values.min() < 0:
        return False
    return bool(np.all(values == np.round(values)))


@dataclass(frozen=True)
class DataSummary:
    """What the UI/CLI need to know about a loaded dataset before choosing preprocessing.

    ``is_counts`` says whether ``X`` itself holds raw integer counts; ``counts_location`` says where raw
    counts can be found (``"X"``, ``"layers['counts']"``, ``"raw.X"``) or ``None`` if nowhere.
    """

    n_cells: int
    n_genes: int
    is_counts: bool
    counts_location: str | None
    annotation_columns: list[str] = field(default_factory=list)
    sparse: bool = False
    has_mito: bool = False

    def to_text(self) -> str:
        """One human-readable paragraph for the UI and CLI."""
        parts = [
            f"{self.n_cells:,} cells × {self.n_genes:,} genes ({'sparse' if self.sparse else 'dense'} matrix)."
        ]
        if self.counts_location == "X":
            parts.append("X holds raw integer counts.")
        elif self.counts_location is not None:
            parts.append(
                f"X is not raw counts (looks normalised); raw integer counts are in {self.counts_location}."
            )
        else:
            parts.append(
                "No raw integer counts found: X looks already normalised or transformed, so count-based "
                "steps (library-size normalisation, count QC) may not apply."
            )
        if self.annotation_columns:
            parts.append(
                f"{len(self.annotation_columns)} cell annotation column(s) usable as reference labels: "
                + ", ".join(self.annotation_columns) + "."
            )
        else:
            parts.append("No cell annotation columns found (no reference labels for scoring).")
        parts.append(
            "Mitochondrial genes (MT-) present." if self.has_mito else "No mitochondrial genes (MT-) found."
        )
        return " ".join(parts)


def _annotation_columns(obs: pd.DataFrame) -> list[str]:
    """obs columns that look like cell labels (categorical/text/bool or low-cardinality integers)."""
    n_cells = len(obs)
    max_levels = max(2, min(200, n_cells // 2))
    found: list[str] = []
    for col in obs.columns:
        if _QC_COLUMN_RE.match(str(col)):
            continue
        series = obs[col]
        dtype = series.dtype
        labelish = (
            isinstance(dtype, pd.CategoricalDtype)
            or pd.api.types.is_object_dtype(dtype)
            or pd.api.types.is_string_dtype(dtype)
            or pd.api.types.is_bool_dtype(dtype)
            or pd.api.types.is_integer_dtype(dtype)
        )
        if not labelish:
            continue
        n_levels = series.nunique(dropna=True)
        if 2 <= n_levels <= max_levels:
            found.append(str(col))
    return found


def describe(adata: ad.AnnData) -> DataSummary:
    """Summarise a dataset so the caller can pick preprocessing and reference labels."""
    location: str | None = None
    if is_integer_counts(adata.X):
        location = "X"
    elif "counts" in adata.layers and is_integer_counts(adata.layers["counts"]):
        location = "layers['counts']"
    elif adata.raw is not None and is_integer_counts(adata.raw.X):
        location = "raw.X"
    names = pd.Series(np.asarray(adata.var_names, dtype=str))
    return DataSummary(
        n_cells=int(adata.n_obs),
        n_genes=int(adata.n_vars),
        is_counts=location == "X",
        counts_location=location,
        annotation_columns=_annotation_columns(adata.obs),
        sparse=bool(sp.issparse(adata.X)),
        has_mito=bool(names.str.contains(_MITO_RE).any()),
    )


# --------------------------------------------------------------------------------------------------
# write
# --------------------------------------------------------------------------------------------------


def sanitize_uns(d: Mapping[str, Any], _path: str = "uns") -> dict[str, Any]:
    """Return a copy of ``d`` that h5ad can store: tuples → lists, numpy scalars → Python, ``None`` dropped.

    Raises
    ------
    ValueError
        Naming the offending key when a value has no h5ad representation.
    """
    out: dict[str, Any] = {}
    for key, value in d.items():
        if value is None:
            continue
        key_s = str(key)
        out[key_s] = _sanitize_value(value, f"{_path}[{key_s!r}]")
    return out


def _sanitize_value(value: Any, path: str) -> Any:
    if isinstance(value, Mapping):
        return sanitize_uns(value, path)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (pd.DataFrame, pd.Series)) or sp.issparse(value):
        return value
    if isinstance(value, np.ndarray):
        return _sanitize_array(value, path)
    if isinstance(value, (list, tuple)):
        items = [_sanitize_value(v, f"{path}[{i}]") for i, v in enumerate(value) if v is not None]
        if len(items) != len(value):
            raise ValueError(f"{path} is a list containing None, which .h5ad cannot store: remove the None entries")
        if any(isinstance(v, dict) for v in items):
            raise ValueError(
                f"{path} is a list of dicts, which .h5ad cannot store: turn it into a dict keyed by strings"
            )
        try:
            as_array = np.asarray(items) if items else np.asarray([], dtype=float)
        except ValueError as exc:  # ragged nesting
            raise ValueError(
                f"{path} is a ragged nested list, which .h5ad cannot store: make it rectangular "
                "(all sub-lists the same length) or store it as a dict of lists"
            ) from exc
        _sanitize_array(as_array, path)  # validate only: anndata converts lists itself
        return items
    raise ValueError(
        f"{path} has type {type(value).__name__}, which .h5ad cannot store: convert it to numbers, strings, "
        "lists or dicts, or remove it"
    )


def _sanitize_array(arr: np.ndarray, path: str) -> np.ndarray:
    if arr.dtype.kind in "biufcUS":
        return arr
    if arr.dtype.kind == "O" and all(isinstance(v, str) for v in arr.ravel()):
        return arr.astype(str)
    raise ValueError(
        f"{path} is an array of mixed or non-numeric objects ({arr.dtype}), which .h5ad cannot store: "
        "make all its elements numbers or all strings"
    )


def _sanitize_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Make obs/var storable: string column names/index, object columns all-str, categories str."""
    frame = frame.copy()
    frame.columns = [str(c) for c in frame.columns]
    frame.index = pd.Index(np.asarray(frame.index, dtype=str), dtype=str)
    for col in frame.columns:
        series = frame[col]
        if isinstance(series.dtype, pd.CategoricalDtype):
            cats = series.cat.categories
            if cats.dtype.kind == "O" and not all(isinstance(c, str) for c in cats):
                frame[col] = series.cat.rename_categories([str(c) for c in cats])
        elif pd.api.types.is_object_dtype(series.dtype):
            non_null = series.dropna()
            if len(non_null) and all(isinstance(v, (bool, np.bool_)) for v in non_null) and len(non_null) == len(series):
                frame[col] = series.astype(bool)
            elif not all(isinstance(v, str) for v in non_null):
                logger.info("Column %r has mixed types; storing it as strings", col)
                frame[col] = pd.Categorical(series.map(lambda v: v if v is None or v != v else str(v)))
            elif series.isna().any():
                frame[col] = pd.Categorical(series)
    return frame


def write(adata: ad.AnnData, path: str | Path) -> Path:
    """Save ``adata`` as gzip-compressed ``.h5ad`` after making obs/var/uns storable.

    The input is not modified (a copy is written).
    """
    path = Path(path)
    out = adata.copy()
    out.obs = _sanitize_frame(out.obs)
    out.var = _sanitize_frame(out.var)
    out.uns = sanitize_uns(dict(out.uns))
    path.parent.mkdir(parents=True, exist_ok=True)
    out.write_h5ad(path, compression="gzip")
    logger.info("Wrote %d cells × %d genes to %s", out.n_obs, out.n_vars, path)
    return path


# --------------------------------------------------------------------------------------------------
# fingerprint
# --------------------------------------------------------------------------------------------------


def _names_bytes(names: pd.Index) -> bytes:
    return "\x00".join(np.asarray(names, dtype=str).tolist()).encode("utf-8")


def dataset_fingerprint(adata: ad.AnnData) -> dict[str, Any]:
    """Content hash of X and the cell/gene names, so results can be tied to the exact input data.

    Sparse matrices are hashed in canonical CSR form (int64 indices, float32 data), dense ones as
    C-contiguous float32 bytes; no Python-level loops over values.
    """
    h = hashlib.sha256()
    X = adata.X
    h.update(f"{adata.n_obs}x{adata.n_vars};".encode())
    if sp.issparse(X):
        m = sp.csr_matrix(X, dtype=np.float32)
        if not m.has_canonical_format:
            m = m.copy()
            m.sum_duplicates()
        h.update(b"csr;")
        h.update(np.ascontiguousarray(m.indptr, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(m.indices, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(m.data, dtype=np.float32).tobytes())
    elif X is not None:
        h.update(b"dense;")
        h.update(np.ascontiguousarray(np.asarray(X), dtype=np.float32).tobytes())
    h.update(b"obs;")
    h.update(_names_bytes(adata.obs_names))
    h.update(b"var;")
    h.update(_names_bytes(adata.var_names))
    return {"n_cells": int(adata.n_obs), "n_genes": int(adata.n_vars), "sha256": h.hexdigest()}

