"""CICL network and losses (METHODS.md §1.2–§1.4): the sequence-length-1 "transformer" encoder, the projection
head, the one-directional InfoNCE and the cluster-aware ``CirculatePairConLoss`` — pure torch, vectorised."""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["CICLLayer", "CICLEncoder", "CICLHead", "cluster_aware_loss", "cluster_aware_loss_paper",
           "make_views"]


class CICLLayer(nn.Module):
    """One encoder layer of CICL [C] for a sequence of length 1 (§1.2 a–h).

    With one token the attention softmax is identically 1, so the context equals V: ``compute_qk=False`` skips
    the Q/K products (exact; the parameters exist either way so both settings start from the same weights).
    ``LN₀`` is a *fresh, non-learned* LayerNorm (weight 1, bias 0) as in the code; note the double residual.
    """

    def __init__(self, d_model: int, n_heads: int = 2, d_k: int = 512, d_v: int = 512, d_ff: int = 1024,
                 dropout: float = 0.2):
        super().__init__()
        self.n_heads, self.d_k, self.d_v = n_heads, d_k, d_v
        self.w_q = nn.Linear(d_model, n_heads * d_k, bias=False)
        self.w_k = nn.Linear(d_model, n_heads * d_k, bias=False)
        self.w_v = nn.Linear(d_model, n_heads * d_v, bias=False)
        self.w_o = nn.Linear(n_heads * d_v, d_model, bias=False)
        self.norm1 = nn.LayerNorm(d_model)
        self.ff1 = nn.Linear(d_model, d_ff)
        self.ff2 = nn.Linear(d_ff, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = dropout
        self.compute_qk = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, G] (the length-1 sequence squeezed)
        b = x.shape[0]
        v = self.w_v(x).view(b, self.n_heads, 1, self.d_v)
        if self.compute_qk:
            q = self.w_q(x).view(b, self.n_heads, 1, self.d_k)
            k = self.w_k(x).view(b, self.n_heads, 1, self.d_k)
            attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.d_k), dim=-1)  # ≡ 1
            ctx = attn @ v
        else:
            ctx = v
        o = self.w_o(ctx.reshape(b, self.n_heads * self.d_v))
        a = F.layer_norm(o + x, (x.shape[-1],), eps=1e-5)  # fresh LayerNorm: not learned
        h = self.norm1(x + F.dropout(a, self.dropout, self.training))
        f = self.ff2(F.dropout(F.relu(self.ff1(h)), self.dropout, self.training))
        return self.norm2(h + F.dropout(f, self.dropout, self.training))


class CICLEncoder(nn.Module):
    """``n_layers`` deep copies of one layer (identical at init, as ``nn.TransformerEncoder`` builds them) +
    a final learned LayerNorm. Output dimension = number of input genes."""

    def __init__(self, d_model: int, n_layers: int = 4, **layer_kw):
        super().__init__()
        layer = CICLLayer(d_model, **layer_kw)
        self.layers = nn.ModuleList([copy.deepcopy(layer) for _ in range(n_layers)])
        self.norm = nn.LayerNorm(d_model)

    def set_compute_qk(self, flag: bool) -> None:
        for layer in self.layers:
            layer.compute_qk = bool(flag)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


class CICLHead(nn.Module):
    """Projection head ``Linear(G, 2048) → ReLU → Linear(2048, 512)``, L2-normalised output."""

    def __init__(self, d_model: int, hidden: int = 2048, out: int = 512):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, hidden), nn.ReLU(), nn.Linear(hidden, out))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(h), dim=1)


def cluster_aware_loss(f1: torch.Tensor, f2: torch.Tensor, labels: torch.Tensor, temperature: float,
                       reduction: str = "sum") -> torch.Tensor:
    """CICL's ``CirculatePairConLoss`` [C] (§1.4 item 2), vectorised.

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


def make_views(x: torch.Tensor, *, kind: str, noise_std: float, gene_frac: float,
               generator: torch.Generator) -> torch.Tensor:
    """One augmented copy of ``x`` [N, G].

    ``kind="masked_gaussian"`` [C]: per cell, ⌊gene_frac·G⌋ genes drawn uniformly without replacement get
    N(0, noise_std²) noise. ``kind="minmax_gaussian"`` [P]: N(0,1) noise linearly rescaled into [0, 1] (over
    the whole matrix) is added to every entry.
    """
    n, g = x.shape
    dev = x.device
    if kind == "minmax_gaussian":
        noise = torch.randn(n, g, generator=generator, device=dev)
        noise = (noise - noise.min()) / (noise.max() - noise.min()).clamp_min(1e-12)
        return x + noise
    m = int(math.floor(gene_frac * g))
    out = x.clone()
    if m <= 0:
        return out
    chunk = max(1, (1 << 24) // max(g, 1))
    for s in range(0, n, chunk):  # chunks over cells only bound memory; each chunk is vectorised
        e = min(s + chunk, n)
        u = torch.rand(e - s, g, generator=generator, device=dev)
        idx = torch.topk(u, m, dim=1, largest=False).indices  # m distinct genes per cell, uniform
        noise = torch.randn(e - s, m, generator=generator, device=dev) * noise_std
        out[s:e].scatter_add_(1, idx, noise)
    return out
