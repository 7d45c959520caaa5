"""The ``recommend`` method: consensus of classic candidates, K estimated, confidence, live progress, cancel."""
from __future__ import annotations

import numpy as np
import pytest

from scclust_core.methods import Callback, get_method, list_methods, run_method

# 2 HVG sets × 2 PC counts + 1 tiny contrastive-sc embedding: 5 views × (5 Leiden + 2 K-means)
SMALL = dict(hvg_sizes=[60, 120], pcs=[5, 10], n_seeds=2, deep_methods=["contrastive_sc"], deep_preset="tiny")


def test_recommend_heads_the_method_list():
    assert list_methods()[0] == "recommend"
    m = get_method("recommend")
    assert m.can_estimate_k and m.deep and "consensus" in m.summary.lower()


def test_recommend_with_k_writes_back_labels_confidence_and_agreement(counts_adata, tmp_path):
    res = run_method(counts_adata, "recommend", n_clusters=3, label_key="cell_type", **SMALL)
    assert res.metrics["ari"] > 0.95 and res.n_clusters == 3
    conf = counts_adata.obs["recommend_confidence"].to_numpy()
    assert conf.shape == (counts_adata.n_obs,) and np.nanmin(conf) >= 0 and np.nanmax(conf) <= 1
    assert counts_adata.obs["recommend"].dtype.name == "category"
    info = counts_adata.uns["recommend"]["consensus"]
    m = len(info["candidates"])
    assert m == 35 and info["agreement_ari"].shape == (m, m) and len(info["ari_with_consensus"]) == m
    assert sum("contrastive_sc seed 0 embedding" in c for c in info["candidates"]) == 7  # the deep view
    assert len(info["most_agreeing"]) == 5 and info["rule"] == "select" and not info["k_estimated"]
    assert info["chosen"] in info["selection"] and len(info["selection"]) >= 3
    assert len(res.history) == m and res.history[-1].phase == "candidates"  # one "epoch" per candidate
    import anndata

    counts_adata.write_h5ad(tmp_path / "rec.h5ad")  # everything written back is h5ad-storable
    back = anndata.read_h5ad(tmp_path / "rec.h5ad")
    assert back.uns["recommend"]["consensus"]["agreement_ari"].shape == (m, m)
    assert list(back.uns["recommend"]["consensus"]["candidates"]) == list(info["candidates"])


def test_recommend_estimates_k_and_reports_the_evidence(counts_adata):
    res = run_method(counts_adata, "recommend", label_key="cell_type", **SMALL)
    info = res.extras["recommend"]
    assert info["k_estimated"] and res.n_clusters == 3 and res.metrics["ari"] > 0.95
    ks, life = info["k_evidence"]["k"], info["k_evidence"]["lifetime"]
    assert ks[int(np.argmax(life))] == 3


def test_recommend_never_reads_the_labels(counts_adata):
    m = get_method("recommend")
    cfg = m.Config.from_preset(None, n_clusters=3, seed=4, **SMALL)
    a = m.fit(counts_adata, cfg, label_key="cell_type")
    shuffled = counts_adata.copy()
    shuffled.obs["cell_type"] = np.random.default_rng(0).permutation(shuffled.obs["cell_type"].to_numpy())
    b = m.fit(shuffled, cfg, label_key="cell_type")
    np.testing.assert_array_equal(a.labels, b.labels)


def test_cancel_keeps_the_consensus_of_the_candidates_done(counts_adata):
    class StopAfter3(Callback):
        def __init__(self):
            self.n = 0

        def on_epoch_end(self, log, snapshot):
            self.n += 1

        def should_stop(self):
            return self.n >= 3

    m = get_method("recommend")
    res = m.fit(counts_adata, m.Config.from_preset(None, n_clusters=3, **SMALL), callback=StopAfter3())
    assert res.status == "cancelled" and len(res.extras["recommend"]["candidates"]) == 3
    assert len(res.labels) == counts_adata.n_obs


def test_budget_skips_candidates_and_says_so(counts_adata):
    m = get_method("recommend")
    res = m.fit(counts_adata, m.Config.from_preset(None, n_clusters=3, budget_s=0.0, **SMALL))
    assert len(res.extras["recommend"]["candidates"]) == 2  # at least two candidates always run
    assert any("33 candidate clusterings were skipped" in w for w in res.extras["warnings"])


def test_a_deep_view_that_does_not_fit_the_budget_is_skipped_and_said(counts_adata):
    m = get_method("recommend")
    # scAMAC's cpu preset is estimated at ~14 s on these 240 cells; the one PCA view takes well under a second
    cfg = m.Config.from_preset(None, n_clusters=3, budget_s=6.0, deep_methods=["scamac"], deep_preset="cpu",
                               hvg_sizes=[60], pcs=[5], n_seeds=1)
    res = m.fit(counts_adata, cfg)
    assert len(res.extras["recommend"]["candidates"]) == 6  # the PCA view's 5 Leiden + 1 K-means, no deep view
    assert any("scamac seed 0: not trained (estimated" in w for w in res.extras["warnings"])


def test_deep_methods_must_be_deep():
    m = get_method("recommend")
    with pytest.raises(ValueError, match="not a deep method"):
        m.Config.from_preset(None, deep_methods=["kmeans"])
    with pytest.raises(ValueError, match="Unknown method"):
        m.Config.from_preset(None, deep_methods=["nope"])


def test_bad_config_raises():
    m = get_method("recommend")
    with pytest.raises(ValueError, match="hvg_sizes"):
        m.Config.from_preset(None, hvg_sizes=[])
    with pytest.raises(ValueError, match="rule"):
        m.Config.from_preset(None, rule="vote")
