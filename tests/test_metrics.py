from __future__ import annotations

import numpy as np
import pytest

from scclust_core import metrics


def test_perfect_clustering_scores_one():
    t = np.repeat([0, 1, 2], 50)
    assert metrics.ari(t, t) == pytest.approx(1.0)
    assert metrics.nmi(t, t) == pytest.approx(1.0)
    assert metrics.ca(t, t) == pytest.approx(1.0)


def test_permutation_invariance():
    t = np.repeat([0, 1, 2], 50)
    perm = np.array([2, 0, 1])[t]
    assert metrics.ari(t, perm) == pytest.approx(1.0)
    assert metrics.nmi(t, perm) == pytest.approx(1.0)
    assert metrics.ca(t, perm) == pytest.approx(1.0)


def test_random_labels_score_near_zero():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 5, 5000)
    r = rng.integers(0, 5, 5000)
    assert abs(metrics.ari(t, r)) < 0.01
    assert metrics.nmi(t, r) < 0.01
    assert metrics.ca(t, r) < 0.25


def test_ca_hand_example():
    # clusters {0: a,a,b}, {1: b,b,c}: best matching 0→a (2), 1→b (2) → 4/6
    t = np.array(["a", "a", "b", "b", "b", "c"])
    l = np.array([0, 0, 0, 1, 1, 1])
    assert metrics.ca(t, l) == pytest.approx(4 / 6)


def test_evaluate_keys_and_missing_truth():
    rng = np.random.default_rng(1)
    emb = np.concatenate([rng.normal(0, 0.1, (30, 2)), rng.normal(5, 0.1, (30, 2))])
    lab = np.repeat([0, 1], 30)
    truth = lab.copy()
    truth[:5] = -1  # missing annotation is ignored
    out = metrics.evaluate(lab, truth=truth, embedding=emb)
    assert set(out) == {"n_clusters", "ari", "nmi", "ca", "silhouette"}
    assert out["ari"] == pytest.approx(1.0) and out["silhouette"] > 0.9
    assert metrics.evaluate(lab) == {"n_clusters": 2.0}
    assert np.isnan(metrics.silhouette(emb, np.zeros(60)))
