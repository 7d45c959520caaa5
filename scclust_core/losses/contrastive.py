"""Contrastive losses (docs/methods.md §0.4): two views of each cell are pulled together, other cells pushed apart.

Shapes: ``B`` cells in a minibatch, ``D`` embedding dims, ``K`` clusters or prototypes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["nt_xent", "info_nce", "scgpcl_instance_loss", "prototype_loss", "cluster_level_loss",
           "cluster_aware_loss", "cluster_aware_loss_paper"]


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent / unsupervised SupCon over 2B anchors (Chen et al., SimCLR, ICML 2020; §0.4).

    ``z1``, ``z2``: [B, D] views, already normalised or not → scalar. For anchor a the positive is the other
    view of the same cell; the denominator runs over all b ≠ a. Each row's max logit is subtracted (detached)
    for stability. Identical unit-norm views with mutually orthogonal cells give ``log(2B − 2 + e^{1/T}) − 1/T``.
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
    """One-directional InfoNCE (van den Oord et al. 2018; CICL's code [C]): anchors ``f1`` [B, D], cross-view
    candidates ``f2`` [B, D] (the diagonal is the positive), no same-view negatives → mean over B."""
    logits = f1 @ f2.T / temperature
    target = torch.arange(f1.shape[0], device=f1.device)
    return F.cross_entropy(logits, target)


def scgpcl_instance_loss(rep1: torch.Tensor, rep2: torch.Tensor, tau: float, mask_bug: bool = True) -> torch.Tensor:
    """scGPCL's instance NT-Xent over the 2B L2-normalised seed representations ``rep1``, ``rep2`` [B, D] (§4.5).

    ``mask_bug=True`` reproduces the official ``ins_contrastive_loss``: the self-similarity mask covers only the
    first B rows, so a view-2 anchor keeps its own similarity (1/τ) in the denominator and averages −log p over
    two positives {other view, itself}. ``mask_bug=False`` is the standard symmetric form (:func:`nt_xent`).
    """
    z1 = F.normalize(rep1, dim=1)
    z2 = F.normalize(rep2, dim=1)
    if not mask_bug:
        return nt_xent(z1, z2, tau)
    b = z1.shape[0]
    v = torch.cat([z1, z2], dim=0)
    logits = v @ v.T / tau
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    ar = torch.arange(b, device=v.device)
    # rows of view 1: standard (self excluded from the denominator, positive = other view)
    l1 = logits[:b].clone()
    pos1 = l1[ar, ar + b]
    den1 = torch.logsumexp(l1.index_put((ar, ar), torch.tensor(float("-inf"), device=v.device)), dim=1)
    loss1 = den1 - pos1
    # rows of view 2: nothing masked; positives = other view and itself
    l2 = logits[b:]
    den2 = torch.logsumexp(l2, dim=1)
    loss2 = den2 - 0.5 * (l2[ar, ar] + l2[ar, ar + b])
    return torch.cat([loss1, loss2]).mean()


def prototype_loss(rep: torch.Tensor, assignments: list[torch.Tensor], prototypes: list[torch.Tensor],
                   tau: float) -> torch.Tensor:
    """scGPCL's prototypical contrastive loss (§4.5; after Li et al., PCL, ICLR 2021): mean over cells of the
    mean over granularities of ``−log softmax_k(cos(h_i, c_k)/τ)[a_i]``.

    ``rep`` [B, D] (view 1), ``assignments[t]`` int64 [B] in ``0..K_t−1``, ``prototypes[t]`` [K_t, D]
    (un-normalised cluster means of view 2). Identical to the code's ``pos / (pos + Σ_neg)`` form.
    """
    h = F.normalize(rep, dim=1)
    total = rep.new_zeros(rep.shape[0])
    for a, c in zip(assignments, prototypes):
        logits = h @ F.normalize(c, dim=1).T / tau
        total = total + F.cross_entropy(logits, a, reduction="none")
    return (total / max(len(assignments), 1)).mean()


def cluster_level_loss(a: torch.Tensor, b: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """scSAMAC's cluster-level hinge loss (Li et al. 2025, §2) on [B, K] projections of two views:
    ``(1/K²)[Σ_k ‖a_k−b_k‖² + Σ_{k≠l} max(0, m−‖a_k−b_l‖)²]`` over the columns (clusters)."""
    k = a.shape[1]
    d = torch.cdist(a.T.contiguous(), b.T.contiguous())  # [K, K] distances between columns
    eye = torch.eye(k, dtype=torch.bool, device=a.device)
    pos = d.diagonal().square().sum()
    neg = torch.clamp(margin - d, min=0.0).square().masked_fill(eye, 0.0).sum()
    return (pos + neg) / (k * k)


def cluster_aware_loss(f1: torch.Tensor, f2: torch.Tensor, labels: torch.Tensor, temperature: float,
                       reduction: str = "sum") -> torch.Tensor:
    """CICL's cluster-aware ``CirculatePairConLoss`` [C] (Jiang et al., CICL; docs/methods.md §1.4 item 2), vectorised.

    ``f1``, ``f2``: [B, D] unit-norm views; ``labels``: [B] pseudo-cluster ids → scalar.

    For cluster c (cells P, other cells R), each of the 2|P| anchors ``a ∈ {f1_i, f2_i}`` has
    ``pos = exp(f1_i·f2_i/T)`` and ``neg = Σ_{j∈R} exp(a·f1_j/T) + exp(a·f2_j/T)``;
    ``ℓ_c = mean_a −log(pos/(pos+neg))``. ``reduction="sum"`` (code) returns ``Σ_c ℓ_c`` over the clusters
    present; ``"mean"`` divides by their number. Same-cluster cells are removed from the denominator but are
    not positives; a batch with a single label gives 0.
    """
    v = torch.cat([f1, f2], dim=0)  # [2B, D]
    lab = torch.cat([labels, labels])
    pos_logit = (f1 * f2).sum(dim=1) / temperature  # [B]
    pos_logit = torch.cat([pos_logit, pos_logit])
    other = lab[:, None] != lab[None, :]  # [2B, 2B]
    sim = torch.exp(v @ v.T / temperature)  # |logits| ≤ 1/T: no overflow
    neg = (sim * other).sum(dim=1)
    per_anchor = -(pos_logit - torch.log(torch.exp(pos_logit) + neg))  # −log(pos/(pos+neg))
    uniq, inv, counts = torch.unique(lab, return_inverse=True, return_counts=True)
    per_cluster = torch.zeros(len(uniq), dtype=per_anchor.dtype, device=per_anchor.device)
    per_cluster = per_cluster.index_add(0, inv, per_anchor) / counts.to(per_anchor.dtype)
    return per_cluster.sum() if reduction == "sum" else per_cluster.mean()


def cluster_aware_loss_paper(f1: torch.Tensor, f2: torch.Tensor, labels: torch.Tensor,
                             temperature: float) -> torch.Tensor:
    """[P] Eq. 15 reading: for each of the 2B anchors, the numerator sums over every *same-cluster* vector
    (both views, the anchor itself excluded), the denominator over numerator + other-cluster vectors;
    ``−log(num / (num + neg))`` averaged over 2B anchors (our interpretation of the paper's formula)."""
    v = torch.cat([f1, f2], dim=0)
    lab = torch.cat([labels, labels])
    n2 = v.shape[0]
    sim = torch.exp(v @ v.T / temperature)
    eye = torch.eye(n2, dtype=torch.bool, device=v.device)
    same = (lab[:, None] == lab[None, :]) & ~eye
    num = (sim * same).sum(dim=1)
    neg = (sim * ~(same | eye)).sum(dim=1)
    return -(torch.log(num) - torch.log(num + neg)).mean()
