"""scAMAC's adaptive fuzzy k-means (docs/methods.md §5.3; Tan et al., Brief. Bioinform. 25(2) bbae068, 2024).

``d`` [N, K] Euclidean distances from embeddings to centres; ``z`` [N, D]; centres ``c`` [K, D]; memberships
``u`` [N, K] (rows sum to 1). [C] = the official code's formulas (default), [P] = the paper's (``paper=True``).
"""
from __future__ import annotations

import torch

__all__ = ["fkm_weights", "fkm_memberships", "fkm_centres", "fuzzy_update"]


def fkm_weights(d: torch.Tensor, sigma: float, paper: bool = False) -> torch.Tensor:
    """Adaptive-loss weights ``D = (1+σ)(d+2σ)/(2(d+σ))`` for Euclidean distances ``d`` [C]
    (``paper``: ``(1+σ)(d+2σ)/(d+σ)²`` as printed [P])."""
    if paper:
        return (1 + sigma) * (d + 2 * sigma) / (d + sigma).square()
    return (1 + sigma) * (d + 2 * sigma) / (2 * (d + sigma))


def fkm_memberships(d: torch.Tensor, sigma: float, gamma: float, paper: bool = False) -> torch.Tensor:
    """Fuzzy memberships ``U = softmax_j(−(1+σ)d²/(d+σ)/γ)`` [C] (``paper``: ``(1+σ)d²/√(d²+σ)`` [P], Eq. 14);
    stable softmax, rows sum to 1."""
    if paper:
        return torch.softmax(-(1 + sigma) * d.square() / torch.sqrt(d.square() + sigma) / gamma, dim=1)
    return torch.softmax(-(1 + sigma) * d.square() / (d + sigma) / gamma, dim=1)


def fkm_centres(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``C_j = Σ_i w_ij z_i / Σ_i w_ij`` with ``w = D ⊙ U``."""
    return (w.T @ z) / w.sum(dim=0).unsqueeze(1).clamp_min(1e-30)


def fuzzy_update(z: torch.Tensor, c: torch.Tensor, u: torch.Tensor, sigma: float, gamma: float, paper: bool = False):
    """Closed-form update (§5.3): new centres from D(Z, C)·U_old, then memberships to the new centres."""
    d = torch.cdist(z, c)
    c_new = fkm_centres(z, fkm_weights(d, sigma, paper) * u)
    u_new = fkm_memberships(torch.cdist(z, c_new), sigma, gamma, paper)
    return c_new, u_new
