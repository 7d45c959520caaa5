"""Clustering metrics as the papers compute them (sklearn ARI, arithmetic NMI, Hungarian accuracy).

Scores against a reference annotation only mean something when the annotation has usable labels: at least
two labelled cells in at least two categories. Otherwise sklearn happily returns ARI = NMI = 1.0 (one
category against one cluster), which reads as a perfect result. Here such a score is NaN and a
:class:`UnusableLabelsWarning` says why; :func:`evaluate` also appends the reason to a caller's warning list
so the app, CLI and bench can show it next to the (missing) numbers.
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn import metrics as skm

__all__ = ["ari", "nmi", "ca", "silhouette", "evaluate", "contingency", "label_problem", "UnusableLabelsWarning"]


class UnusableLabelsWarning(UserWarning):
    """The reference annotation cannot score a clustering (all missing, one category, < 2 labelled cells)."""


def label_problem(truth) -> str | None:
    """Why ``truth`` cannot score a clustering, or ``None`` when it can.

    Missing values (NaN, None, negative integer codes) do not count as labels.
    """
    t = np.asarray(truth)
    kept = t[~_missing(t)] if t.size else t
    n_cats = len(np.unique(kept.astype(str))) if kept.size else 0
    if kept.size < 2:
        return (f"the reference annotation has {kept.size} labelled cell{'' if kept.size == 1 else 's'} "
                f"(of {t.size}), so ARI/NMI/accuracy are undefined (NaN)")
    if n_cats < 2:
        return (f"the reference annotation has a single category among its {kept.size} labelled cells, so "
                "ARI/NMI/accuracy are undefined (NaN)")
    return None


def _usable(truth, labels) -> tuple[np.ndarray, np.ndarray] | None:
    """Truth and labels restricted to labelled cells; ``None`` (with a warning) when not scorable."""
    t = np.asarray(truth)
    y = np.asarray(labels)
    if t.shape[0] != y.shape[0]:
        raise ValueError(f"truth has {t.shape[0]} entries but labels have {y.shape[0]}: they must match cell by cell")
    problem = label_problem(t)
    if problem is not None:
        warnings.warn(problem[0].upper() + problem[1:], UnusableLabelsWarning, stacklevel=3)
        return None
    ok = ~_missing(t)
    return t[ok], y[ok]


def ari(truth, labels) -> float:
    """Adjusted Rand index over labelled cells; NaN when the annotation has no usable labels."""
    pair = _usable(truth, labels)
    return float("nan") if pair is None else float(skm.adjusted_rand_score(*pair))


def nmi(truth, labels) -> float:
    """NMI with sklearn's default arithmetic normalisation (what every method's repository uses); NaN when the
    annotation has no usable labels."""
    pair = _usable(truth, labels)
    if pair is None:
        return float("nan")
    return float(skm.normalized_mutual_info_score(*pair, average_method="arithmetic"))


def contingency(truth, labels):
    """Contingency table (rows = truth categories, columns = clusters) as a pandas DataFrame."""
    import pandas as pd

    return pd.crosstab(pd.Series(np.asarray(truth), name="truth"), pd.Series(np.asarray(labels), name="cluster"))


def ca(truth, labels) -> float:
    """Clustering accuracy: best one-to-one matching of clusters to classes (Hungarian algorithm); NaN when the
    annotation has no usable labels."""
    from scipy.optimize import linear_sum_assignment

    pair = _usable(truth, labels)
    if pair is None:
        return float("nan")
    t, y = pair
    table = skm.cluster.contingency_matrix(t, y)
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / len(t))


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


def evaluate(labels, truth=None, embedding=None, *, warnings_out: list[str] | None = None) -> dict[str, float]:
    """All metrics that the inputs allow: ``n_clusters`` always; ARI/NMI/CA with ``truth``; silhouette with
    ``embedding``. Cells whose truth is missing (code −1 or NaN) are left out of ARI/NMI/CA.

    When ``truth`` has no usable labels, ARI/NMI/CA are NaN and the reason is appended to ``warnings_out``
    (when given) so callers can show it; a :class:`UnusableLabelsWarning` is raised either way.
    """
    labels = np.asarray(labels)
    out: dict[str, float] = {"n_clusters": float(len(np.unique(labels)))}
    if truth is not None:
        problem = label_problem(truth)
        if problem is not None:
            out.update(ari=float("nan"), nmi=float("nan"), ca=float("nan"))
            msg = problem[0].upper() + problem[1:]
            warnings.warn(msg, UnusableLabelsWarning, stacklevel=2)
            if warnings_out is not None and msg not in warnings_out:
                warnings_out.append(msg)
        else:
            out["ari"] = ari(truth, labels)
            out["nmi"] = nmi(truth, labels)
            out["ca"] = ca(truth, labels)
    if embedding is not None:
        out["silhouette"] = silhouette(embedding, labels)
    return out


def _missing(t: np.ndarray) -> np.ndarray:
    if t.dtype.kind in "iu":
        return t < 0
    if t.dtype.kind == "f":
        return np.isnan(t)
    import pandas as pd

    return np.asarray(pd.isna(t), dtype=bool)
