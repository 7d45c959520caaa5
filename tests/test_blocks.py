"""Shared building blocks (methods/_blocks.py): MLP layout and RNG order, count heads, embedding clustering."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from scclust_core import losses
from scclust_core.methods._blocks import CountHead, kmeans, leiden_on_embedding, mlp


def test_mlp_layout_and_same_draws_as_a_hand_written_loop():
    torch.manual_seed(0)
    net = mlp([10, 6, 4, 3], norm=nn.BatchNorm1d, init=lambda lin: nn.init.xavier_uniform_(lin.weight))
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    torch.manual_seed(0)
    ref = []
    for i, o in ((10, 6), (6, 4), (4, 3)):
        lin = nn.Linear(i, o)
        nn.init.xavier_uniform_(lin.weight)
        ref.append(lin)
    for got, want in zip([m for m in net if isinstance(m, nn.Linear)], ref):
        assert torch.equal(got.weight, want.weight) and torch.equal(got.bias, want.bias)
    last = mlp([5, 4, 2], act_last=True)
    assert [type(m).__name__ for m in last] == ["Linear", "ReLU", "Linear", "ReLU"]
    with pytest.raises(ValueError, match="two positive widths"):
        mlp([5])


@pytest.mark.parametrize("zinb", [False, True])
def test_count_head_shapes_support_and_loss(zinb):
    head = CountHead(8, 12, zinb=zinb)
    mean, disp, pi = head(torch.randn(5, 8) * 50)
    assert mean.shape == disp.shape == (5, 12)
    assert (mean >= 1e-5).all() and (mean <= 1e6).all() and (disp >= 1e-4).all() and (disp <= 1e4).all()
    assert (pi is not None) == zinb
    if zinb:
        assert ((pi >= 0) & (pi <= 1)).all()
    x = torch.poisson(torch.full((5, 12), 3.0))
    want = losses.zinb_nll(x, mean, disp, pi) if zinb else losses.nb_nll(x, mean, disp)
    assert torch.equal(losses.count_nll(x, mean, disp, pi), want)


def test_kmeans_and_leiden_find_separated_groups():
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(3), 40)
    z = rng.normal(size=(120, 4)) + 20.0 * np.eye(3, 4)[truth]
    labels, centres = kmeans(z, 3, n_init=3, seed=0)
    assert labels.dtype == np.int64 and centres.shape == (3, 4) and centres.dtype == z.dtype
    from sklearn.metrics import adjusted_rand_score
    assert adjusted_rand_score(truth, labels) == 1.0
    again, _ = kmeans(z, 3, n_init=3, seed=0)
    assert np.array_equal(labels, again)
    lab = leiden_on_embedding(z, n_neighbors=10, resolution=0.5, seed=0)
    assert lab.dtype == np.int64 and adjusted_rand_score(truth, lab) == 1.0


@pytest.mark.parametrize("name", ["scsamac", "scamac"])
def test_amp_path_runs_with_cpu_autocast_standing_in_for_cuda(name, monkeypatch):
    """The ``amp`` code path (bfloat16 network passes, float32 losses), exercised on CPU: CPU autocast stands in
    for the CUDA one that ``amp_context`` returns on a GPU. Without ``amp`` nothing changes."""
    import importlib
    from contextlib import nullcontext

    from helpers import synthetic_counts
    from scclust_core.methods import get_method

    mod = importlib.import_module(f"scclust_core.methods.{name}")
    used = []

    def cpu_amp(enabled, device):
        used.append(enabled)
        return torch.autocast("cpu", dtype=torch.bfloat16) if enabled else nullcontext()

    monkeypatch.setattr(mod, "amp_context", cpu_amp)
    m = get_method(name)
    ad = synthetic_counts(120, 50, 3, 0, 6.0)
    res = m.fit(ad, m.default_config("tiny", n_clusters=3, amp=True, snapshot_every=0, torch_threads=1))
    assert any(used) and np.isfinite(res.embedding).all() and res.embedding.dtype == np.float32
    assert all(np.isfinite(v) for h in res.history for v in h.losses.values())
