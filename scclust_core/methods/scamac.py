"""scAMAC — adaptive multi-scale autoencoder with cell-attention fusion and fuzzy k-means (docs/methods.md §5).

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
- Attention across cells: training attends within the minibatch; in the code every full-data pass attends over
  **all N cells at once** (§0.8) [C], computed exactly in chunks of query rows (and of cells for the per-cell
  channel path) so memory stays bounded — but its time is O(N²). By default [A] a full-data pass attends over a
  fixed random set of ``landmarks`` cells (2,048, drawn once per fit from a generator seeded with the seed):
  every cell is a query, the landmarks are the keys and values, so a pass costs O(N·L). With N ≤ ``landmarks``
  the landmarks are all cells, i.e. exactly the code's attention; ``landmarks=0`` (the ``paper`` preset) always
  attends over all N. Dropout stays on in those passes, including the final one [C];
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
from ..losses import fkm_centres, fkm_memberships, fkm_weights, fuzzy_update
from ..preprocess import recipe_r4
from ..estimate import CostModel, measured_runs
from ._attention import DEFAULT_MAX_ELEMENTS, chunked_attention
from ._types import MethodCard
from ._base import ClusteringMethod, FitContext, Prepared
from ._blocks import amp_context
from ._loop import EpochMeter, NonFiniteLossError, check_finite, encode_all, minibatches, to_device
from ._params import adaptation_note, cuda_amp, smoke_test_note, variant
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
    gene_filter: str = variant("total_counts", choices=("total_counts", "detected_cells"),
                               help="Gene filter before HVGs: total count ≥ min_gene_frac·N [C], or non-zero in ≥ "
                                    "min_gene_frac of the cells [P].")
    cosine_tmax: int = param(100, min=1, max=10000, advanced=True, help="T_max of the cosine schedule(s), in outer epochs.")
    double_cosine: bool = variant(True,
                                  "[Q] two chained CosineAnnealingLR(T_max) on the FKM optimizer (compounded decay) "
                                  "as in the code; off = one cosine schedule.")
    paper_formulas: bool = variant(False,
                                   "[P] variant: LeakyReLU on the reconstruction and the two fusion projections, "
                                   "D = (1+σ)(d+2σ)/(d+σ)² and U = softmax(−(1+σ)d²/√(d²+σ)/γ). Default = code [C].")
    landmarks: int = param(2048, min=0, max=1_000_000, advanced=True,
                           help="[A] Full-data passes attend over this many fixed random landmark cells (keys and "
                                "values) instead of all N: O(N·L) instead of O(N²). Exact when N ≤ landmarks; "
                                "0 = always all N cells, as the code [C].")
    amp: bool = cuda_amp("the training passes of both networks (losses in float32) [A]")
    deterministic_inference: bool = variant(False,
                                            "Full-data passes in eval mode (no attention dropout). The code keeps "
                                            "dropout on, also for the final labels [C].")

    PRESETS = {
        "paper": {"epochs": 50, "de_epochs": 3, "fkm_epochs": 2, "landmarks": 0},
        "cpu": {"epochs": 7, "de_epochs": 3, "fkm_epochs": 2},
        "tiny": {"epochs": 2, "de_epochs": 2, "fkm_epochs": 1, "hidden1": 48, "hidden2": 30, "batch_size": 64,
                 "snapshot_every": 1},
    }
    PRESET_NOTES = {
        "paper": "Official run.py settings [C]: 50 outer epochs × (3 DE + 2 FKM epochs), widths 1500/500, 3,000 HVGs.",
        "cpu": adaptation_note("7 outer epochs (≈ 2 min at 3,000 cells on 2 cores)."),
        "tiny": smoke_test_note("narrow networks, 2 outer epochs"),
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


def _cos_gram(m: torch.Tensor) -> torch.Tensor:
    mn = F.normalize(m, dim=1)
    return mn @ mn.T


class _Fit:
    """Data, networks, optimisers and random streams of one fit: minibatch orders and the denoising noise come
    from the seeded torch generator ``gen``, the initial centre cells from ``rng``; attention dropout from torch's
    global RNG (seeded by ``fit``), as ``nn.Dropout`` would."""

    def __init__(self, ad: AnnData, config: ScAMACConfig, device: str):
        cfg = self.cfg = config
        self.dev = torch.device(device)
        self.n, g = ad.shape
        self.x = to_device(np.asarray(ad.X), self.dev, torch.float32)
        self.bs = int(cfg.batch_size or auto_batch_size(self.n))
        self.gen = torch.Generator(device=self.dev)
        self.gen.manual_seed(int(cfg.seed))
        self.rng = np.random.default_rng(cfg.seed)
        pf = cfg.paper_formulas
        self.de = DENet(g, cfg.hidden1, cfg.hidden2, paper=pf).to(self.dev)
        self.net = DFKMNet(cfg.hidden1, cfg.hidden2, cfg.n_heads, cfg.attn_dropout, paper=pf).to(self.dev)
        self.de.train()
        self.net.train()
        self.opt_de = torch.optim.Adam(self.de.parameters(), lr=cfg.lr)
        self.opt_f = torch.optim.SGD(self.net.parameters(), lr=cfg.fkm_lr)
        self.skipped_nan = 0
        lm = int(cfg.landmarks)
        self.keys = None  # full-data passes attend over all cells (exact, [C]) unless there are more than L
        if 0 < lm < self.n:  # own generator: the landmark draw leaves every other random stream unchanged
            rows = np.sort(np.random.default_rng([cfg.seed, 2]).choice(self.n, size=lm, replace=False))
            self.keys = torch.as_tensor(rows, dtype=torch.int64, device=self.dev)

    def amp(self):
        """bfloat16 autocast for a training pass on CUDA when ``amp`` is set; a no-op otherwise."""
        return amp_context(self.cfg.amp, self.dev)

    def features(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Clean DE features (Z_a, Z_b, Z_c) of all cells (a per-cell MLP, so chunking is exact), detached."""
        return encode_all(lambda xb: self.de(xb)[:3], self.x, batch=2048, numpy=False)

    def fuse(self, feats, train_mode: bool | None = None) -> torch.Tensor:
        """Fused embedding of all N cells, attending over all N at once (chunked exactly inside EPA) or over the
        landmark cells when N > ``landmarks``. Dropout stays on as in the code [C] unless
        ``deterministic_inference``; ``train_mode`` overrides."""
        was = self.net.training
        self.net.train((not self.cfg.deterministic_inference) if train_mode is None else train_mode)
        with torch.no_grad():
            z = self.net(*feats, keys=self.keys)
        self.net.train(was)
        return z

    def display_embedding(self) -> np.ndarray:
        """Display-only full pass in eval mode (consumes no random numbers)."""
        return self.fuse(self.features(), train_mode=False).cpu().numpy()

    def memberships(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return fkm_memberships(torch.cdist(z, c), self.cfg.sigma, self.cfg.gamma, self.cfg.paper_formulas)

    def update(self, z: torch.Tensor, c: torch.Tensor, u: torch.Tensor, outer: int):
        """Closed-form centres and memberships (§5.3); returns (C, U, labels)."""
        c, u = fuzzy_update(z, c, u, self.cfg.sigma, self.cfg.gamma, self.cfg.paper_formulas)
        check_finite("scAMAC's fuzzy memberships", u, epoch=outer + 1, phase="fkm")
        return c, u, u.argmax(dim=1).cpu().numpy().astype(np.int64)

    def set_fkm_lr(self, outer: int) -> float:
        """Cosine decay of the DFKM learning rate per outer epoch; two chained schedulers compound it [Q]."""
        factor = 0.5 * (1 + math.cos(math.pi * outer / self.cfg.cosine_tmax))
        lr = self.cfg.fkm_lr * factor ** (2 if self.cfg.double_cosine else 1)
        for grp in self.opt_f.param_groups:
            grp["lr"] = lr
        return lr


def _de_epoch(f: _Fit, u: torch.Tensor, ctx: FitContext, epoch: int) -> dict[str, float]:
    """One shuffled pass of the autoencoder on ``x + U[0, noise)``: MSE(X', x) + MSE(Z_a, Z_c) +
    MSE(cosSim(U_b), cosSim(Z_b)). A non-finite minibatch is skipped, as the code does [C] (that decision needs
    the value on the host: the one per-batch sync of scAMAC)."""
    meter = EpochMeter()
    for idx in minibatches(f.n, f.bs, rng=f.gen):
        xb = f.x[idx]
        noisy = xb + f.cfg.noise * torch.rand(xb.shape, generator=f.gen, device=f.dev)
        with f.amp():
            out = f.de(noisy)
        za, zb, zc, xr = (t.float() for t in out)
        rec, lm, sim = F.mse_loss(xr, xb), F.mse_loss(za, zc), F.mse_loss(_cos_gram(zb), _cos_gram(u[idx]))
        loss = rec + lm + sim
        if not torch.isfinite(loss):
            f.skipped_nan += 1
            continue
        f.opt_de.zero_grad(set_to_none=True)
        loss.backward()
        f.opt_de.step()
        meter.add(1, reconstruction=rec, layer_match=lm, similarity=sim, total=loss)
        if ctx.stop_requested:
            break
    if not len(meter):
        raise NonFiniteLossError("Every autoencoder minibatch loss", float("nan"), epoch=epoch, phase="autoencoder")
    return meter.means(epoch=epoch, phase="autoencoder")


def _fkm_epoch(f: _Fit, feats, c: torch.Tensor, u: torch.Tensor, dmat: torch.Tensor, ctx: FitContext,
               epoch: int) -> dict[str, float]:
    """One shuffled pass of the clustering network on ``(1/b) Σ_i Σ_j D_ij U_ij ‖z_i − C_j‖²`` (D, U, C fixed)."""
    meter = EpochMeter()
    for idx in minibatches(f.n, f.bs, rng=f.gen):
        with f.amp():
            zb = f.net(feats[0][idx], feats[1][idx], feats[2][idx])
        d2 = torch.cdist(zb.float(), c).square()
        loss = (dmat[idx] * u[idx] * d2).sum(dim=1).mean()
        f.opt_f.zero_grad(set_to_none=True)
        loss.backward()
        f.opt_f.step()
        meter.add(1, fkm=loss)
        if ctx.stop_requested:
            break
    return meter.means(epoch=epoch, phase="fkm")


# ----------------------------------------------------------------------------------------------------- method
def _work_units(config) -> float:
    """scAMAC's epochs nest: each outer epoch runs ``de_epochs`` autoencoder and ``fkm_epochs`` clustering epochs."""
    return float(config.get("epochs", 0)) * (float(config.get("de_epochs", 0)) + float(config.get("fkm_epochs", 0)))


@register_method("scamac")
class ScAMAC(ClusteringMethod[ScAMACConfig]):
    """Identity-initialised multi-scale autoencoder with cell-attention fusion and adaptive fuzzy k-means (scAMAC)."""

    card = MethodCard(
        what=('An autoencoder of the counts with attention, alternated with a fuzzy K-means clustering loss every '
              'outer epoch.'),
        when=('Can separate small, similar populations that classic methods merge; slow on a CPU (minutes per '
              'thousand cells).'))
    #: measured on a 2-core CPU, one torch thread (README benchmark tables; peak RSS of one-run processes)
    cost = CostModel(
        measured_runs("cpu", (4271, 2000, 174), (2746, 2003, 100), (4186, 13488, 176), (822, 14878, 45),
                             (220, 12694, 22), (1000, 900, 30.5), (8617, 2000, 477))
        + measured_runs("paper", (2746, 2003, 780)), work_units=_work_units)

    citation = ("Tan et al., scAMAC: self-supervised clustering of scRNA-seq data based on adaptive multi-scale "
                "autoencoder, Briefings in Bioinformatics 25(2) bbae068, 2024")
    recipe = "R4 (genes ≥ 5 % of N counts, median normalisation, log1p, 3,000 HVGs, no scaling)"
    # K must be given; faithful: the base defaults
    needs_counts = False  # log-normalised input accepted with a warning (the published code read a preprocessed CSV)

    def prepare(self, adata: AnnData, config: ScAMACConfig) -> Prepared:
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

    def planned_epochs(self, config: ScAMACConfig) -> int:
        return config.epochs * (config.de_epochs + config.fkm_epochs)

    def train(self, data: Prepared, config: ScAMACConfig, ctx: FitContext):
        f = _Fit(data.adata, config, ctx.device)
        # initialisation: clean full pass, centres = K distinct random cells (+1e-6), memberships
        z = f.fuse(f.features())
        check_finite("scAMAC's initial embedding", z, epoch=0, phase="init")
        c = z[torch.as_tensor(f.rng.choice(f.n, size=int(config.n_clusters), replace=False), device=f.dev)] + 1e-6
        u = f.memberships(z, c)
        labels = u.argmax(dim=1).cpu().numpy().astype(np.int64)
        ctx.initial(z.cpu().numpy(), labels)
        for t in range(config.epochs):
            # 1. autoencoder (DE) epochs with the memberships U fixed
            for epoch in ctx.phase("autoencoder", config.de_epochs):
                losses = _de_epoch(f, u, ctx, epoch)
                if ctx.emit(epoch, "autoencoder", losses, embedding=f.display_embedding, labels=labels):
                    break
            if ctx.stop_requested:
                break
            # 2. clustering-network (FKM) epochs with C, U and the adaptive weights D fixed
            lr = f.set_fkm_lr(t)
            feats = f.features()
            if config.fkm_epochs > 0:
                z = f.fuse(feats)
            dmat = fkm_weights(torch.cdist(z, c), config.sigma, config.paper_formulas)
            for j, epoch in enumerate(ctx.phase("fkm", config.fkm_epochs)):
                losses = _fkm_epoch(f, feats, c, u, dmat, ctx, epoch)
                last = j == config.fkm_epochs - 1
                if last or ctx.stop_requested:  # 3. end of the outer epoch: closed-form C and U, labels
                    z = f.fuse(feats)
                    c, u, labels = f.update(z, c, u, t)
                z_now = z
                if ctx.emit(epoch, "fkm", losses, embedding=(lambda: z_now.cpu().numpy()) if last else f.display_embedding,
                            labels=labels, extra_metrics={"lr_fkm": lr}):
                    break
            if config.fkm_epochs == 0:  # still one closed-form update per outer epoch
                z = f.fuse(feats)
                c, u, labels = f.update(z, c, u, t)
            if ctx.stop_requested:
                break
        if ctx.stop_requested:  # labels from the current model: fresh pass, memberships to the current centres
            z = f.fuse(f.features())
            labels = f.memberships(z, c).argmax(dim=1).cpu().numpy().astype(np.int64)
        extras = {"batch_size": f.bs, "skipped_nan_batches": f.skipped_nan, "n_genes_used": int(data.adata.n_vars),
                  "attention_keys": f.n if f.keys is None else int(len(f.keys)),
                  "centres": c.cpu().numpy().astype(np.float32)}
        return z.cpu().numpy().astype(np.float32), labels, extras
