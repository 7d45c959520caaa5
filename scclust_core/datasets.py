"""Datasets that need no upload: a real PBMC demo and a synthetic generator with known clusters.

``demo()`` gives every user (and the tests) the same real data without network access; ``synthetic()``
gives data whose true clusters are known, so methods and metrics can be checked end to end.
"""
from __future__ import annotations

import functools
import logging

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

logger = logging.getLogger(__name__)

__all__ = ["demo", "synthetic", "DEMO_LABEL_KEY"]

#: obs column of :func:`demo` holding the published cell-type annotation.
DEMO_LABEL_KEY = "bulk_labels"

_DEMO_SCALE = 1e4
#: pbmc68k_reduced stores log1p values rounded to 3 decimals, i.e. an absolute error of up to 5e-4
#: (plus float32 rounding); recovered counts may deviate from integers by that relative amount.
_DEMO_LOG_TOLERANCE = 6e-4

_MITO_NAMES = (
    "MT-ND1", "MT-ND2", "MT-CO1", "MT-ATP8", "MT-ATP6", "MT-CO2", "MT-CO3",
    "MT-ND3", "MT-ND4L", "MT-ND4", "MT-ND5", "MT-ND6", "MT-CYB",
)


# --------------------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------------------


def demo() -> ad.AnnData:
    """700 PBMCs × 765 genes of raw counts, annotated in ``obs['bulk_labels']`` (and ``louvain``).

    Built from ``scanpy.datasets.pbmc68k_reduced()`` (a file bundled with scanpy, so no download): its
    ``.raw.X`` holds ``log1p(counts / n_counts * 1e4)``, from which the integer counts are recovered.
    Note that ``obs['n_counts']`` is the library size over the *original* full gene set, so it is larger
    than the row sums of these 765 genes. Returns a fresh copy each call.
    """
    return _load_demo().copy()


@functools.lru_cache(maxsize=1)
def _load_demo() -> ad.AnnData:
    import scanpy as sc

    src = sc.datasets.pbmc68k_reduced()
    if src.raw is None:
        raise RuntimeError("scanpy's pbmc68k_reduced has no .raw: the bundled file changed; update scanpy")
    counts = _counts_from_lognorm(
        sp.csr_matrix(src.raw.X), src.obs["n_counts"].to_numpy(dtype=np.float64), scale=_DEMO_SCALE
    )
    obs = src.obs.copy()
    var = pd.DataFrame(index=pd.Index(np.asarray(src.raw.var_names, dtype=str), dtype=str))
    adata = ad.AnnData(X=counts, obs=obs, var=var)
    adata.uns["source"] = (
        "scanpy.datasets.pbmc68k_reduced (10x Genomics PBMC 68k subset, Zheng et al. 2017): 700 cells, "
        "765 genes; raw counts recovered from .raw.X = log1p(counts / n_counts * 1e4); "
        "obs['n_counts'] is the library size over the original full gene set; "
        "cell types in obs['bulk_labels']"
    )
    logger.info("Loaded demo data: %d cells × %d genes", adata.n_obs, adata.n_vars)
    return adata


def _counts_from_lognorm(lognorm: sp.csr_matrix, size: np.ndarray, *, scale: float) -> sp.csr_matrix:
    """Invert ``log1p(counts / size * scale)`` and check the result really is integer.

    The tolerance follows from the 3-decimal rounding of the stored log values: an error ``e`` in the
    log value gives an error ``e * (count + size / scale)`` in the count.
    """
    rows = np.repeat(np.arange(lognorm.shape[0]), np.diff(lognorm.indptr))
    factor = size[rows] / scale
    values = np.expm1(lognorm.data.astype(np.float64)) * factor
    rounded = np.rint(values)
    tol = _DEMO_LOG_TOLERANCE * (values + factor) + 1e-3
    deviation = np.abs(values - rounded)
    if np.any(deviation > tol):
        worst = int(np.argmax(deviation - tol))
        raise RuntimeError(
            f"Could not recover integer counts from the demo data (value {values[worst]:.4f} is "
            f"{deviation[worst]:.4f} from an integer): the bundled scanpy file changed; update scclust_core"
        )
    counts = sp.csr_matrix((rounded.astype(np.float32), lognorm.indices.copy(), lognorm.indptr.copy()),
                           shape=lognorm.shape)
    counts.eliminate_zeros()
    counts.sort_indices()
    return counts


# --------------------------------------------------------------------------------------------------
# synthetic
# --------------------------------------------------------------------------------------------------


def _validate_synthetic(
    n_cells: int, n_genes: int, n_clusters: int, de_genes: int, fold_change: float, dispersion: float,
    dropout: float, library_size: tuple[float, float], mito_genes: int,
) -> None:
    if n_clusters < 1 or n_cells < n_clusters:
        raise ValueError(f"n_clusters={n_clusters} with n_cells={n_cells}: need 1 <= n_clusters <= n_cells")
    if mito_genes < 0 or n_genes <= mito_genes:
        raise ValueError(f"n_genes={n_genes} must exceed mito_genes={mito_genes}: raise n_genes or lower mito_genes")
    if de_genes < 0 or de_genes * n_clusters > n_genes - mito_genes:
        raise ValueError(
            f"{n_clusters} clusters × {de_genes} marker genes do not fit in {n_genes - mito_genes} non-mito "
            "genes: lower de_genes_per_cluster or raise n_genes"
        )
    if fold_change <= 0 or dispersion < 0 or not 0 <= dropout < 1:
        raise ValueError(
            f"fold_change={fold_change}, dispersion={dispersion}, dropout={dropout}: need fold_change > 0, "
            "dispersion >= 0 and 0 <= dropout < 1"
        )
    low, high = library_size
    if not 0 < low <= high:
        raise ValueError(f"library_size={library_size}: need 0 < low <= high")


def _gene_names(n_genes: int, mito_genes: int) -> list[str]:
    mito = [_MITO_NAMES[i] if i < len(_MITO_NAMES) else f"MT-G{i + 1}" for i in range(mito_genes)]
    n_other = n_genes - mito_genes
    width = max(4, len(str(n_other)))
    return mito + [f"Gene{i:0{width}d}" for i in range(1, n_other + 1)]


def synthetic(
    n_cells: int = 300,
    n_genes: int = 200,
    n_clusters: int = 3,
    *,
    seed: int = 0,
    de_genes_per_cluster: int | None = None,
    fold_change: float = 4.0,
    dispersion: float = 0.5,
    dropout: float = 0.0,
    library_size: tuple[float, float] = (1500, 4000),
    mito_genes: int = 5,
    label_key: str = "cell_type",
) -> ad.AnnData:
    """Negative-binomial counts with known clusters, for testing methods and metrics.

    Each gene gets a log-normal base expression; cluster ``k`` multiplies its own block of
    ``de_genes_per_cluster`` marker genes by ``fold_change``. Counts are gamma–Poisson (NB with variance
    ``mu + dispersion * mu**2``) around per-cell library sizes drawn uniformly from ``library_size``;
    ``dropout > 0`` zeroes that fraction of entries at random (zero inflation). Cluster sizes are balanced
    (they differ by at most one). Deterministic for a given ``seed``.

    Returns cells ``cell0001…`` × genes (``MT-…`` first, then ``Gene0001…``) with CSR float32 counts,
    the truth in ``obs[label_key]`` (categorical ``type_0…``) and each gene's cluster in
    ``var['marker_of']`` (``"none"`` for non-markers).
    """
    de = max(3, n_genes // (2 * n_clusters)) if de_genes_per_cluster is None else int(de_genes_per_cluster)
    _validate_synthetic(n_cells, n_genes, n_clusters, de, fold_change, dispersion, dropout, library_size,
                        mito_genes)
    rng = np.random.default_rng(seed)

    labels = rng.permutation(np.arange(n_cells) % n_clusters)
    base = rng.lognormal(mean=0.0, sigma=1.0, size=n_genes)
    profiles = np.tile(base, (n_clusters, 1))
    marker_of = np.full(n_genes, -1)
    candidates = mito_genes + rng.permutation(n_genes - mito_genes)
    for k in range(n_clusters):
        block = candidates[k * de:(k + 1) * de]
        profiles[k, block] *= fold_change
        marker_of[block] = k
    profiles /= profiles.sum(axis=1, keepdims=True)

    library = rng.uniform(library_size[0], library_size[1], size=n_cells)
    mu = profiles[labels] * library[:, None]
    if dispersion > 0:  # gamma-Poisson mixture == negative binomial; float32 gamma draws are ~2x faster
        shape = 1.0 / dispersion
        mu *= rng.standard_gamma(shape, size=mu.shape, dtype=np.float32) / shape
    counts = rng.poisson(mu)
    if dropout > 0:
        counts[rng.random(counts.shape, dtype=np.float32) < dropout] = 0
    X = sp.csr_matrix(counts)  # from int64 (faster than from float), then cast the stored values only
    X = sp.csr_matrix((X.data.astype(np.float32), X.indices, X.indptr), shape=X.shape)

    width = max(4, len(str(n_cells)))
    type_names = [f"type_{k}" for k in range(n_clusters)]
    obs = pd.DataFrame(
        {label_key: pd.Categorical.from_codes(labels, categories=type_names)},
        index=pd.Index([f"cell{i:0{width}d}" for i in range(1, n_cells + 1)], dtype=str),
    )
    var = pd.DataFrame(
        {"marker_of": pd.Categorical(np.where(marker_of >= 0, np.array(type_names + ["none"])[marker_of], "none"))},
        index=pd.Index(_gene_names(n_genes, mito_genes), dtype=str),
    )
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.uns["source"] = "scclust_core.datasets.synthetic"
    adata.uns["synthetic"] = {
        "n_cells": int(n_cells), "n_genes": int(n_genes), "n_clusters": int(n_clusters), "seed": int(seed),
        "de_genes_per_cluster": int(de), "fold_change": float(fold_change), "dispersion": float(dispersion),
        "dropout": float(dropout), "library_size": [float(library_size[0]), float(library_size[1])],
        "mito_genes": int(mito_genes), "label_key": label_key,
    }
    return adata
