"""scAMAC (docs/methods.md §5): fuzzy k-means updates, identity init, exact chunked attention, the fit contract."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from anndata import AnnData

from scclust_core.methods import get_method
from scclust_core.methods.scamac import (EPA, DENet, DFKMNet, ScAMACConfig, auto_batch_size, fkm_centres,
                                         fkm_memberships, fkm_weights, fuzzy_update)
from helpers import Recorder
from helpers import synthetic_counts as _synthetic_counts


def synthetic_counts(n_cells=150, n_genes=60, k=3, seed=0, strength=5.0) -> AnnData:
    return _synthetic_counts(n_cells, n_genes, k, seed, strength)


@pytest.fixture(scope="module")
def small():
    return synthetic_counts()


def tiny_config(**kw) -> ScAMACConfig:
    base = dict(n_clusters=3, snapshot_every=2, torch_threads=1)
    base.update(kw)
    return ScAMACConfig.from_preset("tiny", **base)


# ------------------------------------------------------------------------------------------------ fuzzy k-means
def test_memberships_sum_to_one_and_are_stable():
    torch.manual_seed(0)
    z, c = torch.randn(40, 5), torch.randn(4, 5)
    u = fkm_memberships(torch.cdist(z, c), 0.01, 1.0)
    assert torch.allclose(u.sum(dim=1), torch.ones(40), atol=1e-6)
    # the code's exp / row-sum form, where it does not underflow
    d = torch.cdist(z, c)
    raw = torch.exp(-(1.01) * d.square() / (d + 0.01))
    assert torch.allclose(u, raw / raw.sum(dim=1, keepdim=True), atol=1e-6)
    # very large distances: the code's form underflows to NaN, the stable softmax does not
    far = fkm_memberships(torch.cdist(z * 1e3, c), 0.01, 1.0)
    assert torch.isfinite(far).all() and torch.allclose(far.sum(dim=1), torch.ones(40), atol=1e-6)


def test_fkm_weights_and_centre_update():
    d = torch.tensor([[0.0, 1.0], [2.0, 0.5]])
    w = fkm_weights(d, 0.01)
    expected = 1.01 * (d + 0.02) / (2 * (d + 0.01))
    assert torch.allclose(w, expected)
    # centres are the D·U-weighted means; with one-hot weights they are plain cluster means
    z = torch.tensor([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0], [12.0, 10.0]])
    onehot = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert torch.allclose(fkm_centres(z, onehot), torch.tensor([[1.0, 0.0], [11.0, 10.0]]))
    c_new, u_new = fuzzy_update(z, torch.tensor([[0.5, 0.0], [11.5, 10.0]]), onehot, 0.01, 1.0)
    assert torch.allclose(u_new.sum(dim=1), torch.ones(4), atol=1e-6)
    assert u_new.argmax(dim=1).tolist() == [0, 0, 1, 1]
    # new centre 0 = D-weighted mean of cells 0 and 1 (distances 0.5 and 1.5 to the old centre)
    w0, w1 = [1.01 * (dd + 0.02) / (2 * (dd + 0.01)) for dd in (0.5, 1.5)]
    assert c_new[0, 0].item() == pytest.approx((w0 * 0.0 + w1 * 2.0) / (w0 + w1), rel=1e-5)
    assert c_new[1, 0].item() == pytest.approx((w0 * 12.0 + w1 * 10.0) / (w0 + w1), rel=1e-5)


def test_auto_batch_size():
    assert [auto_batch_size(n) for n in (100, 499, 500, 699, 700, 5000)] == [32, 32, 100, 100, 128, 128]


# ------------------------------------------------------------------------------------------------ architecture
def test_identity_initialisation():
    de = DENet(10, 16, 6)
    for lin in (de.l1, de.l2, de.l3, de.l4):
        w = lin.weight.detach()
        assert torch.equal(w, torch.eye(*w.shape)) and torch.count_nonzero(lin.bias) == 0
    x = torch.rand(4, 10)
    za, zb, zc, xr = de(x)
    assert torch.allclose(za[:, :10], x) and torch.count_nonzero(za[:, 10:]) == 0
    assert torch.allclose(zb, x[:, :6])
    net = DFKMNet(16, 6, n_heads=3)
    for mod in net.modules():
        if isinstance(mod, torch.nn.Linear):
            assert torch.equal(mod.weight.detach(), torch.eye(*mod.weight.shape))


def test_epa_chunked_equals_unchunked():
    torch.manual_seed(0)
    y = torch.randn(3, 57, 30)
    full = EPA(30, 3, dropout=0.1).eval()
    chunked = EPA(30, 3, dropout=0.1, max_elements=200).eval()  # forces many query-row and cell chunks
    chunked.load_state_dict(full.state_dict())
    a, b = full(y), chunked(y)
    assert a.shape == (3, 57, 30)
    assert torch.allclose(a, b, atol=1e-5)
    # a cell's output depends on the other cells attended over
    assert not torch.allclose(full(y[:, :10])[:, 0], a[:, 0], atol=1e-4)


# ------------------------------------------------------------------------------------------------ fit
def test_phases_losses_and_snapshot_schedule(small):
    """scAMAC-specific layout (the generic contract is in test_methods_contract.py)."""
    rec = Recorder()
    res = get_method("scamac").fit(small, tiny_config(), callback=rec, label_key="cell_type")
    assert res.embedding.shape == (small.n_obs, 30)
    assert [h.phase for h in res.history] == ["autoencoder", "autoencoder", "fkm"] * 2
    assert set(res.history[0].losses) == {"reconstruction", "layer_match", "similarity", "total"}
    assert set(res.history[2].losses) == {"fkm"}
    assert all("ari" in h.metrics for h in res.history)  # memberships give labels every epoch
    assert rec.snaps == [2, 4, 6] and rec.extra == [0]
    assert np.isfinite(res.embedding).all()


def test_lognormalised_input_warns(small):
    ad = small.copy()
    ad.X = sp.csr_matrix(np.log1p(ad.X.toarray() / 3.0))
    with pytest.warns(UserWarning, match="does not hold raw counts"):
        res = get_method("scamac").fit(ad, tiny_config(epochs=1, de_epochs=1, fkm_epochs=1))
    assert res.labels.shape == (small.n_obs,)
    ad.X = sp.csr_matrix(ad.X.toarray() - 1.0)  # scaled data: rejected
    with pytest.raises(ValueError, match="raw counts"):
        get_method("scamac").fit(ad, tiny_config())


def test_paper_variants_run(small):
    res = get_method("scamac").fit(small, tiny_config(paper_formulas=True, gene_filter="detected_cells", epochs=1))
    assert res.labels.shape == (small.n_obs,) and np.isfinite(res.embedding).all()
    d = torch.tensor([[0.5, 2.0]])
    assert torch.allclose(fkm_weights(d, 0.01, paper=True), 1.01 * (d + 0.02) / (d + 0.01) ** 2)
    assert torch.allclose(fkm_memberships(d, 0.01, 1.0, paper=True).sum(), torch.tensor(1.0))


def test_presets_and_k_required(small):
    assert "adaptation" in ScAMACConfig.PRESET_NOTES["cpu"].lower()
    paper = ScAMACConfig.from_preset("paper")
    assert (paper.epochs, paper.de_epochs, paper.fkm_epochs, paper.hidden1, paper.hidden2) == (50, 3, 2, 1500, 500)
    with pytest.raises(ValueError, match="n_clusters"):
        get_method("scamac").fit(small, tiny_config(n_clusters=None))


def test_landmark_attention_is_exact_for_small_n_and_attends_only_landmarks(small):
    torch.manual_seed(0)
    epa = EPA(30, 3, dropout=0.0).eval()
    y = torch.randn(3, 40, 30)
    with torch.no_grad():
        assert torch.allclose(epa(y, torch.arange(40)), epa(y), atol=1e-6)
        keys = torch.arange(0, 40, 4)
        out = epa(y, keys)
        y2 = y.clone()
        y2[:, 1] += 5.0  # cell 1 is not a landmark: only its own output may change
        out2 = epa(y2, keys)
    others = [i for i in range(40) if i != 1]
    assert torch.allclose(out2[:, others], out[:, others], atol=1e-6) and not torch.allclose(out2[:, 1], out[:, 1])
    m = get_method("scamac")
    exact = m.fit(small, tiny_config(landmarks=0, snapshot_every=0))
    same = m.fit(small, tiny_config(landmarks=10_000, snapshot_every=0))  # N ≤ landmarks: all cells, exact
    np.testing.assert_array_equal(exact.labels, same.labels)
    np.testing.assert_array_equal(exact.embedding, same.embedding)
    lm = m.fit(small, tiny_config(landmarks=50, snapshot_every=0))
    assert lm.extras["attention_keys"] == 50 and exact.extras["attention_keys"] == small.n_obs
    assert np.isfinite(lm.embedding).all()
    assert ScAMACConfig.from_preset("paper").landmarks == 0 and ScAMACConfig().landmarks == 2048
