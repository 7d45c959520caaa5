"""scGPCL's network, prototypes and granularities (docs/methods.md §4.4–§4.5); the training is in :mod:`.scgpcl`."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from ..losses import prototype_loss
from ._bipartite import BipartiteSAGEEncoder, Subgraph, mean_operator
from ._blocks import CountHead, kmeans
from ._loop import check_finite

__all__ = ["ScGPCLNet", "prototypes", "prototype_term", "granularity_values", "granularity_levels"]


def granularity_values(text: str) -> list[float]:
    try:
        vals = [float(v) for v in str(text).replace(";", ",").replace(" ", ",").split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"granularity must be 1 to 3 comma-separated numbers, got {text!r}") from None
    if not 1 <= len(vals) <= 3 or any(v <= 0 for v in vals):
        raise ValueError(f"granularity must be 1 to 3 positive numbers, got {text!r}")
    return vals


def granularity_levels(k: int, granularity: str | list[float] = "1,1.5,2") -> list[int]:
    """Prototype counts per granularity, as ``infer_num_proto`` computes them (K = 8 → 8, 12, 16)."""
    g = granularity_values(granularity) if isinstance(granularity, str) else list(granularity)
    if len(g) == 1:
        return [int(k * g[0])]
    if len(g) == 2:
        c1 = k * g[0]
        return [int(c1), int(max(c1 + 1, math.ceil(k * g[1])))]
    c1 = int(math.floor(k * g[0]))
    c2 = int(max(c1 + 1, k * g[1]))
    c3 = int(max(c2 + 1, math.ceil(k * g[2])))
    return [c1, c2, c3]


def prototype_term(rep1: torch.Tensor, rep2: torch.Tensor, protos: list[int], *, n_init: int,
                   seeds: Callable[[], int], tau: float, epoch: int) -> torch.Tensor:
    """Prototypical loss against per-minibatch K-means prototypes of the detached view-2 representations, one
    K-means per granularity in ``protos`` (seeded by ``seeds()``, drawn in that order)."""
    r2 = rep2.detach().cpu().numpy()  # K-means runs on the host anyway: the check below costs no extra sync
    check_finite("scGPCL's view-2 representations", r2, epoch=epoch, phase="pretrain")
    assigns, cents = [], []
    for kt in protos:
        a, c = prototypes(r2, kt, n_init, seeds())
        assigns.append(torch.from_numpy(a).to(rep1.device))
        cents.append(torch.from_numpy(c).to(rep1.device))
    return prototype_loss(rep1, assigns, cents, tau)


def prototypes(rep2: np.ndarray, k: int, n_init: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """K-means on the detached view-2 seed reps: (assignments 0..K'−1, un-normalised means [K', D])."""
    labels, _ = kmeans(rep2, int(min(k, rep2.shape[0])), n_init=n_init, seed=seed)
    uniq, inv = np.unique(labels, return_inverse=True)
    sums = np.zeros((uniq.size, rep2.shape[1]), dtype=np.float64)
    np.add.at(sums, inv, rep2)
    cent = sums / np.bincount(inv)[:, None]
    return inv.astype(np.int64), cent.astype(np.float32)


class ScGPCLNet(nn.Module):
    """Gene embedding + bipartite GraphSAGE encoder + ZINB decoder + DEC centres μ."""

    def __init__(self, n_genes: int, n_clusters: int, hidden: int = 256, latent: int = 64):
        super().__init__()
        self.gene_embedding = nn.Embedding(n_genes, latent)
        self.encoder = BipartiteSAGEEncoder(n_genes, gene_dim=latent, hidden=hidden, out=latent)
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.BatchNorm1d(hidden), nn.ReLU())
        self.head = CountHead(hidden, n_genes, zinb=True)
        # official: allocated uninitialised, set by K-means before fine-tuning (never used before)
        self.mu = nn.Parameter(torch.zeros(n_clusters, latent))

    def encode(self, x: torch.Tensor, sub: Subgraph, cell_mask: torch.Tensor | None = None,
               gene_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Representation [n_c, D] of every cell of the subgraph ``sub`` from the expression rows ``x``, with
        optional feature-column masks of the cell features and of the gene embeddings."""
        dev = x.device
        x_c = x[torch.from_numpy(sub.cells).to(dev)]
        if cell_mask is not None:
            x_c = x_c * cell_mask
        x_g = self.gene_embedding.weight[torch.from_numpy(sub.genes).to(dev)]
        if gene_mask is not None:
            x_g = x_g * gene_mask
        m_gc = mean_operator(sub.gc_src, sub.gc_dst, sub.cells.size, sub.genes.size, dev)
        m_cg = mean_operator(sub.cg_src, sub.cg_dst, sub.genes.size, sub.cells.size, dev)
        return self.encoder(x_c, x_g, m_gc, m_cg)

    def decode(self, rep: torch.Tensor, n_seeds: int):
        """Decoder over all subgraph cells (BN statistics over all of them), heads on the seed rows only."""
        return self.head(self.decoder(rep)[:n_seeds])
