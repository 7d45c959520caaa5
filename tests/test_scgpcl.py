"""scGPCL: sampler invariants, bipartite encoder, losses, and the method contract (docs/methods.md §4)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from helpers import Recorder
from scclust_core import losses
from scclust_core.datasets import synthetic
from scclust_core.methods import get_method
from scclust_core.methods import scgpcl as gp
from scclust_core.methods.scgpcl import (BipartiteGraph, BipartiteSAGEEncoder, cap_rows, capped_neighbours,
                                             hgt_sample,
                                             mean_operator, sample_without_replacement)


def _random_counts(n_cells=300, n_genes=120, density=0.3, seed=0):
    rng = np.random.default_rng(seed)
    m = sp.random(n_cells, n_genes, density=density, format="csr", random_state=rng, dtype=np.float32)
    m.data = rng.integers(1, 6, m.data.size).astype(np.float32)
    return m


# --------------------------------------------------------------------------------------------- sampler
def test_sampler_invariants():
    counts = _random_counts()
    dense = counts.toarray() > 0
    g = BipartiteGraph(counts)
    rng = np.random.default_rng(0)
    seeds = rng.permutation(g.n_cells)[:40]
    cap = 10
    sub = hgt_sample(g, seeds, np.random.default_rng(1), num_samples=(60, 30), cap=cap)
    assert np.array_equal(sub.cells[:40], seeds) and sub.n_seeds == 40
    assert len(np.unique(sub.cells)) == sub.cells.size and len(np.unique(sub.genes)) == sub.genes.size
    assert sub.cells.size <= 40 + 60 + 30 and sub.genes.size <= 60 + 30
    # every edge is a detected (cell, gene) pair, in both relations
    assert dense[sub.cells[sub.gc_dst], sub.genes[sub.gc_src]].all()
    assert dense[sub.cells[sub.cg_src], sub.genes[sub.cg_dst]].all()
    # ≤ cap in-edges per destination node, no duplicate edges
    assert np.bincount(sub.gc_dst).max() <= cap and np.bincount(sub.cg_dst).max() <= cap
    assert len(set(zip(sub.gc_src, sub.gc_dst))) == sub.gc_src.size
    # hop-1 genes come from the seeds' expressed genes; every non-seed cell expresses a sampled gene
    hop1 = sub.genes[:60]
    assert dense[np.ix_(seeds, hop1)].any(axis=0).all()
    assert dense[np.ix_(sub.cells[40:], sub.genes)].any(axis=1).all()
    # rows with ≤ cap neighbours keep every neighbour that was sampled
    gene_local = np.full(g.n_genes, -1)
    gene_local[sub.genes] = np.arange(sub.genes.size)
    for i, c in enumerate(sub.cells[:40]):
        nb = g.genes_of(c)
        if nb.size <= cap:
            assert np.sum(sub.gc_dst == i) == np.sum(gene_local[nb] >= 0)
        else:
            assert np.sum(sub.gc_dst == i) <= cap


def test_sampler_is_deterministic_with_a_seed():
    g = BipartiteGraph(_random_counts())
    seeds = np.arange(30)
    a = hgt_sample(g, seeds, np.random.default_rng(5), (50, 20), cap=8)
    b = hgt_sample(g, seeds, np.random.default_rng(5), (50, 20), cap=8)
    c = hgt_sample(g, seeds, np.random.default_rng(6), (50, 20), cap=8)
    for f in ("cells", "genes", "gc_src", "gc_dst", "cg_src", "cg_dst"):
        assert np.array_equal(getattr(a, f), getattr(b, f))
    assert not (np.array_equal(a.cells, c.cells) and np.array_equal(a.gc_src, c.gc_src))


def test_sampler_without_caps_takes_the_full_neighbourhood():
    counts = _random_counts(60, 40, density=0.2)
    g = BipartiteGraph(counts)
    sub = hgt_sample(g, np.arange(10), np.random.default_rng(0), (10**6, 10**6), cap=10**6)
    sm = counts[sub.cells][:, sub.genes]
    assert sub.gc_src.size == sm.nnz == sub.cg_src.size


def test_cap_rows_and_weighted_draws():
    rng = np.random.default_rng(0)
    deg = np.array([3, 12, 50, 7])
    row_pos = np.repeat(np.arange(4), deg)
    keep = cap_rows(row_pos, deg, 10, rng)
    assert np.array_equal(np.bincount(row_pos[keep], minlength=4), np.minimum(deg, 10))
    # uniform within a capped row: every entry of the 50-row is kept about 10/50 of the time
    hits = np.zeros(50)
    for _ in range(400):
        hits += cap_rows(row_pos, deg, 10, rng)[15:65]
    assert 0.12 < hits.min() / 400 and hits.max() / 400 < 0.3
    draws = sample_without_replacement(np.array([1.0, 2.0, 3.0, 4.0]), 4, rng)
    assert sorted(draws.tolist()) == [0, 1, 2, 3]
    first = [sample_without_replacement(np.array([1.0, 99.0]), 1, rng)[0] for _ in range(500)]
    assert np.mean(first) > 0.95
    # long rows (> 4·cap) take the draw-positions path: exactly cap distinct neighbours, uniform
    ptr, nbr = np.array([0, 400, 405]), np.r_[np.arange(400), np.arange(5)]
    hits = np.zeros(400)
    for _ in range(300):
        rp, nb, deg = capped_neighbours(ptr, nbr, np.array([0, 1]), 10, rng)
        assert np.array_equal(deg, [400, 5]) and np.array_equal(np.bincount(rp), [10, 5])
        assert np.unique(nb[rp == 0]).size == 10
        hits[nb[rp == 0]] += 1
    assert hits.sum() == 3000 and hits.max() < 30  # mean 7.5 per entry


# --------------------------------------------------------------------------------------------- encoder
def _dense_mean(src, dst, n_dst, n_src):
    a = np.zeros((n_dst, n_src), dtype=np.float32)
    a[dst, src] = 1.0
    deg = a.sum(1, keepdims=True)
    return torch.from_numpy(np.divide(a, deg, out=np.zeros_like(a), where=deg > 0))


def test_encoder_matches_dense_reference_and_backprops():
    torch.manual_seed(0)
    counts = _random_counts(50, 30, density=0.3, seed=2)
    g = BipartiteGraph(counts)
    sub = hgt_sample(g, np.arange(16), np.random.default_rng(0), (20, 10), cap=6)
    nc, ng = sub.cells.size, sub.genes.size
    enc = BipartiteSAGEEncoder(n_genes=30, gene_dim=8, hidden=16, out=4)
    x_c = torch.randn(nc, 30)
    x_g = torch.randn(ng, 8, requires_grad=True)
    m_gc = mean_operator(sub.gc_src, sub.gc_dst, nc, ng, "cpu")
    m_cg = mean_operator(sub.cg_src, sub.cg_dst, ng, nc, "cpu")
    z = enc(x_c, x_g, m_gc, m_cg)
    assert z.shape == (nc, 4) and z.dtype == torch.float32
    z.square().sum().backward()
    assert x_g.grad is not None and x_g.grad.abs().sum() > 0
    for name, p in enc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # dense reference (eval mode): SAGE-mean per relation, BN, no activation
    enc.eval()
    a_gc = _dense_mean(sub.gc_src, sub.gc_dst, nc, ng)
    a_cg = _dense_mean(sub.cg_src, sub.cg_dst, ng, nc)
    with torch.no_grad():
        h_c = enc.bn_c1(enc.c1_nbr(a_gc @ x_g) + enc.c1_root(x_c))
        h_g = enc.bn_g1(enc.g1_nbr(a_cg @ x_c) + enc.g1_root(x_g))
        ref = enc.bn_c2(enc.c2_nbr(a_gc @ h_g) + enc.c2_root(h_c))
        out = enc(x_c, x_g, m_gc, m_cg)
        assert torch.allclose(out, ref, atol=1e-4)
        # no nonlinearity: in eval mode the encoder is affine in its inputs
        x_c2, x_g2 = torch.randn_like(x_c), torch.randn_like(x_g)
        mid = enc(0.5 * (x_c + x_c2), 0.5 * (x_g + x_g2), m_gc, m_cg)
        assert torch.allclose(mid, 0.5 * (out + enc(x_c2, x_g2, m_gc, m_cg)), atol=1e-4)


# --------------------------------------------------------------------------------------------- losses
def test_prototype_loss_hand_computed_four_cells():
    rep = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    protos = torch.tensor([[5.0, 0.0], [0.0, 0.5]])  # un-normalised: only directions matter
    assign = torch.tensor([0, 1, 0, 1])
    tau = 0.25
    expected = (2 * math.log(1 + math.exp(-4)) + 2 * math.log(1 + math.exp(4))) / 4
    got = losses.prototype_loss(rep, [assign], [protos], tau)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # two granularities are averaged per cell; the second: 4 prototypes, each cell its own
    p4 = rep.clone() * 3
    a4 = torch.arange(4)
    l4 = math.log(1 + 2 * math.exp(-4) + math.exp(-8))  # cos 1 vs {0, 0, −1}
    got2 = losses.prototype_loss(rep, [assign, a4], [protos, p4], tau)
    assert got2.item() == pytest.approx((expected + l4) / 2, rel=1e-6)


def _official_instance_loss(r1: np.ndarray, r2: np.ndarray, tau: float) -> float:
    """The official ins_contrastive_loss re-expressed in numpy (mask only on the first B rows)."""
    b = r1.shape[0]
    r1 = r1 / np.linalg.norm(r1, axis=1, keepdims=True)
    r2 = r2 / np.linalg.norm(r2, axis=1, keepdims=True)
    f = np.concatenate([r1, r2])
    logits = f @ f.T / tau
    logits = logits - logits.max(1, keepdims=True)
    pos = np.tile(np.eye(b), (2, 2))
    neg = 1 - pos
    lmask = np.ones((2 * b, 2 * b))
    lmask[np.arange(b), np.arange(b)] = 0  # scatter(1, arange(B).view(-1, 1), 0) touches rows < B only
    pos = pos * lmask
    exp = np.exp(logits) * lmask * (neg + pos)
    logp = logits - np.log(exp.sum(1, keepdims=True))
    return float(-((pos * logp).sum(1) / pos.sum(1)).mean())


def test_instance_loss_reproduces_mask_bug_and_fix():
    torch.manual_seed(0)
    r1, r2 = torch.randn(6, 5), torch.randn(6, 5)
    bug = losses.scgpcl_instance_loss(r1, r2, 0.25, mask_bug=True)
    assert bug.item() == pytest.approx(_official_instance_loss(r1.numpy(), r2.numpy(), 0.25), rel=1e-5)
    fixed = losses.scgpcl_instance_loss(r1, r2, 0.25, mask_bug=False)
    ref = losses.nt_xent(F.normalize(r1, dim=1), F.normalize(r2, dim=1), 0.25)
    assert fixed.item() == pytest.approx(ref.item(), rel=1e-6)
    assert abs(bug.item() - fixed.item()) > 1e-3


def test_shared_losses_and_granularities():
    assert gp.count_nll is losses.count_nll and gp.cluster_kl is losses.cluster_kl
    assert gp.student_t_q is losses.student_t_q and gp.target_distribution is losses.target_distribution
    assert gp.granularity_levels(8) == [8, 12, 16]
    assert gp.granularity_levels(9) == [9, 13, 18]
    assert gp.granularity_levels(4, "1") == [4]
    assert gp.resolve_hvg_frac(None, 2000) == 1.0 and gp.resolve_hvg_frac(None, 20000) == 0.2
    assert gp.resolve_hvg_frac(0.5, 2000) == 0.5


def test_config_presets_and_validation():
    cfg = gp.ScGPCLConfig.from_preset("cpu", n_clusters=3)
    assert (cfg.pretrain_epochs, cfg.warmup_epochs, cfg.finetune_epochs) == (14, 7, 10)
    assert (cfg.proto_kmeans_n_init, cfg.check_kmeans_n_init) == (3, 5)
    paper = gp.ScGPCLConfig.from_preset("paper", n_clusters=3)
    assert (paper.pretrain_epochs, paper.warmup_epochs, paper.finetune_epochs, paper.lr) == (200, 100, 200, 1e-4)
    assert paper.ins_loss_mask_bug and paper.tol == 0.001 and paper.pretrain_stop_ari == 0.99
    assert "adaptation [A]" in gp.ScGPCLConfig.PRESET_NOTES["cpu"]
    for spec in gp.ScGPCLConfig.field_specs():
        assert spec.help and (spec.choices or spec.min is not None or spec.kind in ("bool", "str")), spec.name
    with pytest.raises(ValueError, match="granularity"):
        gp.ScGPCLConfig(n_clusters=3, granularity="1,2,3,4")
    with pytest.raises(ValueError, match="num_samples"):
        gp.ScGPCLConfig(n_clusters=3, num_samples=[])


# --------------------------------------------------------------------------------------------- fit
def _tiny_config(**kw):
    base = dict(n_clusters=3, seed=0, finetune_epochs=3, snapshot_every=2, tol=0.0, torch_threads=1)
    base.update(kw)
    return gp.ScGPCLConfig.from_preset("tiny", **base)


@pytest.fixture(scope="module")
def tiny_data():
    return synthetic(150, 60, 3, seed=1)



@pytest.mark.slow
def test_phases_losses_and_snapshot_schedule(tiny_data):
    """scGPCL-specific layout (the generic contract is in test_methods_contract.py)."""
    cb = Recorder()
    res = get_method("scgpcl").fit(tiny_data, _tiny_config(), callback=cb, label_key="cell_type")
    assert res.embedding.shape == (150, 8) and res.n_clusters <= 3
    assert len(cb.logs) == len(res.history) == 7
    assert [h.phase for h in res.history] == ["pretrain"] * 4 + ["finetune"] * 3
    assert set(res.history[0].losses) == {"zinb", "instance", "proto", "total"}
    assert res.history[0].losses["proto"] == 0.0 and res.history[2].losses["proto"] > 0
    assert set(res.history[-1].losses) == {"zinb", "kl", "total"}
    assert all(np.isfinite(list(h.losses.values())).all() for h in res.history)
    assert "ari" in res.history[-1].metrics  # display only
    assert [s.epoch for s in res.snapshots] == [0, 2, 4, 6, 7]
    assert res.extras["finetune_epochs_run"] == 3 and res.extras["pretrain_epochs_run"] == 4


@pytest.mark.slow
def test_cancel_during_finetuning(tiny_data):
    cb = Recorder(stop_after=5)
    res = get_method("scgpcl").fit(tiny_data, _tiny_config(), callback=cb)
    assert res.status == "cancelled" and len(res.history) == 5 and res.history[-1].phase == "finetune"


def test_needs_integer_counts(tiny_data):
    bad = tiny_data.copy()
    bad.X = bad.X.astype(np.float32) * 0.37
    with pytest.raises(ValueError, match="counts"):
        get_method("scgpcl").fit(bad, _tiny_config())


