"""2-D views of a run's learned embedding: UMAP (scanpy / umap-learn), t-SNE and PCA.

Cells a method dropped (NaN rows) are left out of the computation and get NaN coordinates.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["KINDS", "compute", "cached"]

KINDS = ("UMAP", "t-SNE", "PCA")


def compute(embedding: np.ndarray, kind: str = "UMAP", *, seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """2-D coordinates (float32 [n, 2]) of ``embedding`` (float [n, d]; NaN rows stay NaN).

    UMAP runs on a kNN graph of the embedding itself (``sc.pp.neighbors(use_rep='X')`` then ``sc.tl.umap``),
    never on the expression matrix, so it shows what the method learned.
    """
    if kind not in KINDS:
        raise ValueError(f"Unknown view {kind!r}; choose one of {list(KINDS)}")
    z = np.asarray(embedding, dtype=np.float32)
    ok = np.isfinite(z).all(axis=1)
    out = np.full((len(z), 2), np.nan, dtype=np.float32)
    x = z[ok]
    n = len(x)
    if n < 3:
        raise ValueError(f"Need at least 3 cells for a 2-D view (got {n})")
    if kind == "PCA" or x.shape[1] <= 2:
        xc = x - x.mean(0)
        if x.shape[1] >= 2:
            _, _, vt = np.linalg.svd(xc, full_matrices=False)
            xy = xc @ vt[:2].T
        else:
            xy = np.column_stack([xc[:, 0], np.zeros(n)])
    elif kind == "t-SNE":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
        xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    else:
        import scanpy as sc
        from anndata import AnnData

        ad = AnnData(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sc.pp.neighbors(ad, n_neighbors=int(min(n_neighbors, n - 1)), use_rep="X", random_state=seed)
            sc.tl.umap(ad, random_state=seed)
        xy = ad.obsm["X_umap"]
    out[ok] = np.asarray(xy, dtype=np.float32)
    return out


def cached(embedding: np.ndarray, kind: str, cache_file: str | Path, *, seed: int = 0) -> np.ndarray:
    """:func:`compute` with the result stored in ``cache_file`` (``.npy``) and reused when its shape fits."""
    path = Path(cache_file)
    if path.exists():
        try:
            xy = np.load(path, allow_pickle=False)
            if xy.shape == (len(embedding), 2):
                return xy
        except (OSError, ValueError):
            logger.warning("Ignoring unreadable cache %s", path)
    xy = compute(embedding, kind, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npy")
    np.save(tmp, xy)
    tmp.replace(path)
    return xy
