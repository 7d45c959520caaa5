"""CICL (docs/methods.md §1, §8): losses computed by hand, the encoder's exact shortcuts, views, the fit contract."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scclust_core.losses import cluster_aware_loss, info_nce
from scclust_core.methods import get_method
from scclust_core.methods.cicl import CICLConfig, CICLEncoder, CICLHead, _n_shards, make_views
from helpers import Recorder as _Recorder


def _synthetic(n_cells=160, n_genes=80, n_clusters=3, seed=0):
    from scclust_core.datasets import synthetic

    return synthetic(n_cells, n_genes, n_clusters, seed=seed)


@pytest.fixture(scope="module")
def small():
    return _synthetic()


def _cfg(**kw):
    # a tiny network keeps the contract tests fast; the architecture itself is tested separately
    base = dict(n_clusters=3, n_hvg=40, epochs=3, snapshot_every=2, d_ff=32, head_hidden=32, head_out=16,
                n_layers=2, kmeans_n_init=2, torch_threads=1)
    base.update(kw)
    return CICLConfig.from_preset("cpu", **base)


# ---------------------------------------------------------------- losses
def test_info_nce_identical_orthogonal_views_analytic():
    # identical unit views, cells mutually orthogonal: CE over [1/T, 0, ..., 0] (B logits) → log(B-1+e^{1/T}) - 1/T
    b, t = 4, 0.5
    z = torch.eye(b, 6)
    want = math.log(b - 1 + math.exp(1 / t)) - 1 / t
    assert float(info_nce(z, z.clone(), t)) == pytest.approx(want, rel=1e-6)


def test_cluster_aware_loss_four_cells_by_hand():
    # 4 cells, labels [0, 0, 1, 1]; 2-d unit vectors at chosen angles, T = 0.5
    t = 0.5
    ang1 = torch.tensor([0.0, 0.3, 1.6, 2.0])
    ang2 = torch.tensor([0.1, 0.5, 1.4, 2.3])
    f1 = torch.stack([ang1.cos(), ang1.sin()], 1).double()
    f2 = torch.stack([ang2.cos(), ang2.sin()], 1).double()
    labels = torch.tensor([0, 0, 1, 1])
    e = lambda a, b: math.exp(float(a @ b) / t)  # noqa: E731
    per_cluster = []
    for c in (0, 1):
        p = [i for i in range(4) if labels[i] == c]
        r = [j for j in range(4) if labels[j] != c]
        terms = []
        for i in p:
            pos = e(f1[i], f2[i])
            for anchor in (f1[i], f2[i]):
                neg = sum(e(anchor, f1[j]) + e(anchor, f2[j]) for j in r)
                terms.append(-math.log(pos / (pos + neg)))
        per_cluster.append(sum(terms) / len(terms))
    got = float(cluster_aware_loss(f1, f2, labels, t, "sum"))
    assert got == pytest.approx(sum(per_cluster), rel=1e-10)
    assert float(cluster_aware_loss(f1, f2, labels, t, "mean")) == pytest.approx(sum(per_cluster) / 2, rel=1e-10)
    # one label for everyone: no negatives → 0
    assert float(cluster_aware_loss(f1, f2, torch.zeros(4, dtype=torch.long), t)) == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------- model
def test_encoder_shapes_identical_layers_and_qk_shortcut():
    torch.manual_seed(0)
    enc = CICLEncoder(50, 4)
    head = CICLHead(50)
    w = [layer.w_v.weight for layer in enc.layers]
    assert all(torch.equal(w[0], wi) for wi in w[1:])  # deep copies: identical at init
    x = torch.randn(7, 50)
    enc.eval()
    h = enc(x)
    assert h.shape == (7, 50) and h.dtype == torch.float32
    enc.set_compute_qk(False)
    assert torch.allclose(enc(x), h, atol=1e-6)  # the length-1 attention is a no-op
    z = head(h)
    assert z.shape == (7, 512)
    assert torch.allclose(z.norm(dim=1), torch.ones(7), atol=1e-5)


def test_views_noise_exactly_80_percent_of_genes_per_cell():
    x = torch.zeros(30, 20)
    g = torch.Generator().manual_seed(0)
    v = make_views(x, kind="masked_gaussian", noise_std=0.5, gene_frac=0.8, generator=g)
    assert ((v != 0).sum(dim=1) == 16).all()
    v2 = make_views(x, kind="masked_gaussian", noise_std=0.5, gene_frac=0.8, generator=g)
    assert not torch.equal(v != 0, v2 != 0)  # drawn per cell and per view
    assert 0.3 < float(v[v != 0].std()) < 0.7


def test_auto_shards():
    cfg = CICLConfig.from_preset("cpu")
    assert _n_shards(cfg, 2500) == 1 and _n_shards(cfg, 4271) == 4
    assert _n_shards(CICLConfig.from_preset("paper"), 4271) == 1
    assert _n_shards(CICLConfig(shards=3), 4271) == 3


# ---------------------------------------------------------------- fit contract
def test_losses_pseudo_labels_every_epoch_and_snapshot_schedule(small):
    rec = _Recorder()
    res = get_method("cicl").fit(small, _cfg(epochs=4), callback=rec, label_key="cell_type")
    assert res.embedding.shape == (len(res.cell_index), 40)  # embedding dimension = number of genes
    assert {"instance", "cluster", "total"} <= set(res.history[0].losses)
    assert all("ari" in h.metrics for h in res.history)  # pseudo-labels every epoch (display only)
    assert rec.snaps == [2, 4] and rec.extra_snaps[0] == 0
    assert [s.epoch for s in res.snapshots] == [0, 2, 4]


def test_cpu_preset_evaluates_once(small):
    rec = _Recorder()
    res = get_method("cicl").fit(small, _cfg(epochs=3, snapshot_every=0), callback=rec)
    assert rec.snaps == [] and [s.epoch for s in res.snapshots] == [0, 3]


def test_shards_run(small):
    res = get_method("cicl").fit(small, _cfg(epochs=2, shards=3))
    assert res.extras["shards"] == 3 and np.isfinite(res.history[-1].losses["total"])


def test_qk_shortcut_is_exact_in_a_fit(small):
    m = get_method("cicl")
    a = m.fit(small, _cfg(seed=2, compute_qk=False))
    b = m.fit(small, _cfg(seed=2, compute_qk=True))
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-4)
    assert a.history[-1].losses["total"] == pytest.approx(b.history[-1].losses["total"], rel=1e-5)


def test_needs_k_and_counts(small):
    with pytest.raises(ValueError, match="n_clusters"):
        get_method("cicl").fit(small, _cfg(n_clusters=None))
    ad = _synthetic(60, 40)
    ad.X = ad.X.toarray() * 0.5 + 0.1
    with pytest.raises(ValueError, match="counts"):
        get_method("cicl").fit(ad, _cfg(n_hvg=20, epochs=1))
