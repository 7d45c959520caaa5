"""Classic baselines: Leiden and K-means on the PCA of the standard scanpy recipe."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import scanpy as sc
from anndata import AnnData
from sklearn.cluster import KMeans

from ..config import MethodConfig, param
from ..graph import leiden_on_embedding
from ..integrate import bbknn_graph, combat
from ..preprocess import recipe_classic
from ..estimate import CostModel, Measured, measured_runs
from ._types import MethodCard
from ._base import ClusteringMethod, FitContext, Prepared
from ._batch import Integration
from ._params import kmeans_restarts, knn_neighbours, leiden_flavor_param, leiden_resolution_param
from ._registry import register_method

__all__ = ["LeidenConfig", "KMeansConfig", "Leiden", "KMeansPCA"]


@dataclass
class _ClassicConfig(MethodConfig):
    n_top_genes: int = param(2000, min=50, max=50000, help="Highly variable genes kept (scanpy 'seurat' flavour).")
    n_pcs: int = param(50, min=2, max=200, help="Principal components to cluster on.")
    scale_max: float = param(10.0, min=0.0, max=1000.0, advanced=True,
                             help="Clip scaled values at ± this (0 = no clipping).")


@dataclass
class LeidenConfig(_ClassicConfig):
    resolution: float = leiden_resolution_param(1.0, "Leiden resolution: higher → more, smaller clusters.",
                                                advanced=False)
    n_neighbors: int = knn_neighbours(15, "Neighbours in the kNN graph on the PCs.", advanced=False)
    n_iterations: int = param(2, min=-1, max=100, advanced=True, help="Leiden iterations (−1 = until stable).")
    flavor: str = leiden_flavor_param("Leiden implementation: igraph (fast) or leidenalg.")

    PRESETS = {"default": {}, "tiny": {"n_top_genes": 50, "n_pcs": 10}}
    PRESET_NOTES = {"default": "scanpy defaults: 2,000 HVGs, 50 PCs, 15 neighbours, resolution 1.",
                    "tiny": "Smoke test only (~150 cells): 50 HVGs, 10 PCs."}


@dataclass
class KMeansConfig(_ClassicConfig):
    n_init: int = kmeans_restarts(10, "K-means restarts (k-means++ init); the best inertia is kept.", advanced=False)
    max_iter: int = param(300, min=10, max=10000, advanced=True, help="Maximum K-means iterations per restart.")

    PRESETS = {"default": {}, "tiny": {"n_top_genes": 50, "n_pcs": 10, "n_init": 2}}
    PRESET_NOTES = {"default": "2,000 HVGs, 50 PCs, k-means++ with 10 restarts.",
                    "tiny": "Smoke test only (~150 cells): 50 HVGs, 10 PCs, 2 restarts."}


ConfigT = TypeVar("ConfigT", bound=_ClassicConfig)


class _Classic(ClusteringMethod[ConfigT]):
    deep = False
    fidelity = "baseline"
    needs_counts = False  # log-normalised input is accepted with a warning
    recipe = "normalize_total, log1p, top HVGs (seurat), scale (clip 10), PCA"
    integrations = ("none", "harmony", "combat", "bbknn")

    def prepare(self, adata: AnnData, config: ConfigT) -> Prepared:
        """The standard scanpy recipe (normalise, log1p, HVGs, scale, PCA) on a copy."""
        ad = recipe_classic(adata, n_top_genes=config.n_top_genes, n_pcs=config.n_pcs,
                            max_value=config.scale_max or None, seed=config.seed)
        return Prepared(ad, ad.obs["cell_index"].to_numpy(np.int64))

    def integrate_input(self, data: Prepared, integ: Integration, config: ConfigT) -> Prepared:
        """Harmony on the PCs; ComBat on the scaled HVGs then PCA again (ComBat standardises each gene itself);
        BBKNN: a batch-balanced graph of the PCs for Leiden. The uncorrected PCs stay in ``X_pca_uncorrected``."""
        ad = data.adata
        ad.obsm["X_pca_uncorrected"] = ad.obsm["X_pca"].copy()
        if integ.name == "harmony":
            ad.obsm["X_pca"] = integ.harmony(ad.obsm["X_pca"], config.seed)
        elif integ.name == "combat":
            combat(ad, integ.batches)
            sc.pp.pca(ad, n_comps=ad.obsm["X_pca"].shape[1], random_state=config.seed)
        elif integ.name == "bbknn":
            ad.obsp["bbknn"] = bbknn_graph(ad.obsm["X_pca"], integ.batches, n_neighbors=getattr(config, "n_neighbors", 15))
        return data


@register_method("leiden")
class Leiden(_Classic[LeidenConfig]):
    """Leiden community detection on a kNN graph of the PCs (scanpy); K follows from the resolution."""

    card = MethodCard(
        what=('Links each cell to its nearest neighbours among the top 50 principal components and finds densely '
              'connected communities. The number of clusters follows from the resolution, not from K.'),
        when=('A fast, strong first look at any dataset; pick it when you do not know how many cell types to '
              'expect. Raise the resolution for finer clusters.'))
    #: measured on a 2-core CPU, one torch thread (README benchmark tables; peak RSS of one-run processes)
    cost = CostModel(
        measured_runs("default", (4271, 2000, 39.5), (822, 14878, 6.9), (8617, 2000, 63.5), (220, 12694, 3.7),
                                 (1000, 900, 2.8), (2746, 2003, 7.8), (4186, 13488, 9.9))
        + (Measured("default", 1000, 900, None, 702, "one-run process"),))

    citation = "Traag, Waltman & van Eck, Sci. Rep. 2019; Wolf et al., scanpy, Genome Biol. 2018"
    can_estimate_k = True
    takes_k = False  # the resolution decides

    def train(self, data: Prepared, config: LeidenConfig, ctx: FitContext) -> tuple[np.ndarray, np.ndarray, dict]:
        ad = data.adata
        labels = leiden_on_embedding(ad.obsm["X_pca"], n_neighbors=config.n_neighbors, resolution=config.resolution,
                                     seed=config.seed, flavor=config.flavor, n_iterations=config.n_iterations,
                                     adjacency=ad.obsp.get("bbknn"))  # the batch-balanced graph when BBKNN ran
        extras = {}
        if config.n_clusters is not None:
            extras["note"] = "Leiden does not take K: n_clusters was ignored; tune the resolution instead."
        return ad.obsm["X_pca"], labels, extras

    def cluster_embedding(self, z: np.ndarray, config: LeidenConfig) -> tuple[np.ndarray, dict]:
        """Leiden on the kNN graph of a given embedding, with this config's neighbours and resolution."""
        labels = leiden_on_embedding(z, n_neighbors=config.n_neighbors, resolution=config.resolution,
                                     seed=config.seed, flavor=config.flavor)
        return labels, {}


@register_method("kmeans")
class KMeansPCA(_Classic[KMeansConfig]):
    """K-means (k-means++, explicit restarts) on the PCs of the standard scanpy recipe."""

    card = MethodCard(
        what=('Splits the cells into K groups around centres among the top 50 principal components. Fast and '
              'simple; it needs K.'),
        when=('A fast baseline when you know roughly how many cell types there are; it favours groups of similar '
              'size.'))
    #: measured on a 2-core CPU, one torch thread (README benchmark tables; peak RSS of one-run processes)
    cost = CostModel(
        measured_runs("default", (4271, 2000, 14.3), (822, 14878, 11.0), (8617, 2000, 25.3), (220, 12694, 0.7),
                                 (1000, 900, 5.1), (2746, 2003, 16.7), (4186, 13488, 9.9))
        + (Measured("default", 1000, 900, None, 584, "one-run process"),))

    citation = "Lloyd 1982; Arthur & Vassilvitskii 2007 (k-means++); scikit-learn"
    integrations = ("none", "harmony", "combat")  # BBKNN is a graph: K-means has none

    def train(self, data: Prepared, config: KMeansConfig, ctx: FitContext) -> tuple[np.ndarray, np.ndarray, dict]:
        z = data.adata.obsm["X_pca"]
        km = KMeans(n_clusters=config.n_clusters, n_init=config.n_init, max_iter=config.max_iter,
                    random_state=config.seed)
        labels = km.fit_predict(z)
        return z, labels, {"inertia": float(km.inertia_)}

    def cluster_embedding(self, z: np.ndarray, config: KMeansConfig) -> tuple[np.ndarray, dict]:
        """K-means on a given embedding with this config's K and restarts."""
        if config.n_clusters is None:
            raise ValueError("kmeans needs the number of clusters: set n_clusters (K)")
        km = KMeans(n_clusters=config.n_clusters, n_init=config.n_init, max_iter=config.max_iter,
                    random_state=config.seed)
        return km.fit_predict(z).astype(np.int64), {"inertia": float(km.inertia_)}
