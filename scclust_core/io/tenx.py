"""10x Genomics matrix folders (``matrix.mtx`` + ``features.tsv``/``genes.tsv`` + ``barcodes.tsv``).

The Matrix Market header is read first and checked against the feature/barcode files, the file's size and
the memory budget before scipy allocates anything; the matrix stays sparse throughout. The header's claims
are checked against the entries rather than trusted (:func:`_mmread`): values under an ``integer`` header are
read as written, and a ``symmetric`` header over entries on both sides of the diagonal is refused.
"""
from __future__ import annotations

import csv
import gzip
import io
import logging
import re
import tempfile
import zlib
from pathlib import Path
from typing import IO

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .budget import copy_capped, current_budget, require
from .detect import GZIP_MAGIC
from .errors import corrupt, fmt_bytes
from .report import note
from .validate import sum_duplicates

logger = logging.getLogger(__name__)

#: Shortest text of one coordinate entry ("1 1\n"), to bound the entries a file can hold.
_MIN_ENTRY_BYTES = 4


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


def _is_gz(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def _plain_copy(path: Path, tmp: Path) -> Path:
    """``path`` itself when uncompressed, else its content inflated into ``tmp`` (capped by the budget)."""
    if not _is_gz(path):
        return path
    out = tmp / path.name.removesuffix(".gz")
    try:
        with open(path, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as src, open(out, "wb") as dst:
            copy_capped(src, dst, current_budget(), f"'{path.name}'", consumed=raw.tell)
    except (OSError, EOFError, zlib.error) as exc:
        raise corrupt(f"'{path.name}' could not be decompressed", exc) from exc
    return out


def read_tsv_column_frame(path: Path, what: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, sep="\t", header=None, dtype=str, quoting=csv.QUOTE_NONE, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ValueError(f"The {what} file '{path.name}' is empty: re-export the 10x folder") from None
    except UnicodeDecodeError:
        raise ValueError(f"The {what} file '{path.name}' is not UTF-8 text: re-export the 10x folder") from None
    except Exception as exc:  # noqa: BLE001 - any parser failure means an unreadable upload
        if isinstance(exc, MemoryError):
            raise
        raise corrupt(f"{what} file '{path.name}' could not be parsed", exc) from exc
    return frame


def mtx_header(path: Path) -> tuple[int, int, int | None, int]:
    """``(rows, cols, entries or None for dense, header bytes)`` of a Matrix Market file, without reading it."""
    with open(path, "rb") as fh:
        banner = fh.readline(1024)
        if not banner.lower().startswith(b"%%matrixmarket"):
            raise corrupt(f"'{path.name}' is not a Matrix Market file",
                          ValueError("first line must start with %%MatrixMarket"))
        fmt = banner.split()[2].lower() if len(banner.split()) > 2 else b"coordinate"
        line = fh.readline(1024)
        while line.startswith(b"%") or not line.strip():
            if not line:
                raise corrupt(f"'{path.name}' has no size line", EOFError("end of file in header"))
            line = fh.readline(1024)
        offset = fh.tell()
    fields = line.split()
    want = 3 if fmt == b"coordinate" else 2
    if len(fields) != want or not all(re.fullmatch(rb"\d{1,19}", f) for f in fields):
        raise corrupt(f"'{path.name}' has a malformed size line {line[:80]!r}",
                      ValueError(f"expected {want} non-negative integers"))
    nums = [int(f) for f in fields]
    return nums[0], nums[1], (nums[2] if want == 3 else None), offset


def _check_mtx(path: Path, rows: int, cols: int, nnz: int | None, offset: int) -> None:
    """Refuse a header that declares more than the file holds or than the budget allows."""
    body = path.stat().st_size - offset
    if nnz is None:
        require(rows * cols * 8 * 2, f"'{path.name}' declares a dense {rows:,} × {cols:,} matrix; reading it")
        return
    if nnz > rows * cols:
        raise corrupt(f"'{path.name}' declares {nnz:,} entries in a {rows:,} × {cols:,} matrix",
                      ValueError("more entries than cells of the matrix"))
    if nnz * _MIN_ENTRY_BYTES > body:
        raise corrupt(f"'{path.name}' declares {nnz:,} entries but holds only {fmt_bytes(body)} of text",
                      ValueError("file shorter than its header says"))
    require(nnz * 48 + (rows + cols + 2) * 16,
            f"'{path.name}' ({rows:,} × {cols:,} with {nnz:,} entries), read as a sparse matrix,")


def mtx_banner(path: Path) -> tuple[str, str, str]:
    """``(format, field, symmetry)`` of a Matrix Market file's first line, lower case, with the defaults."""
    with open(path, "rb") as fh:
        words = fh.readline(1024).decode("ascii", "replace").lower().split()[2:5]
    fmt, field, symmetry = words + ["coordinate", "real", "general"][len(words):]
    return fmt, field, symmetry


class _NewBanner(io.RawIOBase):
    """A Matrix Market file with its first line replaced, as a stream (the file on disk stays as it is)."""

    def __init__(self, fh: IO[bytes], banner: bytes):
        self._fh, self._head = fh, banner
        first = fh.readline(4096)
        if not first.endswith(b"\n"):
            raise ValueError("first line of the Matrix Market file is too long")

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buf), len(self._head))
            buf[:n], self._head = self._head[:n], self._head[n:]
            return n
        data = self._fh.read(len(buf))
        buf[: len(data)] = data
        return len(data)


def _check_banner(name: str, fmt: str, field: str, symmetry: str) -> None:
    if field == "complex":
        raise ValueError(f"'{name}' holds complex numbers (Matrix Market field 'complex'): counts are real "
                         "numbers; re-export the count matrix")
    if fmt == "array" and symmetry != "general":
        raise ValueError(f"'{name}' is a dense Matrix Market array declared '{symmetry}' (one triangle stored, "
                         "the rest mirrored from it): a count matrix is 'general'; re-export it, or change "
                         f"'{symmetry}' to 'general' in its first line if it holds every value")


def _mmread(path: Path):
    """The matrix as written: read with the header's field as ``real`` and its symmetry as ``general``, so
    neither truncation (``integer`` over 2.5) nor mirroring (``symmetric`` over both triangles) hides what the
    entries say; then the claims are checked (:func:`_integer_claim`, :func:`_apply_symmetry`)."""
    import scipy.io

    fmt, field, symmetry = mtx_banner(path)
    _check_banner(path.name, fmt, field, symmetry)
    read_as = "real" if field == "integer" else field
    try:
        with open(path, "rb") as fh:
            stream = io.BufferedReader(_NewBanner(fh, f"%%MatrixMarket matrix {fmt} {read_as} general\n".encode()))
            mat = scipy.io.mmread(stream)
    except Exception as exc:  # noqa: BLE001 - any parser failure means an unreadable upload
        if isinstance(exc, MemoryError):
            raise
        raise corrupt(f"Matrix Market file '{path.name}' could not be parsed", exc) from exc
    if field == "integer":
        _integer_claim(mat, path.name)
    if sp.issparse(mat):
        return sum_duplicates(_apply_symmetry(sp.coo_matrix(mat), symmetry, path.name))
    return np.asarray(mat)


def _integer_claim(mat, name: str) -> None:
    """An ``integer`` header over non-integer values: keep the values as written and say so."""
    values = mat.data if sp.issparse(mat) else np.asarray(mat).ravel()
    frac = values[values != np.round(values)]
    if frac.size:
        note(f"'{name}' declares integer values but holds {frac.size:,} that are not whole numbers (e.g. "
             f"{float(frac[0]):g}): they were read as written (real numbers), not truncated")


def _apply_symmetry(coo: sp.coo_matrix, symmetry: str, name: str) -> sp.coo_matrix:
    """Mirror the one stored triangle as a symmetric header says; refuse when both triangles are stored."""
    if symmetry == "general":
        return coo
    r, c, v = coo.row, coo.col, coo.data
    upper, lower = np.flatnonzero(r < c), np.flatnonzero(r > c)
    if upper.size and lower.size or coo.shape[0] != coo.shape[1]:
        where = (f"holds entries on both sides of the diagonal (e.g. ({r[upper[0]] + 1}, {c[upper[0]] + 1}) and "
                 f"({r[lower[0]] + 1}, {c[lower[0]] + 1}))" if upper.size and lower.size
                 else f"is not square ({coo.shape[0]:,} × {coo.shape[1]:,})")
        raise ValueError(
            f"'{name}' declares a '{symmetry}' matrix (one triangle stored, the other mirrored from it) but "
            f"{where}: read as declared its values would be wrong. A count matrix is 'general': change "
            f"'{symmetry}' to 'general' in the file's first line, or re-export it")
    off = r != c
    sign = -1 if symmetry == "skew-symmetric" else 1
    note(f"'{name}' declares a '{symmetry}' matrix: the stored triangle was mirrored, as its header says "
         "(a count matrix is usually 'general')")
    return sp.coo_matrix((np.concatenate([v, sign * v[off]]), (np.concatenate([r, c[off]]),
                                                              np.concatenate([c, r[off]]))), shape=coo.shape)


def read_mtx_dir(folder: Path, label: str | None = None) -> ad.AnnData:
    """Read a 10x ``matrix.mtx`` folder (genes × cells on disk) into cells × genes.

    ``label`` names the folder in messages (an archive's name rather than its temp folder)."""
    label = label or f"10x folder '{folder.name}'"
    matrix = _find_one(folder, ("matrix.mtx",))
    features = _find_one(folder, ("features.tsv", "genes.tsv"))
    barcodes = _find_one(folder, ("barcodes.tsv",))
    missing = [n for n, p in (("matrix.mtx", matrix), ("features.tsv/genes.tsv", features),
                              ("barcodes.tsv", barcodes)) if p is None]
    if missing:
        raise ValueError(
            f"{label} is missing {', '.join(missing)} (optionally .gz): "
            "include all three files of the CellRanger output folder"
        )
    with tempfile.TemporaryDirectory(prefix="scclust_mtx_") as tmp:
        mpath = _plain_copy(matrix, Path(tmp))
        rows, cols, nnz, offset = mtx_header(mpath)
        feat = read_tsv_column_frame(_plain_copy(features, Path(tmp)), "features")
        bc = read_tsv_column_frame(_plain_copy(barcodes, Path(tmp)), "barcodes")
        n_feat, n_bc = len(feat), len(bc)
        if (rows, cols) not in ((n_feat, n_bc), (n_bc, n_feat)):
            raise ValueError(
                f"{label}: matrix is {rows}×{cols} but there are {n_feat} "
                f"features and {n_bc} barcodes: the files come from different runs, re-export the folder"
            )
        _check_mtx(mpath, rows, cols, nnz, offset)
        mat = _mmread(mpath)
    if mat.shape == (n_feat, n_bc):
        mat = mat.T.tocsr() if sp.issparse(mat) else mat.T
    ids = feat.iloc[:, 0].astype(str).to_numpy()
    symbols = feat.iloc[:, 1].astype(str).to_numpy() if feat.shape[1] > 1 else ids
    var = pd.DataFrame({"gene_ids": ids}, index=pd.Index(symbols, dtype=str))
    if feat.shape[1] > 2:
        var["feature_types"] = feat.iloc[:, 2].astype(str).to_numpy()
    note(f"10x matrix folder: gene names from column {2 if feat.shape[1] > 1 else 1} of '{features.name}'"
         + (" (symbols; ids in var['gene_ids'])" if feat.shape[1] > 1 else "")
         + f", cell names from '{barcodes.name}'")
    obs = pd.DataFrame(index=pd.Index(bc.iloc[:, 0].astype(str).to_numpy(), dtype=str))
    return ad.AnnData(X=mat, obs=obs, var=var)


def open_maybe_gz(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if _is_gz(path) else open(path, "rb")
