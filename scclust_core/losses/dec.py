"""DEC-family clustering losses (docs/methods.md §0.5): soft assignment to centres and its sharpened target.

Xie, Girshick & Farhadi, "Unsupervised deep embedding for clustering analysis", ICML 2016 (DEC: Student-t q,
target p, KL); the weighted soft k-means of scziDesk (Chen et al., NAR Genom. Bioinform. 2020) as scSAMAC
codes it. Shapes: ``z`` [B, D] embeddings, ``mu`` [K, D] centres, ``p``/``q`` [B, K].
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["student_t_q", "target_distribution", "cluster_kl", "soft_kmeans_loss", "wasserstein_1d", "delta_label"]


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
    """Weighted soft k-means loss (scziDesk form, §0.5) of ``z`` [B, D] to ``mu`` [K, D]; weights not detached."""
    d = torch.cdist(z, mu).square()
    w = torch.softmax(-(d - d.min(dim=1, keepdim=True).values), dim=1)
    w = w.square() / w.square().sum(dim=1, keepdim=True)
    return (w * d).sum(dim=1).mean()


def wasserstein_1d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1-D Wasserstein distance between the flattened arrays treated as equal-size samples (scSAMAC's p vs q).

    Equals ``scipy.stats.wasserstein_distance(a.ravel(), b.ravel())`` and is differentiable (sort-based).
    """
    return (torch.sort(a.reshape(-1)).values - torch.sort(b.reshape(-1)).values).abs().mean()


def delta_label(new, old) -> float:
    """Fraction of cells whose label changed (DEC stopping rule)."""
    new, old = np.asarray(new), np.asarray(old)
    return float((new != old).mean())
