"""The invariants every reader's result satisfies: cells × genes, finite non-negative values that fit in
float32, at least one gene seen in two cells, unique string names, float32 X kept sparse when it is sparse,
and no (cell, gene) position stored twice (duplicates are added up, with a note).
"""
from __future__ import annotations

import logging
import warnings
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .describe import is_integer_counts
from .report import note

logger = logging.getLogger(__name__)

_F32_MAX = float(np.finfo(np.float32).max)


def finalize(adata: ad.AnnData, *, origin: str) -> ad.AnnData:
    """Check values and names, and store X as float32 (CSR when sparse or mostly zero, see as_output_matrix)."""
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(
            f"The data has {adata.n_obs} cells and {adata.n_vars} genes: upload a matrix with at least one "
            "cell and one gene"
        )
    X = adata.X
    if not (sp.issparse(X) or isinstance(X, np.ndarray)):
        X = np.asarray(X)
    if sp.issparse(X):
        n_stored = X.nnz
        X = sum_duplicates(check_sparse(X), n_stored)
    values = X.data if sp.issparse(X) else X
    if values.dtype.kind not in "biuf":
        raise ValueError(
            f"The expression matrix has dtype {values.dtype}, not numbers: store counts as integers or floats"
        )
    check_finite(values)
    check_float32_range(values)
    counts_elsewhere = origin == "h5ad" and _counts_elsewhere(adata)
    if values.size and values.min() < 0 and not counts_elsewhere:
        raise ValueError(_negative_message(X))
    check_informative(X)
    adata.X = as_output_matrix(X)
    ensure_unique_names(adata)
    logger.info("Loaded %s: %d cells × %d genes (%s X)", origin, adata.n_obs, adata.n_vars,
                "sparse" if sp.issparse(adata.X) else "dense")
    return adata


def check_sparse(X: Any) -> sp.csr_matrix:
    """A full structural check: indices out of range in a crafted file would make later steps read out of bounds."""
    try:
        X = X.tocsr() if not sp.isspmatrix_csr(X) else X
        X.check_format(full_check=True)
    except (ValueError, IndexError, TypeError) as exc:
        raise ValueError(f"The sparse matrix in the file is inconsistent ({exc}): the file is corrupt or was written "
                         "by a broken tool; re-export it") from None
    return X


def sum_duplicates(X: Any, n_stored: int | None = None) -> sp.csr_matrix:
    """CSR with entries stored more than once at one position added up, as Matrix Market and scipy define
    them (kept apart, normalisation would see other values than every tool that sums them); noted when any.
    ``n_stored``: the entries as stored before an earlier conversion (COO → CSR already adds them up)."""
    n_stored = X.nnz if n_stored is None else n_stored
    X = X.tocsr() if not sp.isspmatrix_csr(X) else X
    X.sum_duplicates()
    n_dup = n_stored - X.nnz
    if n_dup > 0:
        note(f"{n_dup:,} entries of the sparse matrix repeat a (row, column) position already stored: they were "
             "added to it, as the Matrix Market and sparse formats define repeated entries")
    return X


def _counts_elsewhere(adata: ad.AnnData) -> bool:
    if "counts" in adata.layers and is_integer_counts(adata.layers["counts"]):
        return True
    return adata.raw is not None and is_integer_counts(adata.raw.X)


def check_finite(values: np.ndarray) -> None:
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


def check_float32_range(values: np.ndarray) -> None:
    """Values beyond float32's range would silently become infinite when stored as float32."""
    if values.size == 0 or values.dtype.kind != "f" or values.dtype.itemsize <= 4:
        return  # integers (even int64) and float32 always fit
    big = float(np.abs(values).max())
    if big > _F32_MAX:
        raise ValueError(
            f"The matrix holds a value of {big:g}, too large for 32-bit floats (max {_F32_MAX:.3g}): counts "
            "cannot be this large; check how the file was produced"
        )


def check_informative(X: Any) -> None:
    """An all-zero matrix, or one where no gene is seen in two cells, cannot be clustered: say so now."""
    if sp.issparse(X):
        nz = X.tocsr() if not sp.isspmatrix_csr(X) else X
        cols = nz.indices[nz.data != 0]
        detected = np.bincount(cols, minlength=X.shape[1]) if cols.size else np.zeros(X.shape[1], dtype=np.int64)
    else:
        detected = np.count_nonzero(np.asarray(X), axis=0)
    if not detected.size or detected.max() == 0:
        raise ValueError(
            f"All {X.shape[0]:,} × {X.shape[1]:,} values are zero: there is nothing to cluster; check that the "
            "file holds the counts (not an empty template)"
        )
    if X.shape[0] >= 2 and detected.max() < 2:
        raise ValueError(
            f"No gene is detected in two or more of the {X.shape[0]:,} cells, so no two cells share any signal "
            "and clustering is meaningless: check the file (wrong orientation, or counts from different samples?)"
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


def as_output_matrix(X: Any) -> sp.csr_matrix | np.ndarray:
    """float32 CSR for sparse input (never densified: a 50k × 30k 10x matrix must stay sparse) and for dense
    input that is mostly zeros; dense float32 otherwise."""
    n_total = X.shape[0] * X.shape[1]
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float32)
        X.eliminate_zeros()
        X.sort_indices()
        return X
    X = np.asarray(X, dtype=np.float32)
    if np.count_nonzero(X) < 0.5 * n_total:
        return sp.csr_matrix(X)
    return np.ascontiguousarray(X)


def ensure_unique_names(adata: ad.AnnData) -> None:
    """Cast names to str and de-duplicate them, warning how many were renamed."""
    adata.obs_names = pd.Index(np.asarray(adata.obs_names, dtype=str), dtype=str)
    adata.var_names = pd.Index(np.asarray(adata.var_names, dtype=str), dtype=str)
    for axis, label in (("var", "gene"), ("obs", "cell")):
        names = adata.var_names if axis == "var" else adata.obs_names
        n_dup = int(names.duplicated().sum())
        if not n_dup:
            continue
        warnings.warn(f"{n_dup} duplicated {label} names were made unique by appending '-1', '-2', …",
                      UserWarning, stacklevel=3)
        note(f"{n_dup} duplicated {label} names were made unique by appending '-1', '-2', …")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adata.var_names_make_unique() if axis == "var" else adata.obs_names_make_unique()
