"""scSAMAC's network and saliency-adjusted mask (docs/methods.md §2.2–§2.3); the training is in :mod:`.scsamac`."""
from __future__ import annotations

import torch
import torch.nn as nn

from ._attention import CellMHA
from ._blocks import CountHead, mlp

__all__ = ["ScSAMACNet", "saliency_mask", "mask_rates"]


def mask_rates(x: torch.Tensor, thresholds=(0.1, 0.3), rates=(0.6, 0.3, 0.1)) -> torch.Tensor:
    """Per-gene drop probability of the saliency-adjusted mask (§2.3) for a minibatch ``x`` [B, G].

    ``r_g = c_g / max_g c_g`` with column sums ``c_g`` of the (z-scored) minibatch; ``r < t0`` → rates[0],
    ``t0 ≤ r < t1`` → rates[1], otherwise rates[2]. The code's edge cases are reproduced: with all sums
    negative the ratios flip, and NaN ratios (c_max = 0) fall in the last tier.
    """
    c = x.sum(dim=0)
    r = c / c.max()
    hi = torch.full_like(r, rates[2])
    return torch.where(r < thresholds[0], torch.full_like(r, rates[0]),
                       torch.where(r < thresholds[1], torch.full_like(r, rates[1]), hi))


def saliency_mask(x: torch.Tensor, generator: torch.Generator | None = None, thresholds=(0.1, 0.3),
                  rates=(0.6, 0.3, 0.1)) -> torch.Tensor:
    """Zero whole gene columns of the minibatch with the tiered probabilities of :func:`mask_rates` (no rescaling)."""
    p = mask_rates(x, thresholds, rates)
    u = torch.rand(x.shape[1], generator=generator, device=x.device, dtype=x.dtype)
    return x * (u >= p).to(x.dtype)


class ScSAMACNet(nn.Module):
    """Encoder MLP → cell attention → bottleneck → cell attention; decoder MLP → NB/ZINB heads (§2.2)."""

    def __init__(self, n_genes: int, enc=(256, 64), dec=(64, 256), z_dim: int = 32, n_heads: int = 8,
                 attn_dropout: float = 0.1, zinb: bool = False):
        super().__init__()
        w = int(enc[-1])
        self.encoder = mlp([n_genes, *enc], act_last=True)
        self.attn1 = CellMHA(w, n_heads, attn_dropout)
        self.bottleneck = nn.Linear(w, z_dim)
        self.attn2 = CellMHA(z_dim, n_heads, attn_dropout)
        self.decoder = mlp([z_dim, *dec], act_last=True)
        self.head = CountHead(int(dec[-1]), n_genes, zinb=zinb)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        h = h + self.attn1(h)
        z = self.bottleneck(h)
        return z + self.attn2(z)

    def decode(self, z: torch.Tensor):
        """(mean, dispersion, π or None) of the count likelihood."""
        return self.head(self.decoder(z))
