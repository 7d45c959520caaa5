"""Shared losses (docs/methods.md §0.3–0.5) against analytic values and scipy."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import nbinom

from scclust_core import losses


@pytest.mark.parametrize("b, t", [(4, 0.5), (8, 0.07), (16, 1.0)])
def test_nt_xent_identical_orthogonal_views_analytic(b, t):
    z = torch.eye(b, 32)
    expected = math.log(2 * b - 2 + math.exp(1 / t)) - 1 / t
    assert losses.nt_xent(z.double(), z.double(), t).item() == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_nt_xent_symmetric_and_matches_numpy():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    assert losses.nt_xent(a, b, 0.3).item() == pytest.approx(losses.nt_xent(b, a, 0.3).item(), rel=1e-6)
    v = torch.cat([a, b]).numpy().astype(np.float64)
    s = v @ v.T / 0.3
    n = len(v)
    ref = np.mean([-s[i, (i + 6) % n] + np.log(sum(np.exp(s[i, j]) for j in range(n) if j != i)) for i in range(n)])
    assert losses.nt_xent(a, b, 0.3).item() == pytest.approx(ref, rel=1e-5)


def test_info_nce_identical_orthogonal():
    b, t = 5, 0.5
    z = torch.eye(b, 8)
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + b - 1))
    assert losses.info_nce(z, z, t).item() == pytest.approx(expected, rel=1e-5)


def test_nb_and_zinb_against_scipy():
    x = torch.tensor([[0.0, 3.0, 10.0, 1.0]], dtype=torch.float64)
    mu = torch.tensor([[2.0, 4.0, 8.0, 0.5]], dtype=torch.float64)
    th = torch.tensor([[1.5, 2.0, 0.7, 3.0]], dtype=torch.float64)
    p = (th / (th + mu)).numpy()
    nb_ref = -nbinom.logpmf(x.numpy(), th.numpy(), p)
    assert losses.nb_nll(x, mu, th).item() == pytest.approx(nb_ref.mean(), rel=1e-6)
    pi = torch.full_like(x, 0.3)
    pmf = nbinom.pmf(x.numpy(), th.numpy(), p)
    zinb_ref = -np.log(np.where(x.numpy() == 0, 0.3 + 0.7 * pmf, 0.7 * pmf))
    assert losses.zinb_nll(x, mu, th, pi).item() == pytest.approx(zinb_ref.mean(), rel=1e-6)
    # ZINB → NB as π → 0
    assert losses.zinb_nll(x, mu, th, torch.full_like(x, 1e-12)).item() == pytest.approx(nb_ref.mean(), rel=1e-6)


def test_size_factors_scale_the_mean():
    x = torch.tensor([[2.0, 5.0]])
    mu = torch.tensor([[1.0, 2.0]])
    th = torch.tensor([[2.0, 2.0]])
    sf = torch.tensor([2.0])
    assert losses.nb_nll(x, mu, th, sf).item() == pytest.approx(losses.nb_nll(x, mu * 2, th).item(), rel=1e-6)


def test_activations_clamp_and_have_finite_gradients():
    pre = torch.tensor([-100.0, 0.0, 1000.0], requires_grad=True)
    m = losses.mean_activation(pre)
    assert m.min().item() == pytest.approx(1e-5) and m.max().item() == pytest.approx(1e6, rel=1e-5)
    m.sum().backward()
    assert torch.isfinite(pre.grad).all()
    d = losses.disp_activation(torch.tensor([-100.0, 100000.0]))
    assert d[0].item() == pytest.approx(1e-4) and d[1].item() == pytest.approx(1e4)


def test_dec_components():
    z = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    mu = torch.tensor([[0.0, 0.0], [5.0, 5.0]])
    q = losses.student_t_q(z, mu)
    assert torch.allclose(q.sum(1), torch.ones(3))
    # hand value for cell 1: 1/(1+1) vs 1/(1+41) → q = 0.5/(0.5+1/42)
    assert q[1, 0].item() == pytest.approx(0.5 / (0.5 + 1 / 42), rel=1e-6)
    p = losses.target_distribution(q)
    assert torch.allclose(p.sum(1), torch.ones(3))
    assert (p.max(1).values >= q.max(1).values - 1e-6).all()  # the target sharpens
    assert losses.cluster_kl(p, p).item() == pytest.approx(-(p * torch.log(1 + 1e-6 / p)).sum(1).mean().item(), abs=1e-5)
    assert losses.cluster_kl(p, q).item() > 0
    assert losses.delta_label([0, 1, 1, 0], [0, 1, 0, 0]) == 0.25


def test_soft_kmeans_loss_zero_at_centres():
    mu = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    assert losses.soft_kmeans_loss(mu.clone(), mu).item() == pytest.approx(0.0, abs=1e-8)
    assert losses.soft_kmeans_loss(mu + 1, mu).item() > 0
