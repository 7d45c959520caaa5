"""Experiments with several samples: many files into one dataset, doublets flagged per sample.

:func:`read_many` reads each file with :func:`scclust_core.io.read` (every format, mixed allowed) and joins them
with ``anndata.concat``: ``obs['sample']`` is each file's name (or the names given), cell names are made unique
(``<cell>-<sample>``), and only the genes every file has are kept unless ``join='outer'`` asks for the union
(missing genes are zeros). What each file lost is kept in ``uns['scclust_samples']``.

:func:`flag_doublets` runs scanpy's Scrublet per sample (``batch_key``) on the raw counts and writes
``obs['doublet_score']`` and ``obs['predicted_doublet']``; it never removes a cell (:func:`drop_doublets` does,
when asked). :func:`doublet_clusters` names clusters where predicted doublets are enriched.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

logger = logging.getLogger(__name__)

__all__ = ["SAMPLE_KEY", "read_many", "sample_name", "flag_doublets", "drop_doublets", "doublet_clusters",
           "MIN_SCRUBLET_CELLS"]

SAMPLE_KEY = "sample"
UNS_KEY = "scclust_samples"
#: Scrublet simulates doublets and embeds them with 30 PCs: a sample needs a few times that many cells
MIN_SCRUBLET_CELLS = 100


def sample_name(source: Any, filename: str | None = None) -> str:
    """The sample name of a file: its name without the extensions (``pbmc_v3.h5ad`` → ``pbmc_v3``)."""
    raw = filename or (str(source) if isinstance(source, (str, Path)) else getattr(source, "name", "") or "sample")
    base = PurePosixPath(str(raw).replace("\\", "/")).name
    for ext in (".gz", ".zip", ".tar", ".tgz", ".h5ad", ".h5", ".hdf5", ".csv", ".tsv", ".txt", ".mtx"):
        if base.lower().endswith(ext):
            base = base[: -len(ext)]
    return base or "sample"


def read_many(sources: Sequence[Any], *, names: Sequence[str] | None = None, filenames: Sequence[str] | None = None,
              join: str = "inner", **read_kw: Any) -> AnnData:
    """One AnnData from several files (paths, bytes or uploads); see the module docstring."""
    from . import io as scio

    if len(sources) < 2:
        raise ValueError("read_many needs at least two files (one file is read with io.read)")
    if join not in ("inner", "outer"):
        raise ValueError(f"join must be 'inner' (genes every file has) or 'outer' (all genes, zeros where a file "
                         f"lacks one), got {join!r}")
    fnames = list(filenames) if filenames is not None else [None] * len(sources)
    labels = _unique(list(names) if names is not None else [sample_name(s, f) for s, f in zip(sources, fnames)])
    parts = []
    for src, fname, label in zip(sources, fnames, labels):
        try:
            parts.append(scio.read(src, filename=fname, **read_kw))
        except ValueError as exc:
            raise ValueError(f"Sample '{label}': {exc}") from exc
    return _concat(parts, labels, join)


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return out


def _concat(parts: list[AnnData], labels: list[str], join: str) -> AnnData:
    import anndata

    shared = set(parts[0].var_names)
    for p in parts[1:]:
        shared &= set(p.var_names)
    if join == "inner" and not shared:
        raise ValueError("The files share no gene: check that they use the same gene identifiers (symbols vs "
                         "Ensembl ids) and species, or join them with the union of genes (zeros where missing)")
    lost = {lab: int(p.n_vars - len(shared)) for lab, p in zip(labels, parts)}
    for p in parts:
        p.uns = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = anndata.concat(parts, join=join, label=SAMPLE_KEY, keys=labels, index_unique="-", fill_value=0,
                             merge="same")
    out.obs[SAMPLE_KEY] = pd.Categorical(out.obs[SAMPLE_KEY].astype(str), categories=labels)
    out.uns[UNS_KEY] = {"samples": list(labels), "n_cells": [int(p.n_obs) for p in parts], "join": join,
                        "n_genes": int(out.n_vars), "genes_not_in_every_file": lost}
    return out


def flag_doublets(adata: AnnData, *, batch_key: str | None = SAMPLE_KEY, seed: int = 0) -> pd.DataFrame:
    """Scrublet per sample on the raw counts: writes ``obs['doublet_score']`` / ``obs['predicted_doublet']``;
    returns cells and predicted doublets per sample. A sample too small for Scrublet is a clear error."""
    import scanpy as sc

    from .preprocess import counts_adata

    key = batch_key if batch_key and batch_key in adata.obs else None
    if batch_key and key is None:
        raise ValueError(f"obs has no column {batch_key!r} to find doublets per sample")
    groups = adata.obs[key].astype(str) if key else pd.Series("all", index=adata.obs_names)
    small = groups.value_counts()[lambda c: c < MIN_SCRUBLET_CELLS]
    if len(small):
        raise ValueError(f"Sample {', '.join(f'{k!r} ({v} cells)' for k, v in small.items())} is too small for "
                         f"doublet detection (Scrublet needs at least {MIN_SCRUBLET_CELLS} cells per sample)")
    counts = counts_adata(adata)
    counts.obs["_batch"] = groups.to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.scrublet(counts, batch_key="_batch", random_state=seed, verbose=False)
    adata.obs["doublet_score"] = counts.obs["doublet_score"].to_numpy(dtype=np.float32)
    adata.obs["predicted_doublet"] = counts.obs["predicted_doublet"].fillna(False).to_numpy(dtype=bool)
    table = pd.DataFrame({"sample": groups.to_numpy(), "doublet": adata.obs["predicted_doublet"].to_numpy()})
    return table.groupby("sample", observed=True)["doublet"].agg(cells="size", doublets="sum").reset_index()


def drop_doublets(adata: AnnData) -> AnnData:
    """A copy without the predicted doublets (run :func:`flag_doublets` first); the count is in the log."""
    if "predicted_doublet" not in adata.obs:
        raise ValueError("No doublet flags: run flag_doublets (CLI: --doublets flag) before removing them")
    keep = ~adata.obs["predicted_doublet"].to_numpy(dtype=bool)
    logger.info("Removing %d predicted doublets of %d cells", int((~keep).sum()), adata.n_obs)
    return adata[keep].copy()


def doublet_clusters(labels: Sequence, predicted: Sequence[bool], *, min_share: float = 0.2,
                     fold: float = 2.0) -> dict[str, float]:
    """Clusters whose share of predicted doublets is ≥ ``min_share`` and ≥ ``fold`` × the overall share."""
    lab = pd.Series(np.asarray(labels, dtype=object)).astype(str)
    pred = pd.Series(np.asarray(predicted, dtype=bool))
    overall = float(pred.mean()) if len(pred) else 0.0
    share = pred.groupby(lab.to_numpy()).mean()
    return {str(c): float(s) for c, s in share.items() if s >= min_share and s >= fold * max(overall, 1e-9)}
