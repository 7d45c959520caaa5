"""scAMAC's networks (docs/methods.md §5.2): the identity-initialised autoencoder "DE", the EPA attention and the
multi-scale fusion network "DFKM"; the training is in :mod:`.scamac`."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._attention import DEFAULT_MAX_ELEMENTS, chunked_attention

__all__ = ["DENet", "EPA", "DFKMNet"]


def _eye_linear(i: int, o: int) -> nn.Linear:
    lin = nn.Linear(i, o)
    nn.init.eye_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


class DENet(nn.Module):
    """Identity-initialised 4-layer autoencoder: returns (Z_a, Z_b, Z_c, X')."""

    def __init__(self, n_genes: int, h1: int = 1500, h2: int = 500, paper: bool = False):
        super().__init__()
        self.paper = paper  # [P]: LeakyReLU on the reconstruction too
        self.l1, self.l2 = _eye_linear(n_genes, h1), _eye_linear(h1, h2)
        self.l3, self.l4 = _eye_linear(h2, h1), _eye_linear(h1, n_genes)

    def forward(self, x: torch.Tensor):
        za = F.leaky_relu(self.l1(x), 0.01)
        zb = F.leaky_relu(self.l2(za), 0.01)
        zc = F.leaky_relu(self.l3(zb), 0.01)
        xr = self.l4(zc)
        return za, zb, zc, (F.leaky_relu(xr, 0.01) if self.paper else xr)


class EPA(nn.Module):
    """The code's EPA: cell–cell attention (shared Q/K) + per-cell channel path, averaged (§5.2)."""

    def __init__(self, c: int = 500, n_heads: int = 3, dropout: float = 0.1,
                 max_elements: int = DEFAULT_MAX_ELEMENTS):
        super().__init__()
        self.h, self.e = n_heads, c // n_heads
        a = self.h * self.e
        self.qk, self.v, self.o = _eye_linear(c, a), _eye_linear(c, a), _eye_linear(a, c)
        self.E = _eye_linear(self.e, max(1, self.e // 3))
        self.dropout, self.max_elements = float(dropout), max_elements

    def forward(self, y: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        """``y`` [scales, n, C] → [scales, n, C]; ``keys``: rows attended over (all n when None)."""
        s, n, _ = y.shape  # [scales, cells, C]
        h, e = self.h, self.e
        qk = self.qk(y).reshape(s, n, h, e)
        v = self.v(y).reshape(s, n, h, e)
        # cell–cell attention of every cell over the n cells, or over the landmark rows ``keys`` (chunked, exact)
        q_h, v_h = qk.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)  # [s, h, n, e]
        k_h, kv_h = (q_h, v_h) if keys is None else (q_h[:, :, keys], v_h[:, :, keys])
        o1 = chunked_attention(q_h, k_h, kv_h, dropout_p=self.dropout, training=self.training,
                               max_elements=self.max_elements)
        o1 = self.o(o1.permute(0, 2, 1, 3).reshape(s, n, h * e))
        # channel path, per cell: R = softmax(K̂ᵀ Q) over the e axis; out = V̂ R  (chunked over cells)
        p = self.E.out_features
        per_cell = s * p * e
        rows = max(1, self.max_elements // max(1, per_cell))
        outs = []
        for st in range(0, n, rows):
            q_c = qk[:, st:st + rows]  # [s, c, h, e]
            k_hat = self.E(q_c)  # [s, c, h, p]
            v_hat = self.E(v[:, st:st + rows])
            r = torch.softmax(torch.matmul(k_hat.transpose(-2, -1), q_c), dim=-1)  # [s, c, p, e]
            if self.training and self.dropout > 0:
                r = F.dropout(r, p=self.dropout, training=True)
            outs.append(torch.matmul(v_hat, r))  # [s, c, h, e]
        o2 = self.o(torch.cat(outs, dim=1).reshape(s, n, h * e))
        return (o1 + o2) / 2


class DFKMNet(nn.Module):
    """Self-supervised clustering network: fuse (Z_a, Z_b, Z_c) with the multi-scale attention Block."""

    def __init__(self, h1: int = 1500, h2: int = 500, n_heads: int = 3, dropout: float = 0.1, paper: bool = False):
        super().__init__()
        self.paper = paper  # [P] Eq. 6–7: LeakyReLU on the fusion projections
        self.fa, self.fc = _eye_linear(h1, h2), _eye_linear(h1, h2)
        self.ln1, self.ln2 = nn.LayerNorm(h2, eps=1e-6), nn.LayerNorm(h2, eps=1e-6)
        self.epa = EPA(h2, n_heads, dropout)
        self.eca_w = nn.Parameter(torch.empty(1, 1, 1))  # Conv1d(1,1,k=1) without bias: a learned scalar
        nn.init.kaiming_normal_(self.eca_w)

    def forward(self, za: torch.Tensor, zb: torch.Tensor, zc: torch.Tensor,
                keys: torch.Tensor | None = None) -> torch.Tensor:
        """Fused [n, C] embedding; ``keys``: the rows the cell attention attends over (all when None)."""
        pa, pc = self.fa(za), self.fc(zc)
        if self.paper:
            pa, pc = F.leaky_relu(pa, 0.01), F.leaky_relu(pc, 0.01)
        s = torch.stack([zb, pa, pc])  # [3, n, C]
        s1 = s + self.epa(self.ln1(s), keys)
        y = self.ln2(s1)
        g = y.mean(dim=-1, keepdim=True)  # [3, n, 1]
        y = torch.sigmoid(self.eca_w.reshape(()) * g) * y
        return (s1 + y).mean(dim=0)
