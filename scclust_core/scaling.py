"""Larger test data from a real labelled file: resampled cells, binomially thinned (for scale benchmarks).

``python -m scclust_core scale --data CITE_CBMC.h5ad --cells 50000 --out cite50k.h5ad`` makes a 50,000-cell file
with the same genes and cell types: cells are drawn with replacement and every count is thinned,
``x' ~ Binomial(x, keep)``, so that repeated draws of one cell differ as two shallower reads of it would. The
result keeps the source's label column and says how it was made in ``uns['scclust_scaled']``. Nothing of the
source data ships with the project; the file is made where the data is.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

__all__ = ["resample_thinned"]


def resample_thinned(adata: AnnData, n_cells: int, *, keep: float = 0.8, seed: int = 0,
                     label_key: str | None = "cell_type") -> AnnData:
    """``n_cells`` cells drawn with replacement from ``adata`` (raw counts in ``X``), each count thinned by
    ``Binomial(x, keep)``. Raises ``ValueError`` for non-count data or bad sizes."""
    if n_cells < 1 or not 0 < keep <= 1:
        raise ValueError(f"n_cells must be ≥ 1 and keep in (0, 1], got {n_cells} and {keep}")
    x = sp.csr_matrix(adata.X)
    if x.nnz and (x.data.min() < 0 or not np.allclose(x.data, np.round(x.data))):
        raise ValueError("X must hold raw counts (non-negative integers) to be thinned")
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, adata.n_obs, int(n_cells))
    out = x[rows].tocsr()
    out.data = rng.binomial(out.data.astype(np.int64), keep).astype(np.float32)
    out.eliminate_zeros()
    obs = adata.obs.iloc[rows][[label_key]].copy() if label_key and label_key in adata.obs else adata.obs.iloc[rows][[]].copy()
    obs.index = [f"cell{i}" for i in range(len(rows))]
    res = AnnData(out, obs=obs, var=adata.var[[]].copy())
    res.uns["scclust_scaled"] = {"n_source_cells": int(adata.n_obs), "keep": float(keep), "seed": int(seed)}
    return res
