"""kNN graph and Leiden for label-free candidates: one exact graph reused across resolutions, explicit seeds.

Two callers need many Leiden partitions of one embedding, fast: ``recommend``'s candidates (several resolutions on
each view) and the default-K estimate before Start. Both use this module: an exact kNN graph from scikit-learn
(``sc.pp.neighbors``' first call in a process compiles numba code for minutes on a small CPU, and its UMAP
weights are not needed to count communities) and ``leidenalg`` with its own seed — no global random generator is
touched. The ``leiden`` method and the deep methods' Leiden step keep scanpy's recipe
(:func:`~scclust_core.methods._blocks.leiden_on_embedding`), the field's reference implementation.
"""
from __future__ import annotations

import warnings

import numpy as np
from anndata import AnnData

__all__ = ["knn_graph", "leiden_partition", "leiden_k"]


def knn_graph(z: np.ndarray, k: int):
    """Undirected igraph kNN graph of ``z`` (exact neighbours; an edge found from both sides gets weight 2)."""
    import igraph as ig
    from sklearn.neighbors import NearestNeighbors

    k = int(min(k, len(z) - 1))
    _, ind = NearestNeighbors(n_neighbors=k + 1).fit(z).kneighbors(z)
    src = np.repeat(np.arange(len(z)), k)
    g = ig.Graph(n=len(z), edges=np.column_stack([src, ind[:, 1:].ravel()]).tolist(), directed=False)
    g.es["weight"] = 1.0
    return g.simplify(combine_edges="sum")


def leiden_partition(g, resolution: float, seed: int, *, n_iterations: int = 2) -> np.ndarray:
    """Leiden labels (int64) of graph ``g`` (modularity with a resolution, weighted), seeded explicitly."""
    import leidenalg

    part = leidenalg.find_partition(g, leidenalg.RBConfigurationVertexPartition, weights="weight",
                                    resolution_parameter=resolution, seed=int(seed), n_iterations=n_iterations)
    return np.asarray(part.membership, dtype=np.int64)


def leiden_k(adata: AnnData, *, seed: int = 0, n_neighbors: int = 15, resolution: float = 1.0) -> int:
    """Label-free number of clusters: Leiden (resolution 1) on the kNN graph of 50 PCs of the classic recipe
    (normalise, log, 2,000 HVGs, scale, PCA). The default K when no reference annotation is chosen."""
    from .preprocess import recipe_classic

    if adata.n_obs < 3:
        raise ValueError(f"Need at least 3 cells to estimate K (got {adata.n_obs})")
    with warnings.catch_warnings():  # "X is not counts" is the classic recipe's business, not the estimate's
        warnings.simplefilter("ignore")
        ad = recipe_classic(adata, n_top_genes=2000, n_pcs=50, max_value=10, seed=seed)
    x = np.asarray(ad.obsm["X_pca"], dtype=np.float32)
    labels = leiden_partition(knn_graph(x, n_neighbors), resolution, seed)
    return max(2, int(len(np.unique(labels))))
