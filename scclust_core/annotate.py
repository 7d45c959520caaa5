"""From clusters to cell types: name clusters from marker sets, or cells from a labelled reference.

Marker sets (:func:`read_marker_sets`: a CSV ``cell_type,gene[,weight]`` or a GMT file; or a bundled set,
:func:`bundled_marker_sets`) are scored per cell (:func:`score_cells`: the mean standardised log-expression of
the set's genes, or scanpy's ``score_genes``) and averaged per cluster. A cluster is proposed the type with
the highest mean score when that score is positive and beats the second by at least ``min_margin``; otherwise
``unassigned`` — never forced. Nothing is renamed here: :func:`apply_names` writes the accepted names.

Reference transfer (:func:`transfer_labels`) works on the genes both files share: the reference's HVGs are
scaled with the reference's own means and deviations, its PCA is fitted on the reference only and the query is
projected into it (as ``sc.tl.ingest`` does); each query cell takes the distance-weighted vote of its nearest
reference cells, and the vote share is its confidence. ``method="ingest"`` calls ``sc.tl.ingest`` itself
(no confidence) for comparison.
"""
from __future__ import annotations

import csv
import io as pyio
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .markers import lognormalized

logger = logging.getLogger(__name__)

__all__ = ["MarkerSets", "read_marker_sets", "bundled_marker_sets", "load_bundled", "match_genes", "score_cells",
           "propose_names", "apply_names", "transfer_labels", "Transfer", "UNASSIGNED"]

UNASSIGNED = "unassigned"
#: a cluster is named only when its best type's mean score beats the second by this much (standard deviations of
#: the markers' expression for the default z-score; log-expression units for score_genes); chosen before measuring
DEFAULT_MIN_MARGIN = 0.05
_BUNDLED = Path(__file__).resolve().parent / "marker_sets"


@dataclass
class MarkerSets:
    """Cell type → {gene: weight}; weights > 0 mark a type, < 0 speak against it. ``source`` says where from."""

    types: dict[str, dict[str, float]]
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.types:
            raise ValueError(f"No marker genes in {self.source or 'the marker sets'}: give at least one "
                             "cell type with one gene (CSV columns cell_type,gene[,weight] or a GMT file)")


def read_marker_sets(source: str | Path | bytes, filename: str | None = None) -> MarkerSets:
    """Marker sets from a CSV/TSV (``cell_type,gene[,weight]``, header optional) or a GMT file (by extension)."""
    name = filename or (Path(source).name if isinstance(source, (str, Path)) else "markers.csv")
    raw = source if isinstance(source, bytes) else Path(source).read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"'{name}' is not UTF-8 text: save the marker list as a plain CSV or GMT file") from None
    types = _read_gmt(text) if name.lower().endswith(".gmt") else _read_marker_table(text, name)
    return MarkerSets(types, source=name)


def _read_gmt(text: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("\t")]
        if len(parts) >= 3 and parts[0]:
            out.setdefault(parts[0], {}).update({g: 1.0 for g in parts[2:] if g})
    return out


def _read_marker_table(text: str, name: str) -> dict[str, dict[str, float]]:
    sample = text[:4096]
    delim = "\t" if sample.count("\t") > sample.count(",") else ","
    rows = [r for r in csv.reader(pyio.StringIO(text), delimiter=delim) if r and any(c.strip() for c in r)]
    if rows and rows[0][0].strip().lower() in ("cell_type", "celltype", "type", "cell type"):
        rows = rows[1:]
    out: dict[str, dict[str, float]] = {}
    for i, r in enumerate(rows, start=1):
        if len(r) < 2 or not r[0].strip() or not r[1].strip():
            raise ValueError(f"'{name}' row {i} needs a cell type and a gene (columns cell_type,gene[,weight]); "
                             f"got {r!r}")
        try:
            weight = float(r[2]) if len(r) > 2 and r[2].strip() else 1.0
        except ValueError:
            raise ValueError(f"'{name}' row {i}: the weight {r[2]!r} is not a number") from None
        out.setdefault(r[0].strip(), {})[r[1].strip()] = weight
    return out


def bundled_marker_sets() -> list[str]:
    """Names of the marker sets shipped with scclust (``marker_sets/*.csv``; sources in its README)."""
    return sorted(p.stem for p in _BUNDLED.glob("*.csv"))


def load_bundled(name: str) -> MarkerSets:
    path = _BUNDLED / f"{name}.csv"
    if not path.exists():
        raise ValueError(f"No bundled marker set {name!r}; bundled: {', '.join(bundled_marker_sets())}")
    sets = read_marker_sets(path)
    sets.source = f"bundled: {name}"
    return sets


def match_genes(markers: MarkerSets, var_names: Sequence[str]) -> tuple[dict[str, dict[str, float]], dict[str, list[str]]]:
    """Marker genes found in the data, matched case-insensitively (human ``CD3E`` ~ mouse ``Cd3e``), and those
    missing per type. Types with no gene in the data are left out of the first dict."""
    lookup: dict[str, str] = {}
    for v in map(str, var_names):
        lookup.setdefault(v.lower(), v)
    found: dict[str, dict[str, float]] = {}
    missing: dict[str, list[str]] = {}
    for cell_type, genes in markers.types.items():
        hit = {lookup[g.lower()]: w for g, w in genes.items() if g.lower() in lookup}
        missing[cell_type] = [g for g in genes if g.lower() not in lookup]
        if hit:
            found[cell_type] = hit
    if not found:
        raise ValueError(f"None of the {sum(len(g) for g in markers.types.values())} marker genes of "
                         f"{markers.source or 'the marker sets'} is in the data (its genes look like "
                         f"{', '.join(map(str, list(var_names)[:3]))}): use markers of this species with the same "
                         "gene identifiers (symbols vs Ensembl ids)")
    return found, missing


def score_cells(adata: AnnData, markers: MarkerSets, *, lognorm: AnnData | None = None, seed: int = 0,
                scoring: str = "zscore") -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Per cell and type a marker score (positive markers minus negative ones); and the missing genes.

    ``zscore`` (default): the mean of the markers' log-expression standardised per gene across the cells (clipped
    at ±10). Each gene counts the same whatever its level, so one very abundant marker — insulin, which ambient
    RNA puts in every islet cell — cannot make every cluster score as its type. ``score_genes``: scanpy's score
    (mean log-expression minus expression-matched control genes), which such a gene dominates.
    """
    import scanpy as sc

    found, missing = match_genes(markers, adata.var_names)
    ln = lognorm if lognorm is not None else lognormalized(adata)
    if scoring not in ("zscore", "score_genes"):
        raise ValueError(f"scoring must be 'zscore' or 'score_genes', got {scoring!r}")
    genes_all = sorted({g for genes in found.values() for g in genes})
    z = _zscores(ln[:, genes_all].X) if scoring == "zscore" else None
    col = {g: i for i, g in enumerate(genes_all)}
    scores = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cell_type, genes in found.items():
            total = np.zeros(ln.n_obs)
            for sign, chosen in ((1.0, [g for g, w in genes.items() if w > 0]),
                                 (-1.0, [g for g, w in genes.items() if w < 0])):
                if not chosen:
                    continue
                if z is not None:
                    total += sign * z[:, [col[g] for g in chosen]].mean(axis=1)
                else:
                    sc.tl.score_genes(ln, chosen, score_name="_s", random_state=seed, use_raw=False)
                    total += sign * ln.obs["_s"].to_numpy(dtype=float)
            scores[cell_type] = total
    return pd.DataFrame(scores, index=adata.obs_names), missing


def _zscores(x) -> np.ndarray:
    x = _dense(x).astype(np.float64)
    sd = x.std(axis=0)
    sd[sd == 0] = 1.0
    return np.clip((x - x.mean(axis=0)) / sd, -10, 10)


def propose_names(adata: AnnData, groupby: str, markers: MarkerSets, *, min_margin: float = DEFAULT_MIN_MARGIN,
                  seed: int = 0, scoring: str = "zscore") -> pd.DataFrame:
    """One row per cluster of ``obs[groupby]``: the proposed type (or ``unassigned``), its mean score, the
    runner-up, the margin between them, the supporting markers, the cell count, and the genes not found.

    ``attrs['missing']`` holds the missing genes per type (per-cell scores: :func:`score_cells`).
    A type none of whose *positive* markers is in the data is never proposed.
    """
    labels = _cluster_column(adata, groupby)
    ln = lognormalized(adata)
    scores, missing = score_cells(adata, markers, lognorm=ln, seed=seed, scoring=scoring)
    found, _ = match_genes(markers, adata.var_names)
    scores = scores[[t for t in scores.columns if any(w > 0 for w in found[t].values())]]
    if scores.shape[1] == 0:
        raise ValueError("None of the marker sets has a positive marker gene in the data: nothing to propose")
    rows = []
    for cluster in labels.cat.categories:
        in_c = (labels == cluster).to_numpy()
        if not in_c.any():
            continue
        means = scores[in_c].mean().sort_values(ascending=False)
        best, score = str(means.index[0]), float(means.iloc[0])
        second, score2 = (str(means.index[1]), float(means.iloc[1])) if len(means) > 1 else ("", float("nan"))
        margin = score - score2 if len(means) > 1 else score
        ok = score > 0 and margin >= min_margin
        rows.append({"cluster": str(cluster), "proposed": best if ok else UNASSIGNED, "best_type": best,
                     "score": score, "second_type": second, "second_score": score2, "margin": margin,
                     "supporting_markers": ", ".join(_supporting(ln, in_c, found[best])), "n_cells": int(in_c.sum())})
    table = pd.DataFrame(rows)
    table.attrs["missing"] = missing
    table.attrs["source"] = markers.source
    return table


def _supporting(ln: AnnData, in_c: np.ndarray, genes: dict[str, float], top: int = 5) -> list[str]:
    """The proposed type's positive markers most raised in the cluster over the other cells."""
    pos = [g for g, w in genes.items() if w > 0]
    if not pos:
        return []
    x = ln[:, pos].X
    x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
    rest = x[~in_c].mean(axis=0) if (~in_c).any() else np.zeros(len(pos))
    diff = x[in_c].mean(axis=0) - rest
    order = np.argsort(-diff)
    return [pos[i] for i in order[:top] if diff[i] > 0]


def apply_names(adata: AnnData, groupby: str, table: pd.DataFrame, *, accepted: dict[str, str] | None = None) -> str:
    """Write ``obs[groupby + '_cell_type']`` (the accepted name per cell; default: the proposals), its cluster's
    margin in ``obs[groupby + '_cell_type_score']`` and the evidence in ``uns[groupby + '_cell_type']``."""
    labels = _cluster_column(adata, groupby).astype(str)
    names = dict(zip(table["cluster"].astype(str), table["proposed"].astype(str)))
    names.update({str(k): str(v) for k, v in (accepted or {}).items()})
    margin = dict(zip(table["cluster"].astype(str), table["margin"].astype(float)))
    key = f"{groupby}_cell_type"
    adata.obs[key] = pd.Categorical(labels.map(names).fillna(UNASSIGNED).to_numpy())
    adata.obs[f"{key}_score"] = labels.map(margin).astype(float).to_numpy()
    adata.uns[key] = {"evidence": {c: _plain(table[c]) for c in table.columns}, "source": table.attrs.get("source", ""),
                      "accepted": {str(k): str(v) for k, v in names.items()}}
    return key


def _plain(col: pd.Series) -> np.ndarray:
    return col.to_numpy(dtype=object).astype(str) if col.dtype == object else col.to_numpy()


def _cluster_column(adata: AnnData, groupby: str) -> pd.Series:
    if groupby not in adata.obs:
        raise ValueError(f"obs has no column {groupby!r}; columns: {', '.join(map(str, adata.obs.columns[:12]))}")
    col = adata.obs[groupby]
    if not isinstance(col.dtype, pd.CategoricalDtype):
        if pd.api.types.is_float_dtype(col) and col.nunique() > 200:
            raise ValueError(f"obs[{groupby!r}] holds continuous values, not clusters: pick a cluster column")
        col = col.astype(str).astype("category")
    return col


# ------------------------------------------------------------------------------------------------ reference
@dataclass
class Transfer:
    """Per-cell labels and confidence from a reference, and what the page reports beside them."""

    labels: pd.Series
    confidence: pd.Series
    n_shared_genes: int
    reference_types_unused: list[str]
    notes: list[str]

    def per_cluster(self, clusters: pd.Series) -> pd.DataFrame:
        """Majority transferred label and its purity (share of the cluster's cells) per cluster."""
        rows = []
        for c in pd.Categorical(clusters).categories:
            sel = (clusters.astype(str) == str(c)).to_numpy()
            counts = self.labels[sel].value_counts()
            if counts.empty:
                continue
            rows.append({"cluster": str(c), "majority": str(counts.index[0]), "purity": float(counts.iloc[0] / sel.sum()),
                         "mean_confidence": float(self.confidence[sel].mean()), "n_cells": int(sel.sum())})
        return pd.DataFrame(rows)


def transfer_labels(query: AnnData, reference: AnnData, reference_key: str, *, n_neighbors: int = 15,
                    n_pcs: int = 50, n_top_genes: int = 2000, method: str = "knn_pca") -> Transfer:
    """Label every query cell from the reference's ``obs[reference_key]`` (see the module docstring)."""
    shared = _shared_genes(query, reference)
    if reference_key not in reference.obs:
        raise ValueError(f"The reference has no column {reference_key!r}; its obs columns: "
                         f"{', '.join(map(str, reference.obs.columns[:12])) or 'none'}")
    ref_labels = reference.obs[reference_key].astype(str)
    keep = (reference.obs[reference_key].notna()).to_numpy()
    if ref_labels[keep].nunique() < 2:
        raise ValueError(f"obs[{reference_key!r}] of the reference has fewer than two labels: nothing to transfer")
    ref = _prepared(reference[keep, shared].copy(), "reference")
    qry = _prepared(query[:, shared].copy(), "query")
    notes = [f"{len(shared):,} genes shared ({query.n_vars - len(shared):,} query genes not in the reference)"]
    if method == "ingest":
        labels = _ingest(qry, ref, ref_labels[keep], n_pcs, n_top_genes)
        conf = pd.Series(np.nan, index=query.obs_names)
    elif method == "knn_pca":
        labels, conf = _knn_pca(qry, ref, ref_labels[keep].to_numpy(), n_neighbors, n_pcs, n_top_genes)
    else:
        raise ValueError(f"method must be 'knn_pca' or 'ingest', got {method!r}")
    labels = pd.Series(labels, index=query.obs_names, dtype="category")
    unused = sorted(set(ref_labels[keep]) - set(labels.astype(str)))
    return Transfer(labels, pd.Series(np.asarray(conf, dtype=float), index=query.obs_names), len(shared), unused, notes)


def _shared_genes(query: AnnData, reference: AnnData) -> list[str]:
    ref_genes = set(map(str, reference.var_names))
    shared = [g for g in map(str, query.var_names) if g in ref_genes]
    if len(shared) >= 20:
        return shared
    low = {g.lower() for g in ref_genes}
    if sum(g.lower() in low for g in map(str, query.var_names)) >= 20:
        raise ValueError("The query and the reference share genes only when letter case is ignored (e.g. human "
                         "CD3E vs mouse Cd3e): the reference looks like another species; use a reference of the "
                         "same species, or map the genes to orthologues first")
    raise ValueError(f"The query and the reference share {len(shared)} genes (at least 20 needed): check that both "
                     "use the same gene identifiers (symbols vs Ensembl ids) and the same species")


def _prepared(ad: AnnData, who: str) -> AnnData:
    """Log-normalised dense float32 copy (counts are normalised here; scaled data is refused)."""
    import scipy.sparse as sp

    x = ad.X
    lo = x.min() if not sp.issparse(x) else (x.data.min() if x.nnz else 0)
    if lo < 0:
        raise ValueError(f"The {who} holds negative values (scaled data): give its counts or log-normalised "
                         "expression (layers['counts'] or .raw)")
    return lognormalized(ad)


def _knn_pca(qry: AnnData, ref: AnnData, ref_labels: np.ndarray, k: int, n_pcs: int,
             n_top: int) -> tuple[np.ndarray, np.ndarray]:
    import scanpy as sc
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.highly_variable_genes(ref, n_top_genes=min(n_top, ref.n_vars), flavor="seurat")
    genes = ref.var_names[ref.var["highly_variable"].to_numpy()]
    xr, xq = _dense(ref[:, genes].X), _dense(qry[:, genes].X)
    mu, sd = xr.mean(axis=0), xr.std(axis=0)
    sd[sd == 0] = 1.0
    zr, zq = np.clip((xr - mu) / sd, -10, 10), np.clip((xq - mu) / sd, -10, 10)
    pca = PCA(n_components=int(min(n_pcs, zr.shape[0] - 1, zr.shape[1])), random_state=0).fit(zr)
    pr, pq = pca.transform(zr), pca.transform(zq)
    dist, idx = NearestNeighbors(n_neighbors=int(min(k, len(pr)))).fit(pr).kneighbors(pq)
    w = 1.0 / np.maximum(dist, 1e-6)
    classes, codes = np.unique(ref_labels, return_inverse=True)
    votes = np.zeros((len(pq), len(classes)))
    np.add.at(votes, (np.repeat(np.arange(len(pq)), idx.shape[1]), codes[idx].ravel()), w.ravel())
    share = votes / votes.sum(axis=1, keepdims=True)
    best = share.argmax(axis=1)
    return classes[best], share[np.arange(len(best)), best]


def _ingest(qry: AnnData, ref: AnnData, ref_labels: pd.Series, n_pcs: int, n_top: int) -> np.ndarray:
    import scanpy as sc

    ref.obs["_label"] = pd.Categorical(ref_labels.to_numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.highly_variable_genes(ref, n_top_genes=min(n_top, ref.n_vars), flavor="seurat")
        ref, qry = ref[:, ref.var["highly_variable"]].copy(), qry[:, ref.var["highly_variable"].to_numpy()].copy()
        sc.pp.pca(ref, n_comps=int(min(n_pcs, ref.n_obs - 1, ref.n_vars - 1)))
        sc.pp.neighbors(ref)
        sc.tl.ingest(qry, ref, obs="_label", embedding_method="pca")
    return qry.obs["_label"].astype(str).to_numpy()


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float32)
