"""kNN graph and Leiden for label-free candidates: one exact graph reused across resolutions, explicit seeds.

Two callers need many Leiden partitions of one embedding, fast: ``recommend``'s candidates (several resolutions on
each view) and the default-K estimate before Start. Both use this module: an exact kNN graph from scikit-learn
(``sc.pp.neighbors``' first call in a process compiles numba code for minutes on a small CPU, and its UMAP
weights are not needed to count communities) and ``leidenalg`` with its own seed — no global random generator is
touched. The ``leiden`` method, the deep methods' Leiden step and Leiden after an integration use scanpy's recipe
(:func:`leiden_on_embedding`: ``sc.pp.neighbors`` + ``sc.tl.leiden``), the field's reference implementation, on
a kNN graph or on a graph given (BBKNN's).
"""
from __future__ import annotations

import warnings

import numpy as np
from anndata import AnnData

__all__ = ["knn_graph", "leiden_partition", "leiden_k", "leiden_on_embedding"]


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


#: the default-K estimate looks at most this many cells (a random subsample): Leiden's community count at
#: resolution 1 hardly moves with more, and on 50,000 cells the whole recipe blocked the page for ~160 s
K_ESTIMATE_CELLS = 10_000


def leiden_k(adata: AnnData, *, seed: int = 0, n_neighbors: int = 15, resolution: float = 1.0,
             max_cells: int = K_ESTIMATE_CELLS) -> int:
    """Label-free number of clusters: Leiden (resolution 1) on the kNN graph of 50 PCs of the classic recipe
    (normalise, log, 2,000 HVGs, scale, PCA) of at most ``max_cells`` cells. The default K when no reference
    annotation is chosen."""
    from .preprocess import recipe_classic

    if adata.n_obs < 3:
        raise ValueError(f"Need at least 3 cells to estimate K (got {adata.n_obs})")
    if adata.n_obs > max_cells:
        rows = np.sort(np.random.default_rng(seed).choice(adata.n_obs, max_cells, replace=False))
        adata = adata[rows]
    with warnings.catch_warnings():  # "X is not counts" is the classic recipe's business, not the estimate's
        warnings.simplefilter("ignore")
        ad = recipe_classic(adata, n_top_genes=2000, n_pcs=50, max_value=10, seed=seed)
    x = np.asarray(ad.obsm["X_pca"], dtype=np.float32)
    labels = leiden_partition(knn_graph(x, n_neighbors), resolution, seed)
    return max(2, int(len(np.unique(labels))))


def leiden_on_embedding(z: np.ndarray | None, *, n_neighbors: int, resolution: float, seed: int,
                        flavor: str = "igraph", n_iterations: int | None = None, adjacency=None) -> np.ndarray:
    """Leiden labels (int64) with scanpy: ``neighbors(use_rep='X')`` of ``z`` then ``leiden``, or ``leiden`` on a
    given ``adjacency`` (then ``z`` is not used).

    ``n_neighbors`` is capped at N − 1 (at least 2). The igraph flavour runs on the undirected graph with
    ``n_iterations`` (default 2, scanpy's recommended setting, docs/methods.md §0.6); ``leidenalg`` uses scanpy's
    default iterations unless given.
    """
    import scanpy as sc

    n = adjacency.shape[0] if adjacency is not None else len(z)
    ad = AnnData(np.zeros((n, 1), dtype=np.float32) if z is None else np.asarray(z, dtype=np.float32))
    kw: dict = {"directed": False, "n_iterations": 2} if flavor == "igraph" else {}
    if n_iterations is not None:
        kw["n_iterations"] = int(n_iterations)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if adjacency is not None:
            kw["adjacency"] = adjacency
        else:
            sc.pp.neighbors(ad, n_neighbors=max(int(min(n_neighbors, ad.n_obs - 1)), 2), use_rep="X",
                            random_state=seed)
        sc.tl.leiden(ad, resolution=resolution, flavor=flavor, random_state=seed, key_added="leiden", **kw)
    return ad.obs["leiden"].astype(int).to_numpy().astype(np.int64)
