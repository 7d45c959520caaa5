"""scAMAC — adaptive multi-scale autoencoder with cell-attention fusion and fuzzy k-means (METHODS.md §5).

Citation: Tan et al., "scAMAC: self-supervised clustering of scRNA-seq data based on adaptive multi-scale
autoencoder", Briefings in Bioinformatics 2024, 25(2) bbae068; code ``yancy2024/scAMAC`` @ 591b7c3.

What runs by default is the official code [C]:

- R4 preprocessing: genes with total count ≥ 5 % of N, median-library normalisation, log1p, 3,000 HVGs (seurat
  flavour) kept in dataset order, no scaling. Without raw counts in the input, ``X`` is taken as already
  log-normalised (as the published ``run.py`` reads a preprocessed CSV) **with a warning**, and only the HVG
  selection is applied; negative or non-finite values are rejected.
- Autoencoder "DE" ``G→1500→500→1500→G`` (LeakyReLU 0.01, none on the reconstruction), **every Linear
  identity-initialised (``eye_``) with zero bias** — so with G > 1500 only the first 1500 genes feed it at start.
- Clustering network "DFKM": ``F_a, F_c: Linear(1500,500)`` (no activation), the three scales
  ``[Z_b, F_a Z_a, F_c Z_c]`` go through one Block (LN → EPA → residual; LN → kernel-1 ECA scale weighting →
  residual) and are averaged → 500-d embedding. EPA = ``(O1 + O2)/2`` with cell–cell attention (shared
  query/key projection, 3 heads of 166, softmax over the cells, dropout 0.1) and the per-cell channel path
  (``E: Linear(166,55)`` shared by keys and values, softmax over the 166 axis). Every Linear in DFKM is
  eye-initialised too; the ECA scalar is Kaiming-normal.
- Losses: ``L_DE = MSE(X', x) + MSE(Z_a, Z_c) + MSE(cosSim(U_b), cosSim(Z_b))`` on the noisy pass
  (``x + U[0,1)``), ``L_FKM = (1/b) Σ_i Σ_j D_ij U_ij ‖z_i − C_j‖²`` with fixed D, U, C (σ = 0.01, γ = 1).
- Closed-form updates once per outer epoch: ``D = (1+σ)(d+2σ)/(2(d+σ))``, ``U = softmax(−(1+σ)d²/(d+σ)/γ)``
  (stable softmax instead of the code's underflowing exp — same values when it does not underflow),
  ``C = Σ D U Z / Σ D U`` with the previous U, then U recomputed. Labels = argmax U.
- Schedule: init C from K distinct random cells (+1e-6); per outer epoch ``de_epochs`` of DE (Adam 1e-4,
  shuffled minibatches; NaN batches skipped), a clean full pass, ``fkm_epochs`` of FKM (SGD 1e-4, shuffled),
  a full pass and the closed-form update. The DFKM learning rate follows two chained cosine schedulers
  (T_max 100) [Q, reproduced; ``double_cosine=False`` uses one]. Batch size 32 / 100 / 128 for N < 500 / < 700 / else.
- Attention across cells: training attends within the minibatch; every full-data pass attends over **all N
  cells at once** (§0.8), computed exactly in chunks of query rows (and of cells for the per-cell channel path)
  so memory stays bounded. Dropout stays on in those passes, including the final one [C];
  ``deterministic_inference=True`` switches them to eval mode.
- [P] variants as options: ``paper_formulas`` (LeakyReLU on the reconstruction and the fusion projections,
  the printed D and U formulas) and ``gene_filter='detected_cells'`` (genes non-zero in ≥ 5 % of cells). The
  paper's UNETR++-style EPA (Eq. 9–11) is not offered: the spec says to implement the code's EPA.
- The final epoch's labels are returned — never the best-ARI epoch that the current ``run.py`` selects with the
  ground truth [Q, §0.9, not reproduced]. An FKM NaN stops the run with an error (the code reported ARI 0).

Choices where the spec is silent: the denoising target of the reconstruction MSE is the clean input; D is
computed once per outer epoch from the full pass that precedes the FKM epochs (the pseudo-code recomputes it
from the same Z and C, so the value is identical); the initial centre cells and the minibatch order come from
generators seeded with ``config.seed`` (the code used unseeded Python ``random``); snapshots at epochs that do not
end an outer epoch use a display-only full pass in eval mode that consumes no random numbers; on a cancel the
labels come from the current model (fresh full pass, memberships to the current centres).
"""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn
import torch.nn.functional as F
from anndata import AnnData

from ..config import MethodConfig, param
from ..preprocess import recipe_r4
from ._attention import DEFAULT_MAX_ELEMENTS, chunked_attention
from ._base import ClusteringMethod, FitContext, Prepared
from ._registry import register_method

logger = logging.getLogger(__name__)

__all__ = ["ScAMACConfig", "ScAMAC", "DENet", "DFKMNet", "EPA", "fuzzy_update", "fkm_weights",
           "fkm_memberships", "fkm_centres", "auto_batch_size"]


@dataclass
class ScAMACConfig(MethodConfig):
    epochs: int = param(50, min=0, max=1000, help="Outer epochs (each = DE epochs + FKM epochs + one centroid update). "
                                                   "run.py: 50; method default 100.")
    de_epochs: int = param(3, min=0, max=100, help="Autoencoder (DE) epochs per outer epoch.")
    fkm_epochs: int = param(2, min=0, max=100, help="Fuzzy k-means network (FKM) epochs per outer epoch (method default 3).")
    batch_size: int | None = param(None, min=2, max=8192,
                                   help="Minibatch size; empty = the code's rule (32 if N < 500, 100 if N < 700, else 128).")
    lr: float = param(1e-4, min=1e-7, max=1.0, help="Autoencoder learning rate (Adam, constant).")
    fkm_lr: float = param(1e-4, min=1e-7, max=1.0, help="Clustering-network learning rate (SGD, cosine decay).")
    n_hvg: int = param(3000, min=50, max=50000, help="Highly variable genes kept (seurat flavour, dataset order).")
    hidden1: int = param(1500, min=8, max=10000, advanced=True, help="Width of the encoder/decoder layer.")
    hidden2: int = param(500, min=8, max=10000, advanced=True,
                         help="Bottleneck width = fusion channels C (head size ⌊C/heads⌋).")
    n_heads: int = param(3, min=1, max=32, advanced=True, help="Attention heads of the EPA block.")
    attn_dropout: float = param(0.1, min=0.0, max=0.9, advanced=True, help="Dropout on both attention maps.")
    noise: float = param(1.0, min=0.0, max=10.0, advanced=True,
                         help="Amplitude of the uniform [0, a) noise added to the input for the denoising pass.")
    sigma: float = param(0.01, min=1e-6, max=10.0, advanced=True, help="σ of the adaptive fuzzy k-means loss.")
    gamma: float = param(1.0, min=1e-6, max=100.0, advanced=True, help="Fuzziness γ of the membership softmax.")
    min_gene_frac: float = param(0.05, min=0.0, max=1.0, advanced=True,
                                 help="Keep genes whose total count is at least this fraction of the cell number [C].")
    double_cosine: bool = param(True, advanced=True,
                                help="[Q] two chained CosineAnnealingLR(T_max) on the FKM optimizer (compounded decay) "
                                     "as in the code; off = one cosine schedule.")
    cosine_tmax: int = param(100, min=1, max=10000, advanced=True, help="T_max of the cosine schedule(s), in outer epochs.")
    gene_filter: str = param("total_counts", choices=("total_counts", "detected_cells"), advanced=True,
                             help="Gene filter before HVGs: total count ≥ min_gene_frac·N [C], or non-zero in ≥ "
                                  "min_gene_frac of the cells [P].")
    paper_formulas: bool = param(False, advanced=True,
                                 help="[P] variant: LeakyReLU on the reconstruction and the two fusion projections, "
                                      "D = (1+σ)(d+2σ)/(d+σ)² and U = softmax(−(1+σ)d²/√(d²+σ)/γ). Default = code [C].")
    deterministic_inference: bool = param(False, advanced=True,
                                          help="Full-data passes in eval mode (no attention dropout). The code keeps "
                                               "dropout on, also for the final labels [C].")

    PRESETS = {
        "paper": {"epochs": 50, "de_epochs": 3, "fkm_epochs": 2},
        "cpu": {"epochs": 7, "de_epochs": 3, "fkm_epochs": 2},
    }
    PRESET_NOTES = {
        "paper": "Official run.py settings [C]: 50 outer epochs × (3 DE + 2 FKM epochs), widths 1500/500, 3,000 HVGs.",
        "cpu": "Adaptation [A], not the published setting: 7 outer epochs (≈ 2 min at 3,000 cells on 2 cores).",
    }

    def validate(self) -> None:
        super().validate()
        e = self.hidden2 // self.n_heads
        if e < 3:
            raise ValueError(f"hidden2={self.hidden2} is too small for {self.n_heads} heads (head size {e} < 3)")


def auto_batch_size(n: int) -> int:
    """The code's batch-size rule (§5.4)."""
    return 32 if n < 500 else (100 if n < 700 else 128)


def _eye_linear(i: int, o: int) -> nn.Linear:
    lin = nn.Linear(i, o)
    nn.init.eye_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


# ----------------------------------------------------------------------------------------------------- networks
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

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        s, n, _ = y.shape  # [scales, cells, C]
        h, e = self.h, self.e
        qk = self.qk(y).reshape(s, n, h, e)
        v = self.v(y).reshape(s, n, h, e)
        # cell–cell attention over the n cells (exact, chunked over query rows)
        q_h, v_h = qk.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)  # [s, h, n, e]
        o1 = chunked_attention(q_h, q_h, v_h, dropout_p=self.dropout, training=self.training,
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

    def forward(self, za: torch.Tensor, zb: torch.Tensor, zc: torch.Tensor) -> torch.Tensor:
        pa, pc = self.fa(za), self.fc(zc)
        if self.paper:
            pa, pc = F.leaky_relu(pa, 0.01), F.leaky_relu(pc, 0.01)
        s = torch.stack([zb, pa, pc])  # [3, n, C]
        s1 = s + self.epa(self.ln1(s))
        y = self.ln2(s1)
        g = y.mean(dim=-1, keepdim=True)  # [3, n, 1]
        y = torch.sigmoid(self.eca_w.reshape(()) * g) * y
        return (s1 + y).mean(dim=0)


# ----------------------------------------------------------------------------------------------------- fuzzy k-means
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


def _cos_gram(m: torch.Tensor) -> torch.Tensor:
    mn = F.normalize(m, dim=1)
    return mn @ mn.T


# ----------------------------------------------------------------------------------------------------- method
@register_method("scamac")
class ScAMAC(ClusteringMethod):
    """Identity-initialised multi-scale autoencoder with cell-attention fusion and adaptive fuzzy k-means (scAMAC)."""

    Config = ScAMACConfig
    citation = ("Tan et al., scAMAC: self-supervised clustering of scRNA-seq data based on adaptive multi-scale "
                "autoencoder, Briefings in Bioinformatics 25(2) bbae068, 2024")
    recipe = "R4 (genes ≥ 5 % of N counts, median normalisation, log1p, 3,000 HVGs, no scaling)"
    needs_counts = False  # log-normalised input accepted with a warning (the published code read a preprocessed CSV)
    can_estimate_k = False
    fidelity = "faithful"

    def prepare(self, adata: AnnData, config: ScAMACConfig) -> Prepared:  # type: ignore[override]
        try:
            if config.gene_filter == "detected_cells":  # [P]: drop genes that are zero in > (1 − frac) of the cells
                from ..preprocess import get_counts

                detected = np.asarray((get_counts(adata) > 0).sum(axis=0)).ravel()
                keep = detected >= config.min_gene_frac * adata.n_obs
                sub = adata[:, keep].copy()
                ad = recipe_r4(sub, n_top_genes=config.n_hvg, min_gene_frac=0.0)
            else:
                ad = recipe_r4(adata, n_top_genes=config.n_hvg, min_gene_frac=config.min_gene_frac)
        except ValueError as err:
            if "raw integer counts" not in str(err):
                raise
            ad, msg = self._from_lognormalised(adata, config)
            return Prepared(ad, ad.obs["cell_index"].to_numpy(np.int64), warnings=[msg])
        return Prepared(ad, ad.obs["cell_index"].to_numpy(np.int64))

    @staticmethod
    def _from_lognormalised(adata: AnnData, config: ScAMACConfig) -> tuple[AnnData, str]:
        """X taken as log-normalised (only HVG selection applied), with the warning for the run; data that is
        neither counts nor log-scale (negative, or max above ``LOG_SCALE_MAX``, e.g. CPM) is refused."""
        from ..preprocess import _hvg, lognormalised_input

        x, msg = lognormalised_input(adata, "scAMAC")
        msg += " Only the HVG selection is applied (no gene filter)."
        logger.warning(msg)
        warnings.warn(msg, UserWarning, stacklevel=3)
        ad = AnnData(x, obs=adata.obs[[]].copy(), var=adata.var[[]].copy())
        ad.obs["cell_index"] = np.arange(adata.n_obs, dtype=np.int64)
        ad = _hvg(ad, config.n_hvg)
        out = AnnData(np.asarray(ad.X.toarray() if sp.issparse(ad.X) else ad.X, dtype=np.float32),
                      obs=ad.obs.copy(), var=ad.var[[]].copy(), uns={"input_was_counts": False})
        return out, msg

    # ------------------------------------------------------------------------------------------- passes
    @staticmethod
    def _de_full(de: DENet, x: torch.Tensor, chunk: int = 2048):
        """Clean DE features of all cells (per-cell MLP, so batching is exact), detached."""
        with torch.no_grad():
            parts = [de(x[i:i + chunk])[:3] for i in range(0, x.shape[0], chunk)]
        return tuple(torch.cat([p[j] for p in parts]) for j in range(3))

    @staticmethod
    def _dfkm_full(net: DFKMNet, feats, train_mode: bool) -> torch.Tensor:
        """Fused embedding of all N cells attending over all N at once (chunked exactly inside EPA)."""
        was = net.training
        net.train(train_mode)
        with torch.no_grad():
            z = net(*feats)
        net.train(was)
        return z

    def train(self, data: Prepared, config: ScAMACConfig, ctx: FitContext):  # type: ignore[override]
        ad = data.adata
        dev = torch.device(ctx.device)
        n, g = ad.shape
        k = int(config.n_clusters)
        x = torch.as_tensor(np.asarray(ad.X), dtype=torch.float32, device=dev)
        bs = int(config.batch_size or auto_batch_size(n))
        gen = torch.Generator(device=dev)
        gen.manual_seed(int(config.seed))
        rng = np.random.default_rng(config.seed)
        pf = config.paper_formulas
        de = DENet(g, config.hidden1, config.hidden2, paper=pf).to(dev)
        net = DFKMNet(config.hidden1, config.hidden2, config.n_heads, config.attn_dropout, paper=pf).to(dev)
        de.train()
        net.train()
        opt_de = torch.optim.Adam(de.parameters(), lr=config.lr)
        opt_f = torch.optim.SGD(net.parameters(), lr=config.fkm_lr)
        sigma, gamma = config.sigma, config.gamma
        infer_train = not config.deterministic_inference

        # ---- initialisation: clean full pass, centres = K distinct random cells (+1e-6), memberships
        feats = self._de_full(de, x)
        z = self._dfkm_full(net, feats, infer_train)
        if not torch.isfinite(z).all():
            raise FloatingPointError("scAMAC: the initial embedding contains NaN/inf")
        cells = rng.choice(n, size=k, replace=False)
        c = z[torch.as_tensor(cells, device=dev)] + 1e-6
        u = fkm_memberships(torch.cdist(z, c), sigma, gamma, pf)
        labels = u.argmax(dim=1).cpu().numpy().astype(np.int64)
        per_outer = config.de_epochs + config.fkm_epochs
        ctx.begin(config.epochs * per_outer)
        ctx.initial(z.cpu().numpy(), labels)

        def perm_batches():
            perm = torch.randperm(n, generator=gen, device=dev)
            return [perm[i:i + bs] for i in range(0, n, bs)]

        def display_emb(epoch: int, z_now: torch.Tensor | None) -> np.ndarray | None:
            if not ctx.snapshot_due(epoch):
                return None
            if z_now is None:  # display-only pass: eval mode, consumes no random numbers
                z_now = self._dfkm_full(net, self._de_full(de, x), False)
            return z_now.cpu().numpy()

        epoch_g = 0
        stopped = False
        skipped_nan = 0
        for t in range(config.epochs):
            # ---------------- DE training (U fixed)
            for _ in range(config.de_epochs):
                sums = {"reconstruction": 0.0, "layer_match": 0.0, "similarity": 0.0, "total": 0.0}
                nb = 0
                for idx in perm_batches():
                    xb = x[idx]
                    noisy = xb + config.noise * torch.rand(xb.shape, generator=gen, device=dev)
                    za, zb, zc, xr = de(noisy)
                    rec = F.mse_loss(xr, xb)
                    lm = F.mse_loss(za, zc)
                    sim = F.mse_loss(_cos_gram(zb), _cos_gram(u[idx]))
                    loss = rec + lm + sim
                    if not torch.isfinite(loss):
                        skipped_nan += 1  # the code skips NaN batches
                        continue
                    opt_de.zero_grad(set_to_none=True)
                    loss.backward()
                    opt_de.step()
                    for key, val in (("reconstruction", rec), ("layer_match", lm), ("similarity", sim), ("total", loss)):
                        sums[key] += float(val.detach())
                    nb += 1
                    if ctx.stop_requested:
                        break
                epoch_g += 1
                losses = {kk: (v / nb if nb else float("nan")) for kk, v in sums.items()}
                if ctx.emit(epoch_g, "autoencoder", losses, embedding=display_emb(epoch_g, None), labels=labels):
                    stopped = True
                    break
            if stopped:
                break

            # ---------------- FKM training (C, U, D fixed)
            lr_factor = 0.5 * (1 + math.cos(math.pi * t / config.cosine_tmax))
            for grp in opt_f.param_groups:
                grp["lr"] = config.fkm_lr * lr_factor ** (2 if config.double_cosine else 1)
            feats = self._de_full(de, x)
            if config.fkm_epochs > 0:
                z = self._dfkm_full(net, feats, infer_train)
                dmat = fkm_weights(torch.cdist(z, c), sigma, pf)
            for j in range(config.fkm_epochs):
                tot, nb = 0.0, 0
                for idx in perm_batches():
                    zb_ = net(feats[0][idx], feats[1][idx], feats[2][idx])
                    d2 = torch.cdist(zb_, c).square()
                    loss = (dmat[idx] * u[idx] * d2).sum(dim=1).mean()
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"scAMAC: the fuzzy k-means loss became NaN/inf at outer epoch {t + 1} "
                                                 "(the original code aborts here and reports ARI 0)")
                    opt_f.zero_grad(set_to_none=True)
                    loss.backward()
                    opt_f.step()
                    tot += float(loss.detach())
                    nb += 1
                    if ctx.stop_requested:
                        break
                epoch_g += 1
                last_inner = j == config.fkm_epochs - 1
                if last_inner or ctx.stop_requested:
                    # end of the outer epoch: full pass, closed-form centres and memberships, labels
                    z = self._dfkm_full(net, feats, infer_train)
                    c, u = fuzzy_update(z, c, u, sigma, gamma, pf)
                    if not torch.isfinite(u).all():
                        raise FloatingPointError(f"scAMAC: memberships became NaN at outer epoch {t + 1}")
                    labels = u.argmax(dim=1).cpu().numpy().astype(np.int64)
                emb = display_emb(epoch_g, z if last_inner else None)
                if ctx.emit(epoch_g, "fkm", {"fkm": tot / max(nb, 1)}, embedding=emb, labels=labels,
                            extra_metrics={"lr_fkm": opt_f.param_groups[0]["lr"]}):
                    stopped = True
                    break
            if config.fkm_epochs == 0:  # still do the closed-form update once per outer epoch
                z = self._dfkm_full(net, feats, infer_train)
                c, u = fuzzy_update(z, c, u, sigma, gamma, pf)
                labels = u.argmax(dim=1).cpu().numpy().astype(np.int64)
            if stopped:
                break

        if stopped:  # labels from the current model: fresh pass, memberships to the current centres
            z = self._dfkm_full(net, self._de_full(de, x), infer_train)
            u = fkm_memberships(torch.cdist(z, c), sigma, gamma, pf)
            labels = u.argmax(dim=1).cpu().numpy().astype(np.int64)
        extras = {"batch_size": bs, "skipped_nan_batches": skipped_nan, "n_genes_used": int(g),
                  "centres": c.cpu().numpy().astype(np.float32)}
        return z.cpu().numpy().astype(np.float32), labels, extras
