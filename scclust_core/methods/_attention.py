"""Exact self-attention over the cells of a minibatch, chunked over query rows (docs/methods.md §0.8).

scSAMAC and scAMAC treat the B cells of a minibatch (scAMAC at inference: all N cells, or every cell against a
fixed set of landmark cells) as one sequence of tokens. The attention matrix is B×B per head, so for large B
it is computed in chunks of query rows: softmax is taken per query row, therefore chunking is exact (same
values as the unchunked computation, up to floating-point summation order), while peak memory stays bounded
by ``max_elements``.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["chunked_attention", "CellMHA", "DEFAULT_MAX_ELEMENTS"]

#: at most this many attention scores (heads × query rows × key rows) exist at once (≈ 256 MB in float32)
DEFAULT_MAX_ELEMENTS = 1 << 26


def chunked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float | None = None,
                      dropout_p: float = 0.0, training: bool = False, chunk_rows: int | None = None,
                      max_elements: int = DEFAULT_MAX_ELEMENTS) -> torch.Tensor:
    """``dropout(softmax(q kᵀ · scale)) v`` over the last two dims, computed in chunks of query rows.

    ``q``: [..., n, e]; ``k``: [..., m, e]; ``v``: [..., m, f] → [..., n, f]. Leading dims broadcast.
    ``scale`` defaults to 1/√e. ``chunk_rows`` (None = automatic) is chosen so that at most
    ``max_elements`` scores are materialised at once. Dropout on the attention weights is applied only when
    ``training`` and ``dropout_p > 0`` (from torch's global RNG, as ``nn.Dropout`` would).
    """
    n, m = q.shape[-2], k.shape[-2]
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    lead = 1
    for s in torch.broadcast_shapes(q.shape[:-2], k.shape[:-2]):
        lead *= int(s)
    if chunk_rows is None:
        chunk_rows = max(1, int(max_elements // max(1, lead * m)))
    kt = k.transpose(-2, -1)
    use_dropout = training and dropout_p > 0
    if chunk_rows >= n:
        a = torch.softmax(torch.matmul(q, kt) * scale, dim=-1)
        if use_dropout:
            a = F.dropout(a, p=dropout_p, training=True)
        return torch.matmul(a, v)
    outs = []
    for start in range(0, n, chunk_rows):
        a = torch.softmax(torch.matmul(q[..., start:start + chunk_rows, :], kt) * scale, dim=-1)
        if use_dropout:
            a = F.dropout(a, p=dropout_p, training=True)
        outs.append(torch.matmul(a, v))
    return torch.cat(outs, dim=-2)


class CellMHA(nn.Module):
    """Multi-head self-attention over the rows (cells) of a [B, d] matrix, treated as one sequence.

    ``Q = xW_q+b, K = xW_k+b, V = xW_v+b`` (d→d each), ``h`` heads of size d/h, ``A = softmax(QKᵀ/√(d/h))``
    over the B cells, dropout on A, concatenate ``A·V`` and project with ``W_o`` (d→d). No LayerNorm and no
    feed-forward sub-block (scSAMAC §2.2). Linear layers use PyTorch's default initialisation (§8).
    """

    def __init__(self, dim: int, n_heads: int, dropout: float = 0.1, max_elements: int = DEFAULT_MAX_ELEMENTS):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"attention width {dim} is not divisible by {n_heads} heads")
        self.dim, self.n_heads, self.dropout = dim, n_heads, float(dropout)
        self.max_elements = max_elements
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, chunk_rows: int | None = None) -> torch.Tensor:
        b, d = x.shape
        h, e = self.n_heads, d // self.n_heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, h, e).transpose(0, 1)  # [h, B, e]

        out = chunked_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)), dropout_p=self.dropout,
                                training=self.training, chunk_rows=chunk_rows, max_elements=self.max_elements)
        return self.o(out.transpose(0, 1).reshape(b, d))
