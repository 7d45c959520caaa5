"""Which matrix of an .h5ad to cluster: what X, ``.raw`` and each layer hold, and the scanpy convention.

Most shared .h5ad files are processed: X scaled (z-scores) or log-normalised, the counts in ``layers['counts']``
or the log-normalised values in ``.raw``. :func:`describe_matrices` says what each matrix looks like;
:func:`pick_matrix` takes, in order, counts in X, counts in a counts-like layer, counts in ``.raw``, counts
recovered exactly from a log-normalised matrix (``log1p(counts / size · scale)`` with the library sizes in
``obs``, checked to give integers), a log-normalised matrix (classic methods and the consensus run on it),
and says which it took and why. :func:`use_matrix` applies the user's own choice.
"""
from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .describe import is_integer_counts

__all__ = ["MatrixInfo", "COUNT_LAYERS", "describe_matrices", "pick_matrix", "use_matrix", "recover_counts"]

#: layer names that hold raw counts by convention (scanpy, scvi-tools, Seurat conversions)
COUNT_LAYERS = ("counts", "raw_counts", "rawcounts", "count", "umi", "umis", "umi_counts", "raw")
#: library-size columns of obs a log-normalisation may have used
_SIZE_COLUMNS = ("n_counts", "total_counts", "nCount_RNA", "library_size", "size")
_SCALES = (1e4, 1e6, None)  # None: each cell normalised to the median library size
_LOG_MAX = 30.0


@dataclass(frozen=True)
class MatrixInfo:
    """One matrix of a file: where it is (``X``, ``raw`` or ``layers/<name>``), its shape and what it holds."""

    where: str
    n_cells: int
    n_genes: int
    kind: str  # counts | log-normalised | scaled | normalised (not logged) | other
    min: float
    max: float

    def text(self) -> str:
        return (f"{self.where}: {self.n_cells:,} × {self.n_genes:,}, {self.kind} "
                f"(values {self.min:.3g} to {self.max:.3g})")


def _values(x) -> np.ndarray:
    data = x.data if sp.issparse(x) else np.asarray(x)
    return np.asarray(data).ravel()[:5_000_000]


def _kind(x) -> tuple[str, float, float]:
    v = _values(x)
    if v.size == 0:
        return "other", 0.0, 0.0
    lo, hi = float(np.nanmin(v)), float(np.nanmax(v))
    if not np.isfinite(v).all():
        return "other", lo, hi
    if lo < 0:
        return "scaled", lo, hi
    if is_integer_counts(x):
        return "counts", lo, hi
    return ("log-normalised" if hi <= _LOG_MAX else "normalised (not logged)"), lo, hi


def describe_matrices(adata: ad.AnnData) -> list[MatrixInfo]:
    """What X, ``.raw`` and every layer of ``adata`` hold."""
    out = []
    if adata.X is not None:
        out.append(MatrixInfo("X", adata.n_obs, adata.n_vars, *_kind(adata.X)))
    if adata.raw is not None:
        out.append(MatrixInfo("raw", adata.raw.shape[0], adata.raw.shape[1], *_kind(adata.raw.X)))
    for name in adata.layers:
        out.append(MatrixInfo(f"layers/{name}", adata.n_obs, adata.n_vars, *_kind(adata.layers[name])))
    return out


def use_matrix(adata: ad.AnnData, where: str) -> ad.AnnData:
    """A new AnnData whose X is the matrix at ``where`` (``X``, ``raw`` or ``layers/<name>``); obs kept, var from
    ``.raw`` for ``raw``; other matrices dropped (the result is what gets clustered)."""
    if where == "X":
        x, var = adata.X, adata.var
    elif where == "raw":
        if adata.raw is None:
            raise ValueError("The file has no .raw matrix")
        x, var = adata.raw.X, adata.raw.var
    elif where.startswith("layers/") and where[7:] in adata.layers:
        x, var = adata.layers[where[7:]], adata.var
    else:
        raise ValueError(f"No matrix {where!r} in the file; it holds: "
                         f"{', '.join(m.where for m in describe_matrices(adata))}")
    x = sp.csr_matrix(x) if sp.issparse(x) else np.asarray(x)
    return ad.AnnData(x, obs=adata.obs.copy(), var=pd.DataFrame(index=var.index.astype(str).copy()),
                      obsm=dict(adata.obsm), uns=dict(adata.uns))


def recover_counts(x, obs: pd.DataFrame, *, tolerance: float = 6e-4) -> sp.csr_matrix | None:
    """Integer counts from ``log1p(counts / size · scale)`` when that is exactly what ``x`` holds, else None.

    ``size`` is a library-size column of obs (or the per-cell total implied by a median normalisation); the
    tolerance covers values stored rounded to 3 decimals.
    """
    m = sp.csr_matrix(x, dtype=np.float64)
    if m.nnz == 0 or m.data.min() < 0 or m.data.max() > _LOG_MAX:
        return None
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    lin = np.expm1(m.data)
    sizes = [obs[c].to_numpy(dtype=np.float64) for c in _SIZE_COLUMNS if c in obs
             and pd.api.types.is_numeric_dtype(obs[c])]
    for size in sizes:
        for scale in _SCALES[:2]:
            got = _exact(lin * (size[rows] / scale), size[rows] / scale, m, tolerance)
            if got is not None:
                return got
    # median normalisation: counts ∝ lin per cell; the smallest non-zero value of a cell is one count
    per_cell_min = np.full(m.shape[0], np.inf)
    np.minimum.at(per_cell_min, rows, lin)
    factor = 1.0 / np.where(np.isfinite(per_cell_min) & (per_cell_min > 0), per_cell_min, 1.0)
    return _exact(lin * factor[rows], factor[rows], m, tolerance)


def _exact(values: np.ndarray, factor: np.ndarray, m: sp.csr_matrix, tolerance: float) -> sp.csr_matrix | None:
    rounded = np.rint(values)
    if rounded.min() < 1 or np.any(np.abs(values - rounded) > tolerance * (values + factor) + 1e-3):
        return None
    out = sp.csr_matrix((rounded.astype(np.float32), m.indices.copy(), m.indptr.copy()), shape=m.shape)
    return out


def pick_matrix(adata: ad.AnnData) -> tuple[ad.AnnData, str | None]:
    """The matrix to cluster by the scanpy convention (see the module docstring), and a note saying which and why
    (None when X holds counts). Raises ValueError when no matrix can be clustered."""
    info = {m.where: m for m in describe_matrices(adata)}
    if info.get("X") and info["X"].kind == "counts":
        return adata, None
    for name in adata.layers:
        if name.lower() in COUNT_LAYERS and info[f"layers/{name}"].kind == "counts":
            return use_matrix(adata, f"layers/{name}"), (f"X holds {info['X'].kind} values: the raw counts in "
                                                         f"layers['{name}'] are used")
    if info.get("raw") and info["raw"].kind == "counts":
        return use_matrix(adata, "raw"), f"X holds {info['X'].kind} values: the raw counts in .raw are used"
    for where in ("X", "raw"):
        m = info.get(where)
        if m is None or m.kind != "log-normalised":
            continue
        src = use_matrix(adata, where)
        counts = recover_counts(src.X, src.obs)
        if counts is not None:
            src.X = counts
            return src, (f"{where} holds log-normalised values from which the integer counts were recovered exactly "
                         "(log1p of counts scaled by library size); every method can run")
        return src, (f"{where} holds log-normalised values and no raw counts were found: Leiden, K-means and "
                     "recommend run on them; the deep methods need the raw counts")
    listed = "; ".join(m.text() for m in info.values())
    raise ValueError(f"No matrix of this file holds counts or log-normalised values ({listed}): upload the raw "
                     "counts, or a file with them in layers['counts'] or .raw")
