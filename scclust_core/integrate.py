"""Several samples in one dataset: the batch key checked, integration applied, and batch mixing measured.

Integration choices (``INTEGRATIONS``), each where a method can use it (the method's ``integrations``):

- ``harmony`` (harmonypy, the default): corrects a low-dimensional embedding — the PCs of the classic methods
  and of every consensus view, or a deep method's learned embedding before its final clustering;
- ``combat`` (``scanpy.pp.combat``): corrects log-normalised expression before HVGs/scaling/PCA (classic
  methods and the consensus; never counts, which the count models must see uncorrected);
- ``bbknn`` (``scanpy.external.pp.bbknn``): a batch-balanced kNN graph for graph clustering (Leiden);
- ``none``.

Mixing is measured on the embedding the final clustering used: batch ASW (scib's definition: per cell
``1 − |silhouette of its batch|``, averaged within each cell group, then over the groups; the groups are the
reference annotation when there is one, else the clusters), iLISI (harmonypy's LISI with perplexity 30, the
median, and scaled to 0–1 by ``(iLISI − 1) / (n_batches − 1)``), and the share of each cell's 15 nearest
neighbours from its own batch. Metrics are computed on at most ``MAX_METRIC_CELLS`` cells (a stratified random
subsample): their cost grows faster than the cells.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

logger = logging.getLogger(__name__)

__all__ = ["INTEGRATIONS", "MIN_BATCH_CELLS", "Batches", "check_batches", "batch_key_candidates", "harmony",
           "combat", "bbknn_graph", "mixing_metrics", "split_warnings", "INTEGRATION_EFFECTS", "integration_effect"]

INTEGRATIONS = ("none", "harmony", "combat", "bbknn")
#: a batch with fewer cells cannot be corrected meaningfully (Harmony's per-batch statistics, ComBat's means)
MIN_BATCH_CELLS = 10
MAX_METRIC_CELLS = 20_000
_KEY_HINTS = ("sample", "batch", "donor", "orig.ident", "orig_ident", "library", "chemistry", "technology", "tech",
              "patient", "individual", "lane", "plate", "run", "condition", "replicate", "dataset")


#: what each integration does for each kind of method (docs/methods.md §0.11), for the Cluster page's caption
INTEGRATION_EFFECTS: dict[tuple[str, str], str] = {
    ("none", "classic"): "No correction: the PCs are clustered as they are; batch mixing is still measured.",
    ("none", "consensus"): "No correction: every view is clustered as it is; batch mixing is still measured.",
    ("none", "deep"): "No correction: the learned embedding is clustered as it is; batch mixing is still measured.",
    ("harmony", "classic"): "Harmony corrects the 50 PCs for the sample/batch before the clustering.",
    ("harmony", "consensus"): "Harmony corrects the PCs of every view before the candidates are clustered.",
    ("harmony", "deep"): "The counts are never corrected (the model needs them raw): Harmony corrects the learned "
                         "embedding after training, and the final clustering is K-means with the run's K (Leiden, "
                         "resolution 1, when K is left empty) on the corrected embedding, not the method's own "
                         "clustering step.",
    ("combat", "classic"): "ComBat corrects the scaled highly variable genes, then the PCA is computed again.",
    ("bbknn", "classic"): "BBKNN builds a batch-balanced kNN graph of the PCs (each cell's neighbours drawn from "
                          "every batch) for the graph clustering.",
}


def integration_effect(integration: str, kind: str) -> str:
    """What ``integration`` does for a method of ``kind`` (``classic``, ``consensus``, ``deep``)."""
    return INTEGRATION_EFFECTS.get((integration, kind), f"{integration} is applied as the method documents it "
                                                        "(docs/methods.md §0.11).")


@dataclass(frozen=True)
class Batches:
    """The batch of every cell (codes into ``names``) under ``key``."""

    key: str
    codes: np.ndarray
    names: list[str]

    @property
    def n(self) -> int:
        return len(self.names)

    def subset(self, rows: np.ndarray) -> "Batches":
        return Batches(self.key, self.codes[rows], self.names)


def check_batches(adata: AnnData, key: str, *, integration: str = "harmony") -> Batches:
    """The batch key as codes, or a ValueError that says what to fix (unknown key, missing values, one batch,
    a batch too small to correct)."""
    if integration not in INTEGRATIONS:
        raise ValueError(f"integration must be one of {', '.join(INTEGRATIONS)}, got {integration!r}")
    if key not in adata.obs:
        raise ValueError(f"obs has no batch column {key!r}; columns: {', '.join(map(str, adata.obs.columns[:12]))}")
    col = adata.obs[key]
    missing = int(col.isna().sum())
    if missing:
        raise ValueError(f"{missing:,} cells have no value in obs[{key!r}]: give every cell its sample/batch (or "
                         "drop those cells) before integrating")
    cat = pd.Categorical(col.astype(str))
    counts = pd.Series(cat).value_counts()
    if len(counts) < 2:
        raise ValueError(f"obs[{key!r}] has a single value ({counts.index[0]!r}): there is nothing to integrate; "
                         "choose another batch key or integration 'none'")
    small = counts[counts < MIN_BATCH_CELLS]
    if integration != "none" and len(small):
        listed = ", ".join(f"{k!r} ({v} cells)" for k, v in small.items())
        raise ValueError(f"Batch {listed} of obs[{key!r}] has fewer than {MIN_BATCH_CELLS} cells, too few to "
                         "correct: merge it with another batch, drop it, or use integration 'none'")
    return Batches(key, np.asarray(cat.codes, dtype=np.int64), [str(c) for c in cat.categories])


def batch_key_candidates(adata: AnnData, *, exclude: tuple[str, ...] = (), max_levels: int = 50) -> list[str]:
    """obs columns that look like a sample/batch key: a known name, or a categorical with 2–``max_levels`` values
    each held by several cells. Offered to the user to confirm, never applied silently; ``exclude`` (the reference
    annotation) is never offered."""
    out = []
    for name in adata.obs.columns:
        if name in exclude:
            continue
        col = adata.obs[name]
        if pd.api.types.is_float_dtype(col):
            continue
        levels = col.nunique(dropna=True)
        hinted = any(h in str(name).lower() for h in _KEY_HINTS)
        categorical = isinstance(col.dtype, pd.CategoricalDtype) or col.dtype == object
        if 2 <= levels <= max_levels and (hinted or (categorical and levels <= 0.5 * adata.n_obs)):
            out.append((0 if hinted else 1, str(name)))
    return [n for _, n in sorted(out)]


def harmony(z: np.ndarray, batches: Batches, *, seed: int = 0) -> np.ndarray:
    """Harmony-corrected copy of embedding ``z`` (cells × dims), float32."""
    import harmonypy

    meta = pd.DataFrame({"batch": pd.Categorical(np.asarray(batches.names)[batches.codes])})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("harmonypy").setLevel(logging.WARNING)
        ho = harmonypy.run_harmony(np.asarray(z, dtype=np.float64), meta, ["batch"], random_state=seed,
                                   verbose=False)
    corrected = np.asarray(ho.Z_corr)
    if corrected.shape != z.shape:
        corrected = corrected.T
    return corrected.astype(np.float32)


def combat(ad: AnnData, batches: Batches) -> None:
    """ComBat on ``ad.X`` (log-normalised expression) in place, by ``batches``."""
    import scanpy as sc

    ad.obs["_batch"] = pd.Categorical(np.asarray(batches.names)[batches.codes])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.combat(ad, key="_batch")
    del ad.obs["_batch"]


def bbknn_graph(z: np.ndarray, batches: Batches, *, n_neighbors: int = 15):
    """Batch-balanced kNN connectivities of ``z`` (scipy CSR), ``neighbors_within_batch`` ≈ n_neighbors / batches."""
    import scanpy as sc

    ad = AnnData(np.asarray(z, dtype=np.float32))
    ad.obsm["X_pca"] = ad.X
    ad.obs["_batch"] = pd.Categorical(np.asarray(batches.names)[batches.codes])
    within = max(1, int(round(n_neighbors / batches.n)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.external.pp.bbknn(ad, batch_key="_batch", neighbors_within_batch=within, n_pcs=z.shape[1],
                             use_annoy=False, use_faiss=False)
    return ad.obsp["connectivities"]


def mixing_metrics(z: np.ndarray, batches: Batches, groups: np.ndarray | None = None, *, seed: int = 0,
                   n_neighbors: int = 15) -> dict[str, float]:
    """``batch_asw``, ``ilisi`` (median), ``ilisi_scaled`` and ``same_batch_share`` of embedding ``z``."""
    from sklearn.metrics import silhouette_samples
    from sklearn.neighbors import NearestNeighbors

    z = np.asarray(z, dtype=np.float32)
    keep = np.isfinite(z).all(axis=1)
    rows = _metric_rows(np.flatnonzero(keep), batches.codes, seed)
    x, b = z[rows], batches.codes[rows]
    g = np.zeros(len(rows), dtype=np.int64) if groups is None else np.asarray(groups)[rows]
    asw = []
    for grp in np.unique(g):
        sel = g == grp
        if len(np.unique(b[sel])) < 2 or sel.sum() < 3:
            continue
        asw.append(float(np.mean(1.0 - np.abs(silhouette_samples(x[sel], b[sel])))))
    k = int(min(n_neighbors, len(x) - 1))
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    same = float((b[idx[:, 1:]] == b[:, None]).mean())
    lisi = _ilisi(x, b)
    n_b = len(np.unique(b))
    return {"batch_asw": float(np.mean(asw)) if asw else float("nan"), "ilisi": lisi,
            "ilisi_scaled": (lisi - 1.0) / (n_b - 1.0) if n_b > 1 else float("nan"), "same_batch_share": same}


def _ilisi(x: np.ndarray, b: np.ndarray) -> float:
    import harmonypy

    perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lisi = harmonypy.compute_lisi(x, pd.DataFrame({"batch": b.astype(str)}), ["batch"], perplexity=perplexity)
    return float(np.median(lisi))


def _metric_rows(rows: np.ndarray, codes: np.ndarray, seed: int) -> np.ndarray:
    """At most MAX_METRIC_CELLS rows, drawn in proportion to each batch (all rows when fewer)."""
    if len(rows) <= MAX_METRIC_CELLS:
        return rows
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(rows, MAX_METRIC_CELLS, replace=False))


def split_warnings(labels: np.ndarray, batches: Batches, *, cluster_share: float = 0.9,
                   sample_share: float = 0.5, names: list[str] | None = None) -> list[str]:
    """A warning per cluster that is ≥ 90 % one sample while that sample is ≤ 50 % of the cells; ``names``: the
    clusters' shown names by label code (the user's renames), else the codes."""
    labels = np.asarray(labels)
    total = np.bincount(batches.codes, minlength=batches.n) / len(batches.codes)
    out = []
    for c in np.unique(labels[labels >= 0]):
        sel = labels == c
        share = np.bincount(batches.codes[sel], minlength=batches.n) / sel.sum()
        top = int(share.argmax())
        if share[top] >= cluster_share and total[top] <= sample_share:
            out.append(f"cluster {c if names is None else names[int(c)]} is {share[top]:.0%} {batches.key} {batches.names[top]!r} (which holds "
                       f"{total[top]:.0%} of the cells): a batch effect or a {batches.key}-specific population")
    return out
