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


# ------------------------------------------------------------------------------------------------
# annotations without usable labels: NaN with a warning, never a perfect score
# ------------------------------------------------------------------------------------------------

_UNUSABLE = {
    "all NaN": np.array([np.nan] * 6),
    "one category": np.array(["B"] * 6, dtype=object),
    "one labelled cell": np.array(["B", None, None, None, None, None], dtype=object),
    "all missing codes": np.array([-1] * 6),
}


@pytest.mark.parametrize("case", sorted(_UNUSABLE))
def test_unusable_labels_give_nan_and_warning(case):
    truth = _UNUSABLE[case]
    lab = np.array([0, 0, 0, 0, 0, 0])
    for fn in (metrics.ari, metrics.nmi, metrics.ca):
        with pytest.warns(metrics.UnusableLabelsWarning):
            assert np.isnan(fn(truth, lab))
    found: list[str] = []
    with pytest.warns(metrics.UnusableLabelsWarning):
        out = metrics.evaluate(lab, truth=truth, warnings_out=found)
    assert np.isnan(out["ari"]) and np.isnan(out["nmi"]) and np.isnan(out["ca"])
    assert len(found) == 1 and "NaN" in found[0]
    assert metrics.label_problem(truth) is not None


def test_two_labelled_cells_in_two_categories_are_usable():
    truth = np.array(["A", "B", None, None], dtype=object)
    assert metrics.label_problem(truth) is None
    assert metrics.ari(truth, np.array([0, 1, 0, 0])) == pytest.approx(1.0)


def test_fit_reports_nan_metrics_with_run_warning(counts_adata):
    from scclust_core.methods import get_method

    ad = counts_adata.copy()
    ad.obs["one"] = "same"
    m = get_method("kmeans")
    res = m.fit(ad, m.default_config(n_clusters=3, n_top_genes=60, n_pcs=10), label_key="one")
    assert np.isnan(res.metrics["ari"]) and np.isnan(res.metrics["nmi"])
    assert any("single category" in w for w in res.extras["warnings"])
    assert res.metrics["silhouette"] == res.metrics["silhouette"]  # label-free score still there
