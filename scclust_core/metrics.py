"""Clustering metrics as the papers compute them (sklearn ARI, arithmetic NMI, Hungarian accuracy)."""
from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

__all__ = ["ari", "nmi", "ca", "silhouette", "evaluate", "contingency"]


def ari(truth, labels) -> float:
    """Adjusted Rand index."""
    return float(skm.adjusted_rand_score(np.asarray(truth), np.asarray(labels)))


def nmi(truth, labels) -> float:
    """NMI with sklearn's default arithmetic normalisation (what every method's repository uses)."""
    return float(skm.normalized_mutual_info_score(np.asarray(truth), np.asarray(labels), average_method="arithmetic"))


def contingency(truth, labels):
    """Contingency table (rows = truth categories, columns = clusters) as a pandas DataFrame."""
    import pandas as pd

    return pd.crosstab(pd.Series(np.asarray(truth), name="truth"), pd.Series(np.asarray(labels), name="cluster"))


def ca(truth, labels) -> float:
    """Clustering accuracy: best one-to-one matching of clusters to classes (Hungarian algorithm)."""
    from scipy.optimize import linear_sum_assignment

    truth = np.asarray(truth)
    labels = np.asarray(labels)
    table = skm.cluster.contingency_matrix(truth, labels)
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / len(truth))


def silhouette(embedding, labels, *, max_cells: int = 5000, seed: int = 0) -> float:
    """Silhouette on the embedding (Euclidean), subsampled for speed; NaN if fewer than 2 clusters."""
    x = np.asarray(embedding)
    y = np.asarray(labels)
    if len(np.unique(y)) < 2 or len(np.unique(y)) >= len(y):
        return float("nan")
    if len(y) > max_cells:
        idx = np.random.default_rng(seed).choice(len(y), size=max_cells, replace=False)
        x, y = x[idx], y[idx]
        if len(np.unique(y)) < 2:
            return float("nan")
    return float(skm.silhouette_score(x, y))


def evaluate(labels, truth=None, embedding=None) -> dict[str, float]:
    """All metrics that the inputs allow: ``n_clusters`` always; ARI/NMI/CA with ``truth``; silhouette with
    ``embedding``. Cells whose truth is missing (code −1 or NaN) are left out of ARI/NMI/CA."""
    labels = np.asarray(labels)
    out: dict[str, float] = {"n_clusters": float(len(np.unique(labels)))}
    if truth is not None:
        t = np.asarray(truth)
        ok = ~_missing(t)
        out["ari"] = ari(t[ok], labels[ok])
        out["nmi"] = nmi(t[ok], labels[ok])
        out["ca"] = ca(t[ok], labels[ok])
    if embedding is not None:
        out["silhouette"] = silhouette(embedding, labels)
    return out


def _missing(t: np.ndarray) -> np.ndarray:
    if t.dtype.kind in "iu":
        return t < 0
    if t.dtype.kind == "f":
        return np.isnan(t)
    import pandas as pd

    return pd.isna(t)
