"""Subclustering: run any registered method on the cells of some clusters, keeping every other cell's label.

Two modes, recorded with the result:

- ``recompute``: the subset's counts go through the method's own preprocessing (HVGs, PCA or its input),
  fitted on the subset only — what Seurat's ``FindSubCluster`` on a re-run pipeline and Loupe's *Recluster* do;
  any method; ``obsm['X_' + key_added]`` holds the subset's new embedding (NaN elsewhere).
- ``reuse``: the parent run's embedding (``obsm['X_' + key]``) restricted to the subset is clustered as it is
  — scanpy's ``leiden(restrict_to=…)``; only methods that can cluster a given embedding (classic ones and the
  consensus: :meth:`~scclust_core.methods.ClusteringMethod.reuses_embedding`); ``obsm['X_' + key_added]`` is the
  parent's embedding, so a reuse can nest.

The new column keeps the parent: cluster ``3`` split into ``3.0``, ``3.1``, …; cells outside the subset keep their
parent label, so subclustering nests (``3.1.0``). Several parent clusters subclustered together are named by
their union (``3+5.0``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .methods import Callback, MethodResult, get_method

logger = logging.getLogger(__name__)

__all__ = ["MODES", "MIN_SUBSET_CELLS", "Subset", "subcluster", "check_subset"]

MODES = ("recompute", "reuse")
#: fewer cells than this cannot be clustered meaningfully (and PCA/kNN need a handful)
MIN_SUBSET_CELLS = 10


@dataclass
class Subset:
    """The cells to subcluster: ``obs[key]`` in ``labels``; ``mask`` over all cells once checked."""

    key: str
    labels: list[str]
    mask: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @property
    def prefix(self) -> str:
        return "+".join(self.labels)


def check_subset(adata: AnnData, key: str, labels: Sequence[str], *, n_clusters: int | None = None) -> Subset:
    """Validate a subset before any training: a categorical key, known labels, enough cells (≥ 10 and > K)."""
    if key not in adata.obs:
        raise ValueError(f"obs has no column {key!r}; columns: {', '.join(map(str, adata.obs.columns[:12]))}")
    col = adata.obs[key]
    if not isinstance(col.dtype, pd.CategoricalDtype):
        raise ValueError(f"obs[{key!r}] is not categorical (dtype {col.dtype}): subcluster a column of cluster "
                         "labels (a run's result, or convert it with .astype('category'))")
    wanted = [str(v) for v in labels]
    if not wanted:
        raise ValueError("Name at least one cluster to subcluster")
    known = [str(c) for c in col.cat.categories]
    unknown = [v for v in wanted if v not in known]
    if unknown:
        raise ValueError(f"obs[{key!r}] has no cluster {', '.join(map(repr, unknown))}; its clusters: "
                         f"{', '.join(known[:30])}")
    mask = col.astype(str).isin(wanted).to_numpy() & col.notna().to_numpy()
    n = int(mask.sum())
    if n < MIN_SUBSET_CELLS:
        raise ValueError(f"The subset has {n} cells: at least {MIN_SUBSET_CELLS} are needed to subcluster")
    if n_clusters is not None and n_clusters >= n:
        raise ValueError(f"K={n_clusters} is not smaller than the subset's {n} cells: choose a smaller K")
    return Subset(key, wanted, mask)


def subcluster(adata: AnnData, name: str, *, subset: tuple[str, Sequence[str]], mode: str = "recompute",
               preset: str | None = None, config: Any = None, key_added: str | None = None,
               callback: Callback | None = None, label_key: str | None = None, **overrides: Any) -> MethodResult:
    """Subcluster ``subset = (key, [labels])`` of ``adata`` with method ``name``; writes ``obs[key_added]``
    (default ``key + '_sub'``), ``uns[key_added]`` (method, mode, parent, params, metrics) and
    ``obsm['X_' + key_added]`` (see the module docstring). Returns the method's result on the subset."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    method = get_method(name)
    cfg = config if config is not None else method.default_config(preset, **overrides)
    key, labels = subset
    sub = check_subset(adata, key, labels, n_clusters=cfg.n_clusters)
    key_added = key_added or f"{key}_sub"
    if mode == "reuse":
        result = _reuse(adata, method, cfg, sub)
    else:
        result = method.fit(adata[sub.mask].copy(), cfg, callback=callback, label_key=label_key)
    _write(adata, result, sub, key_added, mode=mode, preset=preset)
    return result


def _reuse(adata: AnnData, method, cfg, sub: Subset) -> MethodResult:
    if not type(method).reuses_embedding():
        method.cluster_embedding(np.zeros((0, 0)), cfg)  # raises the method's own "use recompute" message
    emb_key = f"X_{sub.key}"
    if emb_key not in adata.obsm:
        raise ValueError(f"mode 'reuse' needs the parent run's embedding obsm[{emb_key!r}], which this data does "
                         "not have: use mode 'recompute'")
    z = np.asarray(adata.obsm[emb_key])[sub.mask]
    if not np.isfinite(z).all():
        raise ValueError(f"obsm[{emb_key!r}] has no embedding for some of the subset's cells: use mode 'recompute'")
    cfg.validate()
    labels, extras = method.cluster_embedding(z, cfg)
    labels = _by_size(np.asarray(labels))
    n = int(sub.mask.sum())
    return MethodResult(method=method.name, embedding=z.astype(np.float32), labels=labels,
                        cell_index=np.arange(n, dtype=np.int64), n_input_cells=n, history=[], snapshots=[],
                        snapshot_index=np.arange(min(n, 1), dtype=np.int64), config=cfg.to_dict(), metrics={},
                        status="completed", device="cpu", seconds=0.0, started_at="", finished_at="",
                        label_key=None, extras=extras)


def _write(adata: AnnData, result: MethodResult, sub: Subset, key_added: str, *, mode: str,
           preset: str | None) -> None:
    parent = adata.obs[sub.key].astype(object).where(adata.obs[sub.key].notna(), None)
    values = np.array([None if v is None else str(v) for v in parent], dtype=object)
    child = result.full_labels()  # -1: dropped by the method's QC inside the subset
    idx = np.flatnonzero(sub.mask)
    values[idx] = [f"{sub.prefix}.{c}" if c >= 0 else f"{sub.prefix}.unassigned" for c in child]
    old = [str(c) for c in adata.obs[sub.key].cat.categories if str(c) not in sub.labels]
    new = sorted({v for v in values[idx]}, key=_natural)
    adata.obs[key_added] = pd.Categorical(values, categories=old + new)
    emb = np.full((adata.n_obs, result.embedding.shape[1]), np.nan, dtype=np.float32)
    emb[idx] = result.full_embedding()
    if mode == "reuse":  # the parent's embedding everywhere: what the clustering used, and what a nested reuse needs
        emb = np.asarray(adata.obsm[f"X_{sub.key}"], dtype=np.float32).copy()
    adata.obsm[f"X_{key_added}"] = emb
    adata.uns[key_added] = {
        "method": result.method, "mode": mode, "parent_key": sub.key, "parent_labels": list(sub.labels),
        "params": {k: ("" if v is None else (list(v) if isinstance(v, tuple) else v)) for k, v in result.config.items()},
        "preset": preset or "", "metrics": {k: float(v) for k, v in result.metrics.items()},
        "status": result.status, "n_cells": int(sub.mask.sum()),
    }


def _by_size(labels: np.ndarray) -> np.ndarray:
    """Labels 0..K-1 with 0 the largest cluster, as ``fit`` numbers its results."""
    _, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    rank = np.empty(len(counts), dtype=np.int64)
    rank[np.argsort(-counts, kind="stable")] = np.arange(len(counts))
    return rank[inv]


def _natural(label: str) -> tuple:
    """Numbers in numeric order, before words ('3.2' < '3.10' < '3.unassigned')."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in label.replace("+", ".").split("."))
