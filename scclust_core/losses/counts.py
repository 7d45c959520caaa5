"""Count likelihoods of the autoencoder decoders (docs/methods.md §0.3): NB and ZINB in the DCA form.

Eraslan et al., "Single-cell RNA-seq denoising using a deep count autoencoder", Nat. Commun. 2019 (DCA);
used by scDeepCluster, scSAMAC (NB) and scGPCL (ZINB). Shapes: ``x``, ``mean``, ``disp``, ``pi`` [B, G];
``size_factors`` [B].
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["EPS", "mean_activation", "disp_activation", "nb_nll", "zinb_nll", "count_nll"]

EPS = 1e-10
_LOG_MAX_MEAN = math.log(1e6)


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
