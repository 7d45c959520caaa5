"""scSAMAC (docs/methods.md §2): losses against scipy, masking tiers, chunked attention, the fit contract."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from anndata import AnnData
from scipy import stats

from scclust_core.losses import cluster_level_loss, nb_nll, wasserstein_1d, zinb_nll
from scclust_core.methods import get_method
from scclust_core.methods._attention import CellMHA, chunked_attention
from scclust_core.methods.scsamac import ScSAMACConfig, mask_rates, saliency_mask
from helpers import Recorder
from helpers import synthetic_counts as _synthetic_counts


def synthetic_counts(n_cells=160, n_genes=80, k=3, seed=0, strength=5.0) -> AnnData:
    return _synthetic_counts(n_cells, n_genes, k, seed, strength)


@pytest.fixture(scope="module")
def small():
    return synthetic_counts()


def tiny_config(**kw) -> ScSAMACConfig:
    base = dict(n_clusters=3, snapshot_every=2, torch_threads=1)
    base.update(kw)
    return ScSAMACConfig.from_preset("tiny", **base)


# ------------------------------------------------------------------------------------------------ losses
def test_nb_nll_matches_scipy():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 30, size=(6, 5)).astype(np.float64)
    mean = rng.uniform(0.5, 20.0, size=(6, 5))
    disp = rng.uniform(0.3, 8.0, size=(6, 5))
    sf = rng.uniform(0.5, 2.0, size=6)
    mt = mean * sf[:, None]
    ref = -stats.nbinom.logpmf(x, disp, disp / (disp + mt)).mean()
    got = nb_nll(torch.tensor(x), torch.tensor(mean), torch.tensor(disp), torch.tensor(sf)).item()
    assert got == pytest.approx(ref, rel=1e-6)


def test_zinb_nll_matches_scipy_and_tends_to_nb():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 5, size=(8, 7)).astype(np.float64)  # many zeros
    mean = rng.uniform(0.2, 6.0, size=(8, 7))
    disp = rng.uniform(0.3, 5.0, size=(8, 7))
    pi = rng.uniform(0.05, 0.6, size=(8, 7))
    p = disp / (disp + mean)
    ll = np.where(x == 0, np.log(pi + (1 - pi) * stats.nbinom.pmf(0, disp, p)),
                  np.log(1 - pi) + stats.nbinom.logpmf(x, disp, p))
    t = [torch.tensor(a) for a in (x, mean, disp, pi)]
    assert zinb_nll(*t).item() == pytest.approx(-ll.mean(), rel=1e-6)
    tiny_pi = torch.full_like(t[3], 1e-9)
    assert zinb_nll(t[0], t[1], t[2], tiny_pi).item() == pytest.approx(nb_nll(t[0], t[1], t[2]).item(), rel=1e-5)


def test_wasserstein_matches_scipy_and_cluster_level_loss():
    rng = np.random.default_rng(2)
    a, b = rng.random((10, 4)), rng.random((10, 4))
    got = wasserstein_1d(torch.tensor(a), torch.tensor(b)).item()
    assert got == pytest.approx(stats.wasserstein_distance(a.ravel(), b.ravel()), rel=1e-9)
    # cluster-level: identical projections far apart column-wise → only the (zero) positive term
    eye = torch.eye(3, dtype=torch.float64) * 10
    assert cluster_level_loss(eye, eye, margin=1.0).item() == pytest.approx(0.0)
    # all-zero projections: every off-diagonal pair sits at distance 0 → K(K-1)·m² / K²
    z = torch.zeros(5, 3, dtype=torch.float64)
    assert cluster_level_loss(z, z, margin=1.0).item() == pytest.approx(6 / 9)


# ------------------------------------------------------------------------------------------------ masking
def test_mask_tiers_and_proportions():
    b = 4
    # column sums: gene 0 → ratio 1 (salient), gene 1 → 0.2 (moderate), gene 2 → 0.05, gene 3 → negative
    x = torch.zeros(b, 4)
    x[:, 0] = 10.0 / b
    x[:, 1] = 2.0 / b
    x[:, 2] = 0.5 / b
    x[:, 3] = -3.0 / b
    assert mask_rates(x).tolist() == pytest.approx([0.1, 0.3, 0.6, 0.6])
    big = x.repeat(1, 500)  # 500 copies of each tier (repeat keeps tier order per block of 4)
    gen = torch.Generator().manual_seed(0)
    dropped = []
    for _ in range(20):
        m = saliency_mask(big, gen)
        col_zero = (m == 0).all(dim=0)
        col_kept = (m == big).all(dim=0)
        assert bool((col_zero | col_kept).all()), "masking must zero whole gene columns"
        dropped.append(col_zero.reshape(500, 4).float().mean(dim=0))
    rate = torch.stack(dropped).mean(dim=0).tolist()
    assert rate[0] == pytest.approx(0.1, abs=0.03)
    assert rate[1] == pytest.approx(0.3, abs=0.03)
    assert rate[2] == pytest.approx(0.6, abs=0.03)


# ------------------------------------------------------------------------------------------------ attention
def test_chunked_attention_equals_unchunked():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 50, 6), torch.randn(3, 50, 6), torch.randn(3, 50, 5)
    ref = torch.softmax(q @ k.transpose(-1, -2) / np.sqrt(6), dim=-1) @ v
    for rows in (1, 7, 50, None):
        assert torch.allclose(chunked_attention(q, k, v, chunk_rows=rows), ref, atol=1e-6)
    mha = CellMHA(16, 4, dropout=0.1).eval()
    x = torch.randn(70, 16)
    assert torch.allclose(mha(x, chunk_rows=9), mha(x), atol=1e-6)
    # the output of one cell depends on the other cells of the minibatch (attention across cells)
    assert not torch.allclose(mha(x[:10])[0], mha(x)[0])


# ------------------------------------------------------------------------------------------------ fit
def test_phases_losses_and_snapshot_schedule(small):
    """scSAMAC-specific layout (the generic contract is in test_methods_contract.py)."""
    rec = Recorder()
    res = get_method("scsamac").fit(small, tiny_config(), callback=rec, label_key="cell_type")
    assert res.embedding.shape == (small.n_obs, 8)
    assert [h.phase for h in res.history] == ["pretrain"] * 3 + ["cluster"] * 3
    assert set(res.history[0].losses) == {"nb", "contrastive", "total"}
    assert set(res.history[-1].losses) == {"nb", "softkmeans", "total"}
    assert "ari" in res.history[-1].metrics  # cluster epochs always carry labels
    assert rec.snaps == [2, 4, 6] and rec.extra == [0]
    assert [s.epoch for s in res.snapshots] == [0, 2, 4, 6]
    assert np.isfinite(res.embedding).all()


def test_zinb_paper_intent_and_dead_losses_run(small):
    res = get_method("scsamac").fit(small, tiny_config(loss="zinb", paper_intent=True, pretrain_epochs=1,
                                                       cluster_epochs=1))
    assert set(res.history[-1].losses) == {"zinb", "softkmeans", "wasserstein", "cluster_level", "total"}
    res2 = get_method("scsamac").fit(small, tiny_config(log_dead_losses=True, pretrain_epochs=1, cluster_epochs=1))
    assert "cluster_level" in res2.history[-1].losses and np.isfinite(res2.history[-1].losses["cluster_level"])


@pytest.mark.slow  # scanpy neighbours JIT-compiles on first use
def test_leiden_estimates_k(small):
    res = get_method("scsamac").fit(small, tiny_config(n_clusters=None, cluster_epochs=1))
    assert res.extras["k_estimated"] >= 1 and res.extras["k"] == res.extras["k_estimated"]


def test_needs_counts(small):
    ad = small.copy()
    ad.X = sp.csr_matrix(np.log1p(ad.X.toarray()) + 0.1)
    with pytest.raises(ValueError, match="raw integer counts"):
        get_method("scsamac").fit(ad, tiny_config())


def test_presets():
    assert "adaptation" in ScSAMACConfig.PRESET_NOTES["cpu"].lower()
    paper = ScSAMACConfig.from_preset("paper")
    assert (paper.pretrain_epochs, paper.cluster_epochs, paper.batch_size, paper.loss) == (300, 2000, 256, "nb")
    assert paper.select_genes is None and ScSAMACConfig.from_preset("cpu").select_genes == 2000
    with pytest.raises(ValueError):
        ScSAMACConfig.from_preset("cpu", z_dim=30)  # not divisible by 8 heads


def test_select_genes_limits_the_model_input():
    ad = synthetic_counts(n_cells=160, n_genes=300, k=3, seed=2)
    method = get_method("scsamac")
    prepared = method.prepare(ad, tiny_config(select_genes=120))
    assert prepared.adata.n_vars == 120 and prepared.adata.layers["counts"].shape == (160, 120)
    assert method.prepare(ad, tiny_config(select_genes=None)).adata.n_vars == 300
    res = method.fit(ad, tiny_config(select_genes=120, pretrain_epochs=1, cluster_epochs=1))
    assert res.labels.shape == (160,)
