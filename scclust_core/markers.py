"""Marker genes per cluster: Wilcoxon one-vs-rest (scanpy ``rank_genes_groups``) as a tidy table.

The statistics are computed on log-normalised expression: when ``X`` holds raw counts a normalised copy is made
(``normalize_total`` to the median library size, ``log1p``); the caller's AnnData is never modified.
"""
from __future__ import annotations

import logging
import warnings
from typing import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

logger = logging.getLogger(__name__)

__all__ = ["lognormalized", "rank_markers", "top_genes", "expression_summary", "expression_long"]

COLUMNS = ["cluster", "rank", "gene", "score", "logfoldchange", "pval", "pval_adj", "pct_in", "pct_out"]


def lognormalized(adata: AnnData) -> AnnData:
    """A copy with log-normalised ``X`` (normalize_total + log1p when X holds counts; else X as is)."""
    import scanpy as sc

    from .preprocess import is_integer_matrix

    out = AnnData(adata.X.copy(), obs=adata.obs[[]].copy(), var=adata.var[[]].copy())
    if is_integer_matrix(out.X):
        out.X = out.X.astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sc.pp.normalize_total(out)
        sc.pp.log1p(out)
        out.uns["normalized_here"] = True
    return out


def rank_markers(adata: AnnData, labels: Sequence, *, n_genes: int | None = 50, lognorm: AnnData | None = None,
                 min_cells: int = 3) -> pd.DataFrame:
    """Wilcoxon rank-sum test of each cluster against all other cells.

    Parameters
    ----------
    adata
        Cells × genes (counts or log-normalised).
    labels
        Cluster of every cell (NaN = left out), e.g. a run's labels with renames/merges applied.
    n_genes
        Top genes kept per cluster (``None``: all genes).
    lognorm
        A precomputed :func:`lognormalized` copy (saves the normalisation when called repeatedly).
    min_cells
        Clusters with fewer cells are left out (the test needs a few cells on each side).

    Returns
    -------
    Tidy table with one row per (cluster, gene): ``cluster, rank, gene, score, logfoldchange, pval,
    pval_adj`` (Benjamini-Hochberg), ``pct_in`` / ``pct_out`` (fraction of cells expressing inside / outside).
    """
    import scanpy as sc

    lab = pd.Series(labels).reset_index(drop=True)
    if len(lab) != adata.n_obs:
        raise ValueError(f"{len(lab)} labels for {adata.n_obs} cells")
    ln = lognorm if lognorm is not None else lognormalized(adata)
    keep = lab.notna().to_numpy()
    sizes = lab[keep].astype(str).value_counts()
    groups = [g for g in sizes.index if sizes[g] >= min_cells]
    if len(groups) < 2:
        raise ValueError("Markers need at least two clusters with at least "
                         f"{min_cells} cells each (found {len(groups)})")
    sub = ln[keep].copy()
    cats = [c for c in (lab.cat.categories.astype(str) if isinstance(lab.dtype, pd.CategoricalDtype)
                        else sorted(sizes.index)) if c in sizes.index]
    sub.obs["group"] = pd.Categorical(lab[keep].astype(str).to_numpy(), categories=cats)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.rank_genes_groups(sub, "group", groups=groups, reference="rest", method="wilcoxon", pts=True,
                                key_added="scclust_markers")
        df = sc.get.rank_genes_groups_df(sub, group=None, key="scclust_markers")
    if "group" not in df:  # a single group comes back without the group column
        df.insert(0, "group", groups[0])
    df = df.rename(columns={"group": "cluster", "names": "gene", "scores": "score", "logfoldchanges": "logfoldchange",
                            "pvals": "pval", "pvals_adj": "pval_adj", "pct_nz_group": "pct_in",
                            "pct_nz_reference": "pct_out"})
    df["cluster"] = df["cluster"].astype(str)
    df["rank"] = df.groupby("cluster").cumcount() + 1
    if n_genes is not None:
        df = df[df["rank"] <= n_genes]
    order = {c: i for i, c in enumerate(cats)}
    df = df.sort_values(["cluster", "rank"], key=lambda s: s.map(order) if s.name == "cluster" else s)
    for c in COLUMNS:
        if c not in df:
            df[c] = np.nan
    return df[COLUMNS].reset_index(drop=True)


def top_genes(markers: pd.DataFrame, n: int = 3) -> list[str]:
    """The first ``n`` genes of every cluster (unique, cluster order kept)."""
    genes = markers[markers["rank"] <= n]["gene"].tolist()
    return list(dict.fromkeys(genes))


def _dense_cols(x, idx) -> np.ndarray:
    m = x[:, idx]
    return np.asarray(m.toarray() if sp.issparse(m) else m, dtype=np.float64)


def expression_summary(lognorm: AnnData, labels: Sequence, genes: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean log-expression and fraction of expressing cells per cluster (rows) and gene (columns)."""
    genes = [g for g in genes if g in lognorm.var_names]
    if not genes:
        raise ValueError("None of the chosen genes is in the data")
    lab = pd.Series(labels).reset_index(drop=True)
    idx = lognorm.var_names.get_indexer(genes)
    x = _dense_cols(lognorm.X, idx)
    ok = lab.notna().to_numpy()
    frame = pd.DataFrame(x[ok], columns=genes)
    grp = lab[ok].astype(str).to_numpy()
    mean = frame.groupby(grp).mean()
    frac = (frame > 0).groupby(grp).mean()
    cats = [str(c) for c in (lab.cat.categories if isinstance(lab.dtype, pd.CategoricalDtype) else mean.index)]
    cats = [c for c in cats if c in mean.index]
    return mean.loc[cats], frac.loc[cats]


def expression_long(lognorm: AnnData, labels: Sequence, genes: Sequence[str]) -> pd.DataFrame:
    """Long table (cluster, gene, expression) for violin plots."""
    genes = [g for g in genes if g in lognorm.var_names]
    lab = pd.Series(labels).reset_index(drop=True)
    ok = lab.notna().to_numpy()
    x = _dense_cols(lognorm.X, lognorm.var_names.get_indexer(genes))[ok]
    cl = lab[ok].astype(str).to_numpy()
    parts = [pd.DataFrame({"cluster": cl, "gene": g, "expression": x[:, i]}) for i, g in enumerate(genes)]
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["cluster", "gene", "expression"])
    if isinstance(lab.dtype, pd.CategoricalDtype):
        out["cluster"] = pd.Categorical(out["cluster"], categories=[str(c) for c in lab.cat.categories])
    return out
