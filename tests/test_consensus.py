"""Consensus of candidate partitions (scclust_core.consensus) on partitions the tests make."""
from __future__ import annotations


import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from scclust_core import consensus as cons


def noisy_partitions(n: int = 300, k: int = 3, m: int = 12, flip: float = 0.1, seed: int = 0):
    """``m`` candidates that each relabel a random ``flip`` share of the cells of a ``k``-block truth."""
    rng = np.random.default_rng(seed)
    truth = np.arange(n) % k
    parts = []
    for i in range(m):
        lab = truth.copy()
        bad = rng.random(n) < flip
        lab[bad] = rng.integers(0, k, bad.sum())
        parts.append(rng.permutation(k + i % 2)[lab])  # arbitrary label names per candidate
    return truth, np.vstack(parts)


def test_incidence_gives_the_coassociation():
    p = np.array([[0, 0, 1, 1], [5, 5, 5, 7]])
    h = cons.incidence(p)
    co = (h @ h.T).toarray() / 2
    expected = np.array([[1, 1, .5, 0], [1, 1, .5, 0], [.5, .5, 1, .5], [0, 0, .5, 1]])
    np.testing.assert_allclose(co, expected)


def test_identical_candidates_give_themselves_with_full_confidence():
    lab = np.repeat([0, 1, 2], 20)
    res = cons.consensus(np.vstack([lab, lab + 3, lab * 2]), n_clusters=3)
    assert adjusted_rand_score(lab, res.labels) == 1.0 and res.n_clusters == 3
    np.testing.assert_allclose(res.confidence, 1.0)


def test_consensus_removes_candidate_noise_and_estimates_k():
    truth, p = noisy_partitions(flip=0.25)
    assert max(adjusted_rand_score(truth, row) for row in p) < 0.75
    given = cons.consensus(p, n_clusters=3)
    est = cons.consensus(p, k_max=10)
    assert adjusted_rand_score(truth, given.labels) > 0.95
    assert est.k_estimated and est.n_clusters == 3 and adjusted_rand_score(truth, est.labels) > 0.95
    ks, life = est.evidence["k"], est.evidence["lifetime"]
    assert ks[0] == 2 and len(ks) == len(life) and ks[int(np.argmax(life))] == 3


def test_subsample_and_transfer_recover_the_blocks_without_a_pairwise_matrix():
    truth, p = noisy_partitions(n=20000, m=10, flip=0.2, seed=1)
    import tracemalloc

    tracemalloc.start()
    try:
        res = cons.consensus(p, n_clusters=3, max_cells=400)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 300 * 2**20  # a 20,000² pairwise matrix alone would take 1.6 GB (float32)
    assert adjusted_rand_score(truth, res.labels) > 0.95


def test_confidence_is_lower_for_cells_the_candidates_disagree_on():
    lab = np.repeat([0, 1], 50)
    p = np.vstack([lab] * 6)
    p[:3, 0] = 1  # half the candidates move cell 0 to the other cluster
    res = cons.consensus(p, n_clusters=2)
    assert res.confidence[0] < 0.6 and np.median(res.confidence[1:]) > 0.9
    assert ((res.confidence >= 0) & (res.confidence <= 1)).all()


def test_agreement_matrix_and_fast_ari_match_sklearn():
    truth, p = noisy_partitions(m=5)
    a = cons.agreement_matrix(p)
    assert a.shape == (5, 5) and np.allclose(a, a.T) and np.allclose(np.diag(a), 1)
    assert a[0, 1] == pytest.approx(adjusted_rand_score(p[0], p[1]))
    sub = cons.agreement_matrix(p, max_cells=100)
    assert sub.shape == (5, 5) and abs(sub[0, 1] - a[0, 1]) < 0.2


@pytest.mark.parametrize("rule", ["hbgf", "incidence_kmeans"])
def test_comparison_rules_run(rule):
    truth, p = noisy_partitions(flip=0.1)
    res = cons.consensus(p, n_clusters=3, rule=rule)
    assert res.rule == rule and adjusted_rand_score(truth, res.labels) > 0.8


def test_bad_input_raises_clear_errors():
    p = np.vstack([np.arange(10) % 2] * 3)
    with pytest.raises(ValueError, match="Unknown consensus rule"):
        cons.consensus(p, n_clusters=2, rule="vote")
    with pytest.raises(ValueError, match="n_clusters=10"):
        cons.consensus(p, n_clusters=10)
    with pytest.raises(ValueError, match="candidates, cells"):
        cons.consensus(np.arange(5))
