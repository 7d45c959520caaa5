"""Losses and DEC components shared by the deep methods (METHODS.md §0.3–§0.5), as pure torch functions.

Shapes: ``B`` cells in a minibatch, ``D`` embedding dims, ``G`` genes, ``K`` clusters.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "nt_xent", "info_nce", "mean_activation", "disp_activation", "nb_nll", "zinb_nll", "count_nll", "student_t_q",
    "target_distribution", "cluster_kl", "soft_kmeans_loss", "delta_label",
]

EPS = 1e-10
_LOG_MAX_MEAN = math.log(1e6)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent / unsupervised SupCon over 2B anchors (§0.4). ``z1``, ``z2``: [B, D], already normalised or not.

    For anchor a the positive is the other view of the same cell; the denominator runs over all b ≠ a.
    Each row's max logit is subtracted (detached) for stability. Identical unit-norm views with mutually
    orthogonal cells give ``log(2B − 2 + e^{1/T}) − 1/T``.
    """
    if z1.shape != z2.shape:
        raise ValueError(f"views must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    b = z1.shape[0]
    v = torch.cat([z1, z2], dim=0)
    logits = v @ v.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    self_mask = torch.eye(2 * b, dtype=torch.bool, device=v.device)
    pos_index = torch.arange(2 * b, device=v.device).roll(b)
    pos = logits[torch.arange(2 * b, device=v.device), pos_index]
    denom = torch.logsumexp(logits.masked_fill(self_mask, float("-inf")), dim=1)
    return (denom - pos).mean()


def info_nce(f1: torch.Tensor, f2: torch.Tensor, temperature: float) -> torch.Tensor:
    """One-directional InfoNCE (CICL [C]): anchors from view 1, cross-view negatives only; mean over B."""
    logits = f1 @ f2.T / temperature
    target = torch.arange(f1.shape[0], device=f1.device)
    return F.cross_entropy(logits, target)


def mean_activation(pre: torch.Tensor) -> torch.Tensor:
    """NB mean head: ``clamp(exp(pre), 1e-5, 1e6)`` computed on a pre-activation clamped at log(1e6) (§0.3)."""
    return torch.clamp(torch.exp(torch.clamp(pre, max=_LOG_MAX_MEAN)), min=1e-5, max=1e6)


def disp_activation(pre: torch.Tensor) -> torch.Tensor:
    """NB dispersion head: ``clamp(softplus(pre), 1e-4, 1e4)``."""
    return torch.clamp(F.softplus(pre), min=1e-4, max=1e4)


def _nb_terms(x: torch.Tensor, mean: torch.Tensor, disp: torch.Tensor) -> torch.Tensor:
    t1 = torch.lgamma(disp + EPS) + torch.lgamma(x + 1.0) - torch.lgamma(x + disp + EPS)
    t2 = (disp + x) * torch.log1p(mean / (disp + EPS)) + x * (torch.log(disp + EPS) - torch.log(mean + EPS))
    return t1 + t2


def nb_nll(x: torch.Tensor, mean: torch.Tensor, disp: torch.Tensor, size_factors: torch.Tensor | None = None) -> torch.Tensor:
    """Negative-binomial NLL (DCA form), mean over all B×G entries. ``size_factors``: [B] rescale the mean."""
    if size_factors is not None:
        mean = mean * size_factors.reshape(-1, 1)
    return _nb_terms(x, mean, disp).mean()


def zinb_nll(x: torch.Tensor, mean: torch.Tensor, disp: torch.Tensor, pi: torch.Tensor,
             size_factors: torch.Tensor | None = None, ridge: float = 0.0) -> torch.Tensor:
    """Zero-inflated NB NLL (DCA form, §0.3), mean over all B×G entries; ``ridge``·π² optional (0 in the repos)."""
    if size_factors is not None:
        mean = mean * size_factors.reshape(-1, 1)
    nb_case = _nb_terms(x, mean, disp) - torch.log(1.0 - pi + EPS)
    zero_nb = torch.pow(disp / (disp + mean + EPS), disp)
    zero_case = -torch.log(pi + (1.0 - pi) * zero_nb + EPS)
    loss = torch.where(x <= 1e-8, zero_case, nb_case)
    if ridge > 0:
        loss = loss + ridge * pi.square()
    return loss.mean()


def count_nll(x: torch.Tensor, mean: torch.Tensor, disp: torch.Tensor, pi: torch.Tensor | None,
              size_factors: torch.Tensor | None = None) -> torch.Tensor:
    """NB NLL when ``pi`` is None, else ZINB NLL: the loss for the outputs of ``methods._blocks.CountHead``."""
    if pi is None:
        return nb_nll(x, mean, disp, size_factors)
    return zinb_nll(x, mean, disp, pi, size_factors)


def student_t_q(z: torch.Tensor, mu: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """DEC soft assignment [B, K]: Student-t kernel between embeddings ``z`` [B, D] and centres ``mu`` [K, D]."""
    d2 = torch.cdist(z, mu).square()
    q = torch.pow(1.0 + d2 / alpha, -(alpha + 1.0) / 2.0)
    return q / q.sum(dim=1, keepdim=True)


def target_distribution(q: torch.Tensor) -> torch.Tensor:
    """DEC target ``p_ik ∝ q_ik² / f_k`` with ``f_k = Σ_i q_ik`` (compute on the full data, detached)."""
    w = q.square() / q.sum(dim=0)
    return (w / w.sum(dim=1, keepdim=True)).detach()


def cluster_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL clustering loss as coded in scGPCL: ``mean_i Σ_k p log(p / (q + 1e-6))`` (0·log 0 taken as 0)."""
    return torch.sum(torch.xlogy(p, p) - p * torch.log(q + 1e-6), dim=1).mean()


def soft_kmeans_loss(z: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """Weighted soft k-means loss (scziDesk form, §0.5); the weights are not detached."""
    d = torch.cdist(z, mu).square()
    w = torch.softmax(-(d - d.min(dim=1, keepdim=True).values), dim=1)
    w = w.square() / w.square().sum(dim=1, keepdim=True)
    return (w * d).sum(dim=1).mean()


def delta_label(new, old) -> float:
    """Fraction of cells whose label changed (DEC stopping rule)."""
    import numpy as np

    new, old = np.asarray(new), np.asarray(old)
    return float((new != old).mean())
