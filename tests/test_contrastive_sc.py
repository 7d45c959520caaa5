"""contrastive-sc (docs/methods.md §3): loss, model, schedule, the fit contract, cancel, determinism, quality."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scclust_core.methods import get_method
from scclust_core.methods.contrastive_sc import ContrastiveRepresentation, ContrastiveSCConfig, cosine_lr
from scclust_core.losses import nt_xent
from helpers import Recorder as _Recorder


def _synthetic(n_cells=200, n_genes=100, n_clusters=3, seed=0):
    from scclust_core.datasets import synthetic

    return synthetic(n_cells, n_genes, n_clusters, seed=seed)


@pytest.fixture(scope="module")
def small():
    return _synthetic()


def _cfg(**kw):
    base = dict(n_clusters=3, n_hvg=50, epochs=3, snapshot_every=2)
    base.update(kw)
    return ContrastiveSCConfig.from_preset("cpu", **base)


# ---------------------------------------------------------------- loss
def test_nt_xent_identical_orthogonal_views_analytic():
    # identical unit views, cells mutually orthogonal: each anchor sees its positive at 1/T, the other
    # view of itself is the positive, 2B-2 negatives at 0 → loss = log(2B-2 + e^{1/T}) - 1/T
    b, t = 4, 0.07
    z = torch.eye(b, 8)
    got = float(nt_xent(z, z.clone(), t))
    want = math.log(2 * b - 2 + math.exp(1 / t)) - 1 / t
    assert got == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_nt_xent_matches_hand_computation_random():
    g = torch.Generator().manual_seed(0)
    z1 = torch.nn.functional.normalize(torch.randn(5, 6, generator=g), dim=1)
    z2 = torch.nn.functional.normalize(torch.randn(5, 6, generator=g), dim=1)
    t = 0.5
    v = torch.cat([z1, z2]).double().numpy()
    s = v @ v.T / t
    n = len(v)
    losses = []
    for a in range(n):
        p = (a + 5) % n
        denom = sum(math.exp(s[a, j]) for j in range(n) if j != a)
        losses.append(-s[a, p] + math.log(denom))
    assert float(nt_xent(z1, z2, t)) == pytest.approx(np.mean(losses), rel=1e-5)


# ---------------------------------------------------------------- model / schedule
def test_model_shapes_params_and_normalisation():
    torch.manual_seed(0)
    m = ContrastiveRepresentation(500, (200, 40, 60), 0.9)
    assert sum(p.numel() for p in m.parameters()) == 111_180  # the paper's count at G = 500
    x = torch.randn(16, 500)
    m.train()
    a, b = m(x), m(x)
    assert a.shape == (16, 60) and a.dtype == torch.float32
    assert torch.allclose(a.norm(dim=1), torch.ones(16), atol=1e-5)
    assert not torch.allclose(a, b)  # two dropout masks → two views
    m.eval()
    assert torch.allclose(m(x), m(x))  # no dropout in eval mode


def test_cosine_schedule_reproduces_500_epoch_horizon():
    assert cosine_lr(0, 0.4, 500) == pytest.approx(0.4)
    assert cosine_lr(29, 0.4, 500) == pytest.approx(0.4e-3 + (0.4 - 0.4e-3) * (1 + math.cos(math.pi * 29 / 500)) / 2)
    assert 0.395 < cosine_lr(29, 0.4, 500) < 0.4
    assert cosine_lr(30, 0.4, 30) == pytest.approx(0.4e-3)  # horizon = epochs gives a real decay


def test_config_n_hvg_forms():
    assert ContrastiveSCConfig(n_hvg="auto").n_hvg == "auto"
    assert ContrastiveSCConfig(n_hvg="ALL").n_hvg == "all"
    assert ContrastiveSCConfig(n_hvg="1000").n_hvg == 1000
    assert ContrastiveSCConfig().set_from_strings({"n_hvg": "1500"}).n_hvg == 1500
    assert ContrastiveSCConfig.from_preset("paper").n_hvg == "auto"
    with pytest.raises(ValueError):
        ContrastiveSCConfig(n_hvg="lots")
    with pytest.raises(ValueError):
        ContrastiveSCConfig(n_hvg=3)


# ---------------------------------------------------------------- fit contract
def test_loss_lr_and_snapshot_schedule(small):
    rec = _Recorder()
    res = get_method("contrastive_sc").fit(small, _cfg(epochs=4), callback=rec, label_key="cell_type")
    assert res.embedding.shape == (len(res.cell_index), 60) and len(np.unique(res.labels)) == 3
    assert all("nt_xent" in h.losses and h.metrics["lr"] > 0 for h in res.history)
    assert rec.snaps == [2, 4]
    assert rec.extra_snaps[0] == 0  # epoch-0 snapshot of the untrained encoder
    assert [s.epoch for s in res.snapshots] == [0, 2, 4]
    assert res.extras["n_hvg_chosen"] == 50


def test_auto_hvg_search_is_label_free_and_reports(small):
    from scclust_core.methods import contrastive_sc

    contrastive_sc._HVG_SEARCH_CACHE.clear()  # a fresh search, whatever ran before in this process
    rec = _Recorder()
    res = get_method("contrastive_sc").fit(small, _cfg(n_hvg="auto", hvg_candidates=[30, 0], epochs=2,
                                                       hvg_search_seeds=2, snapshot_every=1), callback=rec)
    scores = res.extras["hvg_silhouette"]
    assert len(scores) == 2 and "30" in scores  # 30 HVGs and all (non-empty) genes
    assert all(np.isfinite(v) for v in scores.values())
    best = max(scores, key=scores.get)
    assert res.extras["n_hvg_chosen"] == int(best)
    assert f"chosen by the label-free silhouette search: {best}" in res.extras["note"]  # shown in the app
    # the search is reported live: 2 candidates × 2 seeds × 2 epochs, then the final 2 epochs
    phases = [h.phase for h in res.history]
    assert phases == ["hvg_search"] * 8 + ["train"] * 2
    assert [h.epoch for h in res.history] == list(range(1, 11))
    assert all(not {"ari", "nmi"} & set(h.metrics) for h in res.history[:8])  # no labels scored in the search
    assert {h.metrics["n_hvg"] for h in res.history[:8]} == {30, max(int(k) for k in scores)}
    # snapshots only of the final training: its start (epoch 8) and its two epochs
    assert [s.epoch for s in res.snapshots] == [8, 9, 10]


def test_auto_hvg_search_is_independent_of_the_run_seed(small):
    """The search uses seeds 0..n−1 (the choice belongs to the dataset), the final run the run's seed."""
    from scclust_core.methods import contrastive_sc

    contrastive_sc._HVG_SEARCH_CACHE.clear()
    m = get_method("contrastive_sc")
    cfg = _cfg(n_hvg="auto", hvg_candidates=[30, 0], epochs=2, hvg_search_seeds=1)
    a, b = m.fit(small, cfg.replace(seed=0)), m.fit(small, cfg.replace(seed=5))
    assert a.extras["hvg_silhouette"] == b.extras["hvg_silhouette"]
    assert not a.extras["hvg_search_reused"] and b.extras["hvg_search_reused"]  # same data and settings
    assert [h.phase for h in b.history] == ["train"] * 2 and b.extras["n_hvg_chosen"] == a.extras["n_hvg_chosen"]
    # another setting that changes the trainings → a new search
    c = m.fit(small, cfg.replace(seed=5, lr=0.3))
    assert not c.extras["hvg_search_reused"]


@pytest.mark.slow  # scanpy's neighbour graph JIT-compiles (numba) on its first call in a process
def test_leiden_when_k_unknown(small):
    res = get_method("contrastive_sc").fit(small, _cfg(n_clusters=None, leiden_neighbors=30, epochs=2))
    assert res.labels.shape == (len(res.cell_index),)
    assert res.n_clusters >= 2


def test_needs_counts():
    ad = _synthetic(60, 40)
    ad.X = ad.X.toarray() * 0.5 + 0.1
    with pytest.raises(ValueError, match="counts"):
        get_method("contrastive_sc").fit(ad, _cfg(n_hvg=20, epochs=1))
