"""Consensus of candidate partitions: one partition, K estimated, per-cell confidence, candidate agreement.

All functions take ``partitions``, an int array ``[m candidates, n cells]`` (each row one clustering of the same
cells; label values are arbitrary per row) and never use reference labels.

Rule ``select`` (the default) when K is given is a supra-consensus (Strehl & Ghosh, JMLR 2002, with ARI in
place of NMI): it forms a few *proposals* — the average-linkage consensus of all candidates, of the half of the
candidates that agree most with the others, and of the candidates that have exactly K clusters, plus each of
those K-cluster candidates itself — and keeps the proposal with the highest mean ARI with all candidates. No
label is used: the score is agreement with the candidate set. It guards against the failure seen on the mouse
bladder file, where the average-linkage cut at K = 16 spent clusters on 2–3 outlier cells and split the largest
type (ARI 0.56 while most single K-means candidates reached 0.5–0.65). When K is estimated, ``select`` is the
average-linkage consensus at the estimated K (selecting among K-cluster candidates there scored lower).

Average linkage (``average_linkage``) is evidence accumulation (Fred & Jain, IEEE TPAMI 2005; the SC3 idea): the
co-association of two cells is the fraction of candidates that put them together, and average linkage on
``1 - co-association`` gives the dendrogram. The co-association of two cells is one minus the Hamming distance
of their label vectors, so it is computed from the label vectors of at most ``max_cells`` sampled cells (never
an N × N matrix for the whole data); the other cells join the consensus cluster with which they have the
highest mean co-association, computed through the cell × cluster incidence matrix (N × ΣK, sparse) without
forming any pairwise matrix.

Why these rules (chosen once on the seven shared data sets, never per data set): with K given and the same
40-60 classic candidates for every rule, average linkage gave mean ARI 0.637 (seed 0) versus 0.594 for HBGF
(spectral embedding of the bipartite cell × cluster graph, then K-means), 0.559 for K-means on the incidence
matrix and 0.534 for Leiden on kNN-graph edges weighted by co-association; complete linkage collapsed on two
data sets (0.490) and weighted (WPGMA) linkage moved more with the sample. On the saved candidates of 1–2 seeds
per file, ``select`` then raised the mean from 0.641 to 0.653 (bladder 0.563 → 0.611); candidate weights by
agreement (0.62–0.63), consensus of K-means candidates only (0.57) and the candidate with the highest mean
agreement regardless of K (0.67, but not with the K asked for) were the alternatives tried. ``hbgf`` and
``incidence_kmeans`` stay available (``rule=``) for comparison only.

K, when not given, is the cut with the longest lifetime in that dendrogram (the largest gap between
successive merge heights, Fred & Jain's criterion); the whole lifetime curve is returned as the evidence. On the
same data (candidates without K) it gave mean ARI 0.674, against 0.612 for the K maximising the mean NMI with
the candidates (Strehl & Ghosh's ANMI) and 0.595 for the mean ARI.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

__all__ = ["RULES", "ConsensusResult", "incidence", "coassociation_linkage", "lifetime_curve", "transfer_labels",
           "cell_confidence", "agreement_matrix", "pair_ari", "mean_agreement", "proposals", "select", "consensus"]

RULES = ("select", "average_linkage", "hbgf", "incidence_kmeans")


@dataclass
class ConsensusResult:
    """What :func:`consensus` returns (arrays are per cell unless said otherwise)."""

    labels: np.ndarray  # int64 [n]
    confidence: np.ndarray  # float32 [n] in [0, 1]
    n_clusters: int
    k_estimated: bool
    evidence: dict[str, list] = field(default_factory=dict)  # {"k": [...], "lifetime": [...]} when estimated
    rule: str = "select"
    selection: dict[str, float] = field(default_factory=dict)  # rule "select": each proposal's mean ARI with the candidates
    chosen: str = ""  # rule "select": the proposal kept


def _check(partitions: np.ndarray) -> np.ndarray:
    p = np.asarray(partitions)
    if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 2:
        raise ValueError(f"partitions must be [candidates, cells] with ≥ 1 candidate and ≥ 2 cells, got {p.shape}")
    return p.astype(np.int64, copy=False)


def incidence(partitions: np.ndarray) -> sp.csr_matrix:
    """Cell × (candidate, cluster) 0/1 matrix ``[n, ΣK]``; ``H @ H.T / m`` is the co-association."""
    p = _check(partitions)
    m, n = p.shape
    cols, off = [], 0
    for row in p:
        u, inv = np.unique(row, return_inverse=True)
        cols.append(inv + off)
        off += len(u)
    data = np.ones(n * m, dtype=np.float32)
    return sp.csr_matrix((data, (np.tile(np.arange(n), m), np.concatenate(cols))), shape=(n, off))


def coassociation_linkage(partitions: np.ndarray, *, max_cells: int = 3000, seed: int = 0,
                          method: str = "average") -> tuple[np.ndarray, np.ndarray]:
    """Linkage matrix on ``1 - co-association`` of a sample of at most ``max_cells`` cells.

    Returns ``(Z, sub)``: scipy linkage ``[n_sub - 1, 4]`` and the sampled cell indices ``[n_sub]``. Memory is
    O(n_sub²), independent of the number of cells.
    """
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import pdist

    p = _check(partitions)
    n = p.shape[1]
    rng = np.random.default_rng(seed)
    sub = np.sort(rng.choice(n, int(max_cells), replace=False)) if n > max_cells else np.arange(n)
    d = pdist(p[:, sub].T, metric="hamming")  # = 1 - co-association
    return linkage(d, method=method), sub


def lifetime_curve(z: np.ndarray, k_max: int) -> tuple[list[int], list[float]]:
    """Lifetime of each K = 2..k_max: how long (in merge height) the K-cluster cut survives."""
    h = np.sort(z[:, 2])[::-1]  # h[K-2] is the merge that joins K clusters into K-1
    ks = list(range(2, min(int(k_max), len(h)) + 1))
    life = [float(h[k - 2] - (h[k - 1] if k - 1 < len(h) else 0.0)) for k in ks]
    return ks, life


def transfer_labels(partitions: np.ndarray, sub: np.ndarray, sub_labels: np.ndarray) -> np.ndarray:
    """Labels for all cells: each joins the consensus cluster with the highest mean co-association.

    ``S = H · (H_subᵀ G) / (m |g|)`` with G the one-hot of ``sub_labels``: ``[n, K]``, no pairwise matrix.
    The sampled cells keep their own labels.
    """
    p = _check(partitions)
    h = incidence(p)
    k = int(sub_labels.max()) + 1
    g = sp.csr_matrix((np.ones(len(sub)), (np.arange(len(sub)), sub_labels)), shape=(len(sub), k))
    m_small = (h[sub].T @ g).toarray()  # [ΣK, K]
    sizes = np.asarray(g.sum(0)).ravel()
    score = np.asarray(h @ m_small) / (p.shape[0] * np.maximum(sizes, 1))
    out = score.argmax(1).astype(np.int64)
    out[sub] = sub_labels
    return out


def cell_confidence(partitions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per cell: mean over candidates of the share of its consensus-cluster mates it was grouped with.

    1 = every candidate put the cell with all of its cluster mates; low values mark cells whose assignment the
    candidates disagree on (boundaries, mixed or rare states). O(n · m), no pairwise matrix.
    """
    p = _check(partitions)
    labels = np.asarray(labels, dtype=np.int64)
    _, g = np.unique(labels, return_inverse=True)
    sizes = np.bincount(g).astype(np.float64)
    acc = np.zeros(p.shape[1])
    for row in p:
        _, c = np.unique(row, return_inverse=True)
        table = sp.coo_matrix((np.ones_like(g), (g, c))).tocsr()
        acc += np.asarray(table[g, c]).ravel()
    return (acc / (p.shape[0] * sizes[g])).astype(np.float32)


def _codes(p: np.ndarray) -> np.ndarray:
    """Each row relabelled to 0..K_i-1."""
    return np.vstack([np.unique(row, return_inverse=True)[1] for row in p]).astype(np.int64)


def pair_ari(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index of two 0-based label vectors (as sklearn's, without its per-call validation cost)."""
    n = len(a)
    table = np.bincount(a * (int(b.max()) + 1) + b).astype(np.float64)
    comb = lambda x: float((x * (x - 1)).sum() / 2)  # noqa: E731
    s_ij = comb(table)
    s_a = comb(np.bincount(a).astype(np.float64))
    s_b = comb(np.bincount(b).astype(np.float64))
    expected = s_a * s_b / (n * (n - 1) / 2) if n > 1 else 0.0
    top = 0.5 * (s_a + s_b)
    return 1.0 if top == expected else float((s_ij - expected) / (top - expected))


def agreement_matrix(partitions: np.ndarray, *, max_cells: int = 5000, seed: int = 0) -> np.ndarray:
    """Candidate × candidate ARI ``[m, m]`` (on a sample of at most ``max_cells`` cells, for speed)."""
    p = _check(partitions)
    n = p.shape[1]
    if n > max_cells:
        p = p[:, np.sort(np.random.default_rng(seed).choice(n, max_cells, replace=False))]
    p = _codes(p)
    m = p.shape[0]
    out = np.eye(m)
    for i in range(m):
        for j in range(i + 1, m):
            out[i, j] = out[j, i] = pair_ari(p[i], p[j])
    return out


def _alt_rule(p: np.ndarray, k: int, rule: str, seed: int) -> np.ndarray:
    """The two rules kept only for comparison (see the module docstring): HBGF and K-means on the incidence."""
    from sklearn.cluster import KMeans

    h = incidence(p).astype(np.float64)
    if rule == "incidence_kmeans":
        return KMeans(k, n_init=10, random_state=seed).fit_predict(h).astype(np.int64)
    from scipy.sparse.linalg import svds

    hn = h @ sp.diags(1.0 / np.sqrt(np.asarray(h.sum(0)).ravel()))
    u, _, _ = svds(hn, k=max(1, min(k, min(hn.shape) - 1)), random_state=seed)
    u /= np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
    return KMeans(k, n_init=10, random_state=seed).fit_predict(u).astype(np.int64)


def _average_linkage(p: np.ndarray, k: int, max_cells: int, seed: int, tree: tuple | None = None) -> np.ndarray:
    """Average-linkage co-association consensus of ``p`` cut at ``k`` clusters, for all cells (``tree``: the
    ``(Z, sub)`` of :func:`coassociation_linkage` when already built)."""
    from scipy.cluster.hierarchy import fcluster

    z, sub = tree if tree is not None else coassociation_linkage(p, max_cells=max_cells, seed=seed)
    sub_labels = fcluster(z, k, criterion="maxclust").astype(np.int64) - 1
    return transfer_labels(p, sub, sub_labels) if len(sub) < p.shape[1] else sub_labels


def mean_agreement(labels: np.ndarray, partitions: np.ndarray, *, max_cells: int = 5000, seed: int = 0) -> float:
    """Mean ARI of ``labels`` with every candidate partition (on a sample of at most ``max_cells`` cells)."""
    p = _check(partitions)
    lab = np.asarray(labels)
    if p.shape[1] > max_cells:
        keep = np.sort(np.random.default_rng(seed).choice(p.shape[1], max_cells, replace=False))
        p, lab = p[:, keep], lab[keep]
    lab = np.unique(lab, return_inverse=True)[1]
    return float(np.mean([pair_ari(lab, row) for row in _codes(p)]))


def proposals(partitions: np.ndarray, k: int, *, max_cells: int = 3000, seed: int = 0) -> dict[str, np.ndarray]:
    """What rule ``select`` chooses from: average-linkage consensus of all candidates, of the half that agrees
    most with the others, and of the candidates with exactly ``k`` clusters, plus each of those candidates."""
    p = _codes(_check(partitions))
    out = {"average_linkage": _average_linkage(p, k, max_cells, seed)}
    agree = agreement_matrix(p, seed=seed)
    top = np.argsort(-(agree.sum(1) - 1), kind="stable")[: max(2, len(p) // 2)]
    out["average_linkage_top_half"] = _average_linkage(p[top], k, max_cells, seed)
    with_k = [i for i in range(len(p)) if int(p[i].max()) + 1 == k]
    if len(with_k) >= 2:
        out["average_linkage_k_only"] = _average_linkage(p[with_k], k, max_cells, seed)
    out.update({f"candidate {i}": p[i] for i in with_k})
    return out


def select(partitions: np.ndarray, k: int, *, max_cells: int = 3000, seed: int = 0) -> tuple[str, np.ndarray, dict]:
    """Rule ``select``: of :func:`proposals`, the one with the highest mean ARI with all candidates (Strehl &
    Ghosh's supra-consensus, with ARI in place of NMI). Returns ``(name, labels, {name: score})``."""
    props = proposals(partitions, k, max_cells=max_cells, seed=seed)
    scores = {name: mean_agreement(lab, partitions, seed=seed) for name, lab in props.items()}
    best = max(scores, key=lambda name: scores[name])  # first of equals: the consensus proposals come first
    return best, props[best], scores


def consensus(partitions: np.ndarray, *, n_clusters: int | None = None, k_max: int = 30, max_cells: int = 3000,
              rule: str = "select", seed: int = 0) -> ConsensusResult:
    """Combine candidate partitions into one (see the module docstring for the rule and why).

    ``n_clusters=None`` estimates K by the longest dendrogram lifetime over K = 2..``k_max`` and returns the
    curve in ``evidence``. Raises ``ValueError`` for a bad rule or K.
    """
    p = _check(partitions)
    if rule not in RULES:
        raise ValueError(f"Unknown consensus rule {rule!r}; choose one of {RULES}")
    n = p.shape[1]
    if n_clusters is not None and not 1 <= int(n_clusters) < n:
        raise ValueError(f"n_clusters={n_clusters} must be between 1 and the number of cells - 1 ({n - 1})")
    evidence: dict[str, list] = {}
    k, tree = n_clusters, None
    if k is None:
        tree = coassociation_linkage(p, max_cells=max_cells, seed=seed)
        ks, life = lifetime_curve(tree[0], k_max)
        if not ks:
            raise ValueError("Too few cells to estimate K; give n_clusters")
        k = ks[int(np.argmax(life))]
        evidence = {"k": ks, "lifetime": life}
    k = int(k)
    chosen, scores = rule, {}
    if rule == "select" and n_clusters is None:  # K estimated: the proposals' K-candidates would match by chance
        chosen, labels = "average_linkage", _average_linkage(p, k, max_cells, seed, tree)
    elif rule == "select":
        chosen, labels, scores = select(p, k, max_cells=max_cells, seed=seed)
    elif rule == "average_linkage":
        labels = _average_linkage(p, k, max_cells, seed, tree)
    else:
        labels = _alt_rule(p, k, rule, seed)
    return ConsensusResult(labels=labels, confidence=cell_confidence(p, labels), n_clusters=int(len(np.unique(labels))),
                           k_estimated=n_clusters is None, evidence=evidence, rule=rule, selection=scores,
                           chosen=chosen)
