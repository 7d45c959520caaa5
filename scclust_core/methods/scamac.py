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

import functools
import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from anndata import AnnData

from ..config import MethodConfig, param
from ..losses import fkm_centres, fkm_memberships, fkm_weights, fuzzy_update
from ..preprocess import recipe_r4
from ..estimate import CostModel, measured_runs
from ._types import MethodCard
from ._base import FitContext, Prepared
from ._blocks import amp_context
from ._loop import EpochMeter, NonFiniteLossError, check_finite, encode_all, minibatches, to_device
from ._params import adaptation_note, cuda_amp, smoke_test_note, variant
from ._registry import register_method
from ._scamac_net import DENet, DFKMNet, EPA
from ._trainer import DeepMethod, Phase, Report, Trainer

logger = logging.getLogger(__name__)

__all__ = ["ScAMACConfig", "ScAMAC", "ScAMACTrainer", "DENet", "DFKMNet", "EPA", "fuzzy_update", "fkm_weights",
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


def _cos_gram(m: torch.Tensor) -> torch.Tensor:
    mn = F.normalize(m, dim=1)
    return mn @ mn.T


class ScAMACTrainer(Trainer[ScAMACConfig]):
    """Outer epochs of (autoencoder phase, FKM phase + closed-form update), from centres on K random cells (§5.3).

    Minibatch orders and the denoising noise come from the seeded torch generator ``gen``, the initial centre cells
    from ``rng``; attention dropout from torch's global RNG (seeded by ``fit``), as ``nn.Dropout`` would.
    """

    def __init__(self, data: Prepared, config: ScAMACConfig, ctx: FitContext):
        super().__init__(data, config, ctx)
        cfg, ad = config, data.adata
        self.n, self.n_genes = ad.shape
        self.x = to_device(np.asarray(ad.X), self.dev, torch.float32)
        self.bs = int(cfg.batch_size or auto_batch_size(self.n))
        self.gen = torch.Generator(device=self.dev)
        self.gen.manual_seed(int(cfg.seed))
        self.rng = np.random.default_rng(cfg.seed)
        pf = cfg.paper_formulas
        self.de = DENet(self.n_genes, cfg.hidden1, cfg.hidden2, paper=pf).to(self.dev)
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
        # initialisation: clean full pass, centres = K distinct random cells (+1e-6), memberships
        self.z = self.fuse(self.features())
        check_finite("scAMAC's initial embedding", self.z, epoch=0, phase="init")
        self.c = self.z[torch.as_tensor(self.rng.choice(self.n, size=int(cfg.n_clusters), replace=False),
                                        device=self.dev)] + 1e-6
        self.u = self.memberships(self.z, self.c)
        self.labels = self.u.argmax(dim=1).cpu().numpy().astype(np.int64)
        # the current outer epoch's FKM state (set by _start_fkm)
        self.t, self.lr_fkm, self.fkm_first = 0, float(cfg.fkm_lr), 0
        self.feats: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.dmat: torch.Tensor | None = None
        self.cancelled = False

    def initial_view(self) -> tuple[np.ndarray, np.ndarray]:
        return self.z.cpu().numpy(), self.labels

    def phases(self) -> list[Phase]:
        """Per outer epoch: the autoencoder (DE) epochs with U fixed, then the clustering-network (FKM) epochs with
        C, U and the adaptive weights D fixed, ending with the closed-form update of C and U."""
        cfg, out = self.cfg, []
        for t in range(cfg.epochs):
            out += [Phase("autoencoder", cfg.de_epochs, self._de_epoch),
                    Phase("fkm", cfg.fkm_epochs, self._fkm_epoch, start=functools.partial(self._start_fkm, t))]
        return out

    def _de_epoch(self, epoch: int) -> Report:
        """One shuffled pass of the autoencoder on ``x + U[0, noise)``: MSE(X', x) + MSE(Z_a, Z_c) +
        MSE(cosSim(U_b), cosSim(Z_b)). A non-finite minibatch is skipped, as the code does [C] (that decision needs
        the value on the host: the one per-batch sync of scAMAC)."""
        meter, u = EpochMeter(), self.u
        for idx in minibatches(self.n, self.bs, rng=self.gen):
            xb = self.x[idx]
            noisy = xb + self.cfg.noise * torch.rand(xb.shape, generator=self.gen, device=self.dev)
            with self.amp():
                out = self.de(noisy)
            za, zb, zc, xr = (t.float() for t in out)
            rec, lm, sim = F.mse_loss(xr, xb), F.mse_loss(za, zc), F.mse_loss(_cos_gram(zb), _cos_gram(u[idx]))
            loss = rec + lm + sim
            if not torch.isfinite(loss):
                self.skipped_nan += 1
                continue
            self.opt_de.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_de.step()
            meter.add(1, reconstruction=rec, layer_match=lm, similarity=sim, total=loss)
            if self.ctx.stop_requested:
                break
        if not len(meter):
            raise NonFiniteLossError("Every autoencoder minibatch loss", float("nan"), epoch=epoch, phase="autoencoder")
        return Report(meter.means(epoch=epoch, phase="autoencoder"), labels=self.labels)

    def _start_fkm(self, t: int) -> None:
        """Outer epoch ``t``: the cosine learning rate, clean features, D from the current fused embedding."""
        self.t, self.lr_fkm = t, self.set_fkm_lr(t)
        self.feats = self.features()
        if self.cfg.fkm_epochs == 0:  # no FKM epochs: still one closed-form update per outer epoch
            self._update()
            return
        self.z = self.fuse(self.feats)
        self.dmat = fkm_weights(torch.cdist(self.z, self.c), self.cfg.sigma, self.cfg.paper_formulas)
        self.fkm_first = self.ctx.epoch

    def _fkm_epoch(self, epoch: int) -> Report:
        """One shuffled pass of the clustering network on ``(1/b) Σ_i Σ_j D_ij U_ij ‖z_i − C_j‖²`` (D, U, C fixed);
        the last one (or a cancelled one) ends the outer epoch with the closed-form update."""
        assert self.feats is not None and self.dmat is not None
        feats, meter = self.feats, EpochMeter()
        for idx in minibatches(self.n, self.bs, rng=self.gen):
            with self.amp():
                zb = self.net(feats[0][idx], feats[1][idx], feats[2][idx])
            d2 = torch.cdist(zb.float(), self.c).square()
            loss = (self.dmat[idx] * self.u[idx] * d2).sum(dim=1).mean()
            self.opt_f.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_f.step()
            meter.add(1, fkm=loss)
            if self.ctx.stop_requested:
                break
        losses = meter.means(epoch=epoch, phase="fkm")
        last = epoch - self.fkm_first == self.cfg.fkm_epochs
        if last or self.ctx.stop_requested:
            self._update()
        z_now = self.z
        return Report(losses, embedding=(lambda: z_now.cpu().numpy()) if last else None, labels=self.labels,
                      metrics={"lr_fkm": self.lr_fkm})

    def _update(self) -> None:
        self.z = self.fuse(self.feats)
        self.c, self.u, self.labels = self.update(self.z, self.c, self.u, self.t)

    def live_embedding(self) -> np.ndarray:
        """Display-only full pass in eval mode (consumes no random numbers)."""
        return self.fuse(self.features(), train_mode=False).cpu().numpy()

    def embedding(self) -> np.ndarray:
        """The last update's embedding; after a cancel a fresh pass of the current model."""
        self.cancelled = self.ctx.stop_requested
        if self.cancelled:
            self.z = self.fuse(self.features())
        return self.z.cpu().numpy().astype(np.float32)

    def cluster(self, z: np.ndarray) -> np.ndarray:
        """Argmax U of the last update; after a cancel, memberships of the fresh pass to the current centres."""
        if self.cancelled:
            return self.memberships(self.z, self.c).argmax(dim=1).cpu().numpy().astype(np.int64)
        return self.labels

    def extras(self) -> dict:
        return {"batch_size": self.bs, "skipped_nan_batches": self.skipped_nan, "n_genes_used": int(self.n_genes),
                "attention_keys": self.n if self.keys is None else int(len(self.keys)),
                "centres": self.c.cpu().numpy().astype(np.float32)}

    # ----------------------------------------------------------------- pieces
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


# ----------------------------------------------------------------------------------------------------- method
def _work_units(config) -> float:
    """scAMAC's epochs nest: each outer epoch runs ``de_epochs`` autoencoder and ``fkm_epochs`` clustering epochs."""
    return float(config.get("epochs", 0)) * (float(config.get("de_epochs", 0)) + float(config.get("fkm_epochs", 0)))


@register_method("scamac")
class ScAMAC(DeepMethod[ScAMACConfig]):
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
    trainer_cls = ScAMACTrainer

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
