"""scGPCL: graph prototypical contrastive learning on a cell–gene bipartite graph (docs/methods.md §4, §8).

Citation: "scGPCL: Deep single-cell RNA-seq data clustering with graph prototypical contrastive learning",
Bioinformatics 39(6) btad342 (2023); official code github.com/Junseok0207/scGPCL @ 74bc4a3.

What runs, by default the official code's behaviour [C]:

- Preprocessing R3 (§4.1): top ``⌊hvg_frac·G⌋`` genes by raw-count variance, size factors from those genes,
  log1p, z-score. §8: ``hvg_frac`` left empty (auto) means 1.0 when the input has ≤ 3,000 genes (it was already
  reduced) and 0.2 otherwise (full-gene input, as published).
- Graph (§4.2): one unweighted edge per non-zero raw count; cell features = the scaled expression rows; gene
  features = a learned ``Embedding(G, latent_dim)`` (N(0, 1) init) trained with the model.
- Views (§4.3): HGT subgraphs around 1,024 seed cells (``num_samples`` [2048, 1024] per hop and node type,
  50-neighbour caps in the budgets and the edges), both views sharing the seed cells of a step, each with its
  own feature-column masks (p = 0.2 for cells and gene embeddings, no rescaling). Plain numpy/torch
  re-implementation below (no torch-geometric; see "The graph machinery").
- Encoder (§4.4): 2-layer heterogeneous GraphSAGE-mean, BatchNorm after each layer, **no activation**;
  decoder ``Linear(64,256) → BN → ReLU`` over all subgraph cells (BN statistics over ≈ 2k cells), ZINB heads.
  The heads are applied to the seed rows only, which is exact (they act row-wise) and saves half their cost.
- Losses (§4.5): ZINB (shared ``losses.zinb_nll``, size factors) averaged over both views; instance NT-Xent
  (τ = 0.25) with the official self-mask bug reproduced by default (``ins_loss_mask_bug``; False gives the
  standard symmetric NT-Xent ``losses.nt_xent``); prototypical loss after the warm-up at granularities
  ``[1, 1.5, 2]·K`` with per-minibatch K-means on the detached view-2 seed representations.
  ``L_pre = L_zinb + λ1·L_ins + λ2·L_pro`` (λ1 = 1, λ2 = 0.05).
- Pretraining early stop (§4.6, §8): from the first epoch after the warm-up, a full-data pass (eval mode, no
  masks, still sampled) + ``KMeans(K)``; stop when the ARI between these labels and the **previous epoch's**
  labels exceeds ``pretrain_stop_ari`` (0.99). This compares the model with itself, never with annotations.
- Fine-tuning (§4.6): μ from ``KMeans(K, n_init=20)`` on a full pass; fresh Adadelta (lr 1, ρ 0.95, wd 1e-4);
  each epoch starts with a full pass → Student-t q (α = 1), target p (full data), labels = argmax q; from
  epoch 2 stop when the delta-label < ``tol``; then one single-view pass with ``L_zinb + λ3·KL(p‖q)``.
  Labels = argmax q of the last start-of-epoch pass (§4.7; the last training pass does not change them unless
  ``final_eval_after_training``). **The tol = 0.001 stop is practically unreachable** (§8): full-data
  embeddings come from sampled neighbourhoods, so 2–5 % of labels change from sampling noise alone and
  fine-tuning runs to its epoch cap.

Presets: ``paper`` = the code's defaults (200 + 200 epochs max, warm-up 100, K-means n_init 20, lr 1e-4 — the
authors' scripts use 1e-5…1e-3 per dataset); ``cpu`` = the [A] adaptation of §4.12/§6 (14 pretraining epochs with
warm-up 7, prototype K-means n_init 3, convergence-check K-means n_init 5, ≤ 10 fine-tuning epochs), not the
published setting.

Choices where the spec is silent (written down here):

- All sampling, feature masks, minibatch orders and per-step K-means seeds come from one
  ``numpy.random.default_rng(seed)``; the two views use the same per-epoch permutation of the cells (the
  official two ``RandomSampler`` s share a seed). Same seed → same result on CPU.
- A minibatch with fewer seed cells than a granularity uses ``min(K_t, n_seeds)`` prototypes (the official code
  would fail); clusters K-means leaves empty are dropped from the prototype set (the code would mis-index).
- The first pretraining epochs (before the warm-up ends) compute a full pass + K-means only when a snapshot is
  due; after the warm-up the convergence check's labels are reported every epoch. An epoch-0 snapshot of the
  untrained encoder is taken (K-means with the check's n_init).
- The fine-tuning epoch whose start-of-epoch pass triggers the tol stop trains nothing and is not reported as
  an epoch; its labels are the result. The reported epochs are 1-based and global across both phases.
- ``eval_passes`` > 1 averages several sampled full-data passes (§8's suggestion; off by default).
- The MSE variant of the repository (``--recon mse``) is not implemented.
- The display-only full passes of the warm-up epochs (snapshots) sample from their own generator, so the
  snapshot schedule never changes the result.

The graph machinery (cell–gene bipartite graph, HGT sampler, heterogeneous GraphSAGE encoder) lives in
:mod:`._bipartite` (docs/methods.md §4.2–§4.4, §4.9).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from anndata import AnnData
from sklearn.metrics import adjusted_rand_score

from ..config import MethodConfig, param
from ..losses import cluster_kl, count_nll, delta_label, scgpcl_instance_loss, student_t_q, target_distribution
from ..preprocess import recipe_r3
from ..estimate import CostModel, Measured, measured_runs
from ._types import MethodCard
from ._base import FitContext, Prepared
from ._bipartite import (MAX_NEIGHBORS, BipartiteGraph, BipartiteSAGEEncoder, Subgraph, cap_rows,  # noqa: F401
                         capped_neighbours, hgt_sample, mean_operator, sample_without_replacement)
from ._blocks import kmeans
from ._scgpcl_net import ScGPCLNet, granularity_levels, granularity_values, prototype_term
from ._loop import EpochMeter, gather, minibatches, to_device
from ._params import kmeans_restarts, smoke_test_note, variant
from ._registry import register_method
from ._trainer import DeepMethod, Phase, Report, Trainer

__all__ = ["ScGPCLConfig", "ScGPCL", "ScGPCLTrainer", "ScGPCLNet", "granularity_levels", "BipartiteGraph", "Subgraph",
           "hgt_sample", "sample_without_replacement", "cap_rows", "capped_neighbours", "mean_operator",
           "BipartiteSAGEEncoder", "MAX_NEIGHBORS", "resolve_hvg_frac"]

#: inputs with at most this many genes are taken as already reduced: hvg_frac auto → 1.0 (§8)
AUTO_HVG_MAX_GENES = 3000


@dataclass
class ScGPCLConfig(MethodConfig):
    pretrain_epochs: int = param(200, min=0, max=5000,
                                 help="Maximum pretraining epochs (contrastive + ZINB); stops early when the "
                                      "clustering stops changing (see pretrain_stop_ari).")
    warmup_epochs: int = param(100, min=0, max=5000,
                               help="Pretraining epochs without the prototypical loss (and without the early-stop check).")
    finetune_epochs: int = param(200, min=0, max=5000,
                                 help="Maximum DEC-style fine-tuning epochs (KL + ZINB). The tol stop is practically "
                                      "unreachable (sampled embeddings keep 2–5 % of labels moving), so this cap "
                                      "usually decides.")
    lr: float = param(1e-4, min=1e-7, max=1.0,
                      help="AdamW learning rate for pretraining (code default 1e-4; the authors' scripts use 1e-5–1e-3 per dataset).")
    batch_size: int = param(1024, min=8, max=100000, help="Seed cells per minibatch subgraph.")
    hvg_frac: float | None = param(None, min=0.001, max=1.0,
                                   help="Fraction of genes kept by raw-count variance. Empty = auto: 1.0 when the input "
                                        "has ≤ 3,000 genes (already reduced), else 0.2 (published, full-gene inputs).")
    finetune_lr: float = param(1.0, min=1e-6, max=100.0, advanced=True, help="Adadelta learning rate for fine-tuning.")
    weight_decay: float = param(1e-4, min=0.0, max=1.0, advanced=True,
                                help="Weight decay of both optimizers (model, gene embedding and centres).")
    hidden_dim: int = param(256, min=4, max=4096, advanced=True, help="Width of the first graph layer and of the decoder.")
    latent_dim: int = param(64, min=2, max=1024, advanced=True,
                            help="Cell representation size (also the gene-embedding size).")
    num_samples: list[int] = param([2048, 1024], min=1, max=1_000_000, advanced=True,
                                   help="HGT sampler: nodes drawn per hop for each node type (one entry per hop).")
    neighbor_cap: int = param(MAX_NEIGHBORS, min=1, max=100000, advanced=True,
                              help="Neighbours per node considered by the sampler budgets and kept as edges (torch-sparse: 50).")
    tau: float = param(0.25, min=1e-3, max=10.0, advanced=True, help="Temperature of the instance and prototypical losses.")
    alpha: float = param(1.0, min=1e-3, max=100.0, advanced=True, help="Student-t degrees of freedom for q.")
    granularity: str = param("1,1.5,2", advanced=True,
                             help="Prototype granularities as multiples of K (1 to 3 comma-separated numbers).")
    drop_feat_1: float = param(0.2, min=0.0, max=0.99, advanced=True,
                               help="Feature-column masking probability of view 1 (also used in fine-tuning).")
    drop_feat_2: float = param(0.2, min=0.0, max=0.99, advanced=True, help="Feature-column masking probability of view 2.")
    lam_ins: float = param(1.0, min=0.0, max=100.0, advanced=True, help="λ1: weight of the instance contrastive loss.")
    lam_proto: float = param(0.05, min=0.0, max=100.0, advanced=True, help="λ2: weight of the prototypical loss.")
    lam_kl: float = param(1.0, min=0.0, max=100.0, advanced=True, help="λ3: weight of the KL clustering loss in fine-tuning.")
    pretrain_stop_ari: float = param(0.99, min=0.0, max=1.0, advanced=True,
                                     help="Stop pretraining when the ARI between this and the previous epoch's K-means "
                                          "labels exceeds this (self-consistency, no annotation used); 1.0 = never.")
    tol: float = param(0.001, min=0.0, max=1.0, advanced=True,
                       help="Fine-tuning stops when fewer than this fraction of labels change between epochs. "
                            "Practically unreachable (sampling noise alone moves 2–5 %), so fine-tuning runs to its cap.")
    proto_kmeans_n_init: int = kmeans_restarts(
        20, "K-means restarts for the per-minibatch prototypes (3 granularities every step).")
    check_kmeans_n_init: int = kmeans_restarts(
        20, "K-means restarts for the pretraining convergence check (and snapshot labels).")
    init_kmeans_n_init: int = kmeans_restarts(
        20, "K-means restarts that initialise the cluster centres before fine-tuning.")
    ins_loss_mask_bug: bool = variant(True,
                                      "Reproduce the official instance-loss self-mask bug (view-2 anchors keep themselves "
                                      "as a positive and in the denominator). False = standard NT-Xent.")
    eval_passes: int = param(1, min=1, max=20, advanced=True,
                             help="Sampled full-data passes averaged for the cell embedding (1 = official).")
    final_eval_after_training: bool = variant(False,
                                              "Recompute the labels after the last fine-tuning pass (the code returns "
                                              "the labels from the start of the last epoch).")

    PRESETS = {
        "paper": {},
        "cpu": {"pretrain_epochs": 14, "warmup_epochs": 7, "finetune_epochs": 10, "proto_kmeans_n_init": 3,
                "check_kmeans_n_init": 5},
        "tiny": {"pretrain_epochs": 4, "warmup_epochs": 2, "finetune_epochs": 2, "batch_size": 64,
                 "num_samples": [96, 48], "proto_kmeans_n_init": 1, "check_kmeans_n_init": 2, "init_kmeans_n_init": 2,
                 "hidden_dim": 32, "latent_dim": 8, "pretrain_stop_ari": 1.0, "snapshot_every": 1},
    }
    PRESET_NOTES = {
        "paper": "Official code defaults: ≤ 200 pretraining epochs (warm-up 100), ≤ 200 fine-tuning epochs, "
                 "K-means n_init 20, lr 1e-4. 30–40 min on 2 CPU cores at 3,000 cells.",
        "cpu": "adaptation [A], not the published setting: 14 pretraining epochs (warm-up 7), prototype K-means "
               "n_init 3, check K-means n_init 5, ≤ 10 fine-tuning epochs; ≈ 2 min at 3,000 cells on 2 cores.",
        "tiny": smoke_test_note("narrow networks, small subgraphs, 4 + 2 epochs"),
    }

    def validate(self) -> None:
        super().validate()
        granularity_values(self.granularity)
        ns = list(self.num_samples)
        if not ns or any(int(v) < 1 for v in ns):
            raise ValueError(f"num_samples must list at least one positive count per hop, got {self.num_samples!r}")


def resolve_hvg_frac(hvg_frac: float | None, n_genes: int) -> float:
    """§8: auto → 1.0 for inputs with ≤ 3,000 genes, 0.2 for full-gene inputs."""
    if hvg_frac is not None:
        return float(hvg_frac)
    return 1.0 if n_genes <= AUTO_HVG_MAX_GENES else 0.2


class ScGPCLTrainer(Trainer[ScGPCLConfig]):
    """Pretraining with two sampled views (prototypes after the warm-up, self-consistency stop), then DEC
    fine-tuning with its ``tol`` stop (§4.6). Every training draw comes from ``self.rng``; display-only passes
    (warm-up snapshots) from ``self.view_rng``, so they never change the result."""

    def __init__(self, data: Prepared, config: ScGPCLConfig, ctx: FitContext):
        super().__init__(data, config, ctx)
        ad = data.adata
        self.rng = np.random.default_rng(config.seed)
        self.view_rng = np.random.default_rng([config.seed, 1])
        self.n, self.g = ad.n_obs, ad.n_vars
        self.k = int(config.n_clusters)
        self.X = to_device(np.asarray(ad.X), self.dev, torch.float32)
        self.counts = sp.csr_matrix(ad.layers["counts"], dtype=np.float32)
        self.sf = to_device(ad.obs["size_factors"].to_numpy(np.float32), self.dev, torch.float32)
        self.graph = BipartiteGraph(self.counts)
        self.ns = tuple(int(v) for v in config.num_samples)
        self.bs = int(min(config.batch_size, self.n))
        self.model = ScGPCLNet(self.g, self.k, config.hidden_dim, config.latent_dim).to(self.dev)
        self.opt: torch.optim.Optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr,
                                                            weight_decay=config.weight_decay)  # pretraining
        self.protos = granularity_levels(self.k, config.granularity)
        self.info: dict = {"hvg_frac": float(ad.uns.get("hvg_frac", float("nan"))), "n_genes": int(self.g),
                           "pretrain_epochs_run": 0, "pretrain_stopped_early": False,
                           "prototype_counts": self.protos, "finetune_epochs_run": 0, "finetune_converged": False}
        self.prev: np.ndarray | None = None  # the previous pretraining epoch's K-means labels
        self.converging = False  # this pretraining epoch's labels agree with the previous epoch's
        self.finetuning, self.ft_first = False, 0  # fine-tuning started, at this global epoch
        self.z: np.ndarray | None = None  # fine-tuning: the last start-of-epoch pass and its labels
        self.labels: np.ndarray | None = None
        self.deltas: list[float] = []

    def initial_view(self) -> tuple[np.ndarray, np.ndarray]:
        """The untrained encoder: a full pass and K-means with the check's n_init (training stream)."""
        z = self.full_pass()
        return z, self.kmeans(z, self.cfg.check_kmeans_n_init)

    def phases(self) -> list[Phase]:
        cfg = self.cfg
        return [Phase("pretrain", cfg.pretrain_epochs, self._pretrain_epoch),
                Phase("finetune", cfg.finetune_epochs, self._finetune_epoch, start=self._start_finetune)]

    # ----------------------------------------------------------------- 1. pretraining
    def _pretrain_epoch(self, epoch: int) -> Report | None:
        """ZINB + λ1·instance (+ λ2·prototypical after the warm-up). From the first epoch after the warm-up,
        K-means on a full pass; the phase stops when it agrees with the previous epoch's labels (ARI >
        ``pretrain_stop_ari``: the model against itself, never against annotations)."""
        cfg = self.cfg
        warm = epoch <= cfg.warmup_epochs
        meter, cancelled = self._pretrain_pass(epoch, None if warm else self.protos)
        if cancelled:
            return None
        self.info["pretrain_epochs_run"] = epoch
        losses = meter.means(epoch=epoch, phase="pretrain")
        if warm:  # display only, from the separate view stream and only when a snapshot is due
            return Report(losses)
        z = self.full_pass()
        lab = self.kmeans(z, cfg.check_kmeans_n_init)
        extra = {"ari_vs_previous_epoch": float(adjusted_rand_score(self.prev, lab))} if self.prev is not None else {}
        self.prev = lab
        self.converging = bool(extra) and extra["ari_vs_previous_epoch"] > cfg.pretrain_stop_ari
        return Report(losses, embedding=z, labels=lab, metrics=extra, last=self.converging)

    # ----------------------------------------------------------------- 2. fine-tuning
    def _start_finetune(self) -> None:
        """μ from K-means on a full pass, fresh Adadelta (reached only without a cancel)."""
        cfg = self.cfg
        self.info["pretrain_stopped_early"] = self.converging
        self.finetuning, self.ft_first = True, self.ctx.epoch
        self.z = self.full_pass()
        self.labels, centres = kmeans(self.z, self.k, n_init=cfg.init_kmeans_n_init, seed=self.seed_int())
        with torch.no_grad():
            self.model.mu.copy_(to_device(centres, self.dev))
        self.opt = torch.optim.Adadelta(self.model.parameters(), lr=cfg.finetune_lr, rho=0.95,
                                        weight_decay=cfg.weight_decay)

    def _finetune_epoch(self, epoch: int) -> Report | None:
        """A full pass → Student-t q, target p, labels; stop (None) from epoch 2 when fewer than ``tol`` labels
        changed; else one KL + ZINB pass."""
        fe = epoch - self.ft_first
        z = self.z = self.full_pass()
        q = self.soft_assign(z)
        p_full = target_distribution(q)
        labels, last = q.argmax(dim=1).cpu().numpy(), self.labels
        self.labels = labels
        self.deltas.append(delta_label(labels, last))
        if fe > 1 and self.deltas[-1] < self.cfg.tol:
            self.info["finetune_converged"] = True
            return None
        meter, cancelled = self._finetune_pass(p_full)
        if cancelled:
            return None
        self.info["finetune_epochs_run"] = fe
        return Report(meter.means(epoch=epoch, phase="finetune"), embedding=z, labels=labels,
                      metrics={"delta_label": self.deltas[-1]})

    # ----------------------------------------------------------------- live views and the result
    def live_embedding(self) -> np.ndarray:
        return self.full_pass(self.view_rng)

    def live_labels(self, z: np.ndarray) -> np.ndarray:
        return self.kmeans(z, self.cfg.check_kmeans_n_init, self.view_rng)

    def embedding(self) -> np.ndarray:
        """The last start-of-epoch pass of fine-tuning (§4.7), recomputed after training with
        ``final_eval_after_training``; a fresh pass when cancelled during pretraining."""
        cfg = self.cfg
        if not self.finetuning:
            self.z = self.full_pass()
        elif cfg.final_eval_after_training and not self.info["finetune_converged"] and cfg.finetune_epochs > 0:
            self.z = self.full_pass()
            self.labels = self.soft_assign(self.z).argmax(dim=1).cpu().numpy()
        assert self.z is not None
        return self.z

    def cluster(self, z: np.ndarray) -> np.ndarray:
        """Argmax q of that pass; K-means (the check's n_init) when cancelled during pretraining."""
        if not self.finetuning:
            return self.kmeans(z, self.cfg.check_kmeans_n_init)
        assert self.labels is not None
        return self.labels

    def extras(self) -> dict:
        info = dict(self.info)
        if not self.finetuning:
            return info
        info["delta_labels"] = [float(d) for d in self.deltas]
        if not info["finetune_converged"] and self.cfg.finetune_epochs > 0:
            info["note"] = (f"Fine-tuning ran to its cap of {self.cfg.finetune_epochs} epochs (tol = {self.cfg.tol} "
                            "not reached: sampled embeddings keep a few % of labels moving).")
        return info

    # ----------------------------------------------------------------- pieces
    def seed_int(self, rng: np.random.Generator | None = None) -> int:
        return int((rng or self.rng).integers(0, 2**31 - 1))

    def sample(self, seeds: np.ndarray, rng: np.random.Generator | None = None) -> Subgraph:
        return hgt_sample(self.graph, seeds, rng or self.rng, self.ns, self.cfg.neighbor_cap)

    def _mask(self, size: int, p: float) -> torch.Tensor | None:
        if p <= 0:
            return None
        return to_device((self.rng.random(size) >= p).astype(np.float32), self.dev)

    def encode(self, sub: Subgraph, drop: float) -> torch.Tensor:
        """Representation [n_c, D] of every subgraph cell; feature-column masks with probability ``drop``."""
        cmask = self._mask(self.g, drop)
        return self.model.encode(self.X, sub, cmask, self._mask(self.cfg.latent_dim, drop))

    def batch_counts(self, seeds: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw counts and size factors of the seed cells (the ZINB targets)."""
        return gather(self.counts, seeds, self.dev), self.sf[torch.from_numpy(seeds).to(self.dev)]

    @torch.no_grad()
    def full_pass(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """Full-data representations with the eval loader: consecutive seed chunks, sampled, no masks."""
        self.model.eval()
        out = np.zeros((self.n, self.cfg.latent_dim), dtype=np.float64)
        for _ in range(self.cfg.eval_passes):
            for seeds in minibatches(self.n, self.bs, rng=None, shuffle=False):
                rep = self.encode(self.sample(seeds, rng), 0.0)[: seeds.size]
                out[seeds] += rep.double().cpu().numpy()
        return (out / self.cfg.eval_passes).astype(np.float32)

    def kmeans(self, z: np.ndarray, n_init: int, rng: np.random.Generator | None = None) -> np.ndarray:
        return kmeans(z, self.k, n_init=n_init, seed=self.seed_int(rng))[0]

    @torch.no_grad()
    def soft_assign(self, z: np.ndarray) -> torch.Tensor:
        zt = torch.from_numpy(z).to(self.dev)
        chunks = [student_t_q(zt[i:i + 65536], self.model.mu, self.cfg.alpha) for i in range(0, self.n, 65536)]
        return torch.cat(chunks)

    # ----------------------------------------------------------------- passes
    def _pretrain_pass(self, epoch: int, protos: list[int] | None) -> tuple[EpochMeter, bool]:
        """One pass over the cells with two views: ZINB (both views) + λ1·instance NT-Xent (+ λ2·prototypical
        loss after the warm-up); returns the meter and whether a cancel interrupted it."""
        cfg, model, meter = self.cfg, self.model, EpochMeter()
        for seeds in minibatches(self.n, self.bs, rng=self.rng):  # the two official samplers share this order
            if self.ctx.stop_requested:
                return meter, True
            nb = seeds.size
            sub1, sub2 = self.sample(seeds), self.sample(seeds)
            model.train()
            self.opt.zero_grad(set_to_none=True)
            rep1_all = self.encode(sub1, cfg.drop_feat_1)
            out1 = model.decode(rep1_all, nb)
            rep2_all = self.encode(sub2, cfg.drop_feat_2)
            out2 = model.decode(rep2_all, nb)
            rep1, rep2 = rep1_all[:nb], rep2_all[:nb]
            x, sf = self.batch_counts(seeds)
            l_zinb = (count_nll(x, *out1, sf) + count_nll(x, *out2, sf)) / 2
            l_ins = scgpcl_instance_loss(rep1, rep2, cfg.tau, cfg.ins_loss_mask_bug)
            l_pro = torch.zeros((), device=self.dev)
            if protos is not None and nb >= 2:
                l_pro = prototype_term(rep1, rep2, protos, n_init=cfg.proto_kmeans_n_init, seeds=self.seed_int,
                                       tau=cfg.tau, epoch=epoch)
            loss = l_zinb + cfg.lam_ins * l_ins + cfg.lam_proto * l_pro
            loss.backward()
            self.opt.step()
            meter.add(nb, zinb=l_zinb, instance=l_ins, proto=l_pro, total=loss)
        return meter, False

    def _finetune_pass(self, p_full: torch.Tensor) -> tuple[EpochMeter, bool]:
        """One single-view pass with ``L_zinb + λ3·KL(p‖q)`` (p from the start-of-epoch full pass)."""
        cfg, model, meter = self.cfg, self.model, EpochMeter()
        for seeds in minibatches(self.n, self.bs, rng=self.rng):
            if self.ctx.stop_requested:
                return meter, True
            sub = self.sample(seeds)
            model.train()
            rep_all = self.encode(sub, cfg.drop_feat_1)
            out = model.decode(rep_all, seeds.size)
            q = student_t_q(rep_all[:seeds.size], model.mu, cfg.alpha)
            l_kl = cluster_kl(p_full[torch.from_numpy(seeds).to(self.dev)], q)
            x, sf = self.batch_counts(seeds)
            l_zinb = count_nll(x, *out, sf)
            loss = l_zinb + cfg.lam_kl * l_kl
            loss.backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            meter.add(seeds.size, zinb=l_zinb, kl=l_kl, total=loss)
        return meter, False


@register_method("scgpcl")
class ScGPCL(DeepMethod[ScGPCLConfig]):
    """scGPCL: graph prototypical contrastive learning on a cell–gene graph, then DEC fine-tuning (ZINB)."""

    card = MethodCard(
        what=('A graph neural network on a cell–gene graph, trained to reconstruct the counts (ZINB) with '
              'instance and prototype contrastive losses, then fine-tuned to sharpen the clusters.'),
        when=('Often the strongest deep method on neurons and other finely graded populations; about a minute per '
              'thousand cells on a CPU.'))
    #: measured on a 2-core CPU, one torch thread (README benchmark tables; peak RSS of one-run processes)
    cost = CostModel(
        measured_runs("cpu", (4271, 2000, 170), (2746, 2003, 71), (4186, 13488, 135), (822, 14878, 28),
                             (220, 12694, 10), (1000, 900, 12.5), (8617, 2000, 227))
        + measured_runs("paper", (4271, 2000, 1408), (2746, 2003, 2196), (4186, 13488, 3524))
        + (Measured("cpu", 1000, 900, None, 1085, "one-run process"),))

    citation = ("scGPCL: Deep single-cell RNA-seq data clustering with graph prototypical contrastive learning, "
                "Bioinformatics 39(6) btad342, 2023; code github.com/Junseok0207/scGPCL")
    recipe = ("R3: top hvg_frac of genes by raw-count variance (auto: all when ≤ 3,000 genes, else 20 %), "
              "size factors, log1p, z-score")  # needs counts, K: the base defaults
    trainer_cls = ScGPCLTrainer
    #: Checked where the input is the paper's: on the full-gene worm file the paper preset gives ARI 0.519
    #: (published 0.540 with the official weights, 0.585 in the slides' rerun) and end-of-pretraining losses
    #: within 1 % of the slides' (ZINB 0.215, instance 3.95, proto 1.22 vs 0.216, 3.98, 1.23). On inputs already
    #: cut to 2,000 genes it stays below the published figures (bladder, paper preset: 0.52 vs 0.587; the
    #: slides' rerun got 0.456; PBMC, paper preset lr 1e-3: 0.692 vs 0.785, slides 0.681), so the badge keeps
    #: that caveat.
    fidelity = "faithful to the code (worm ARI 0.52 vs 0.54 published); lower on inputs pre-cut to 2,000 genes"

    def prepare(self, adata: AnnData, config: ScGPCLConfig) -> Prepared:
        frac = resolve_hvg_frac(config.hvg_frac, adata.n_vars)
        ad = recipe_r3(adata, hvg_frac=frac)
        ad.uns["hvg_frac"] = frac
        return Prepared(ad, ad.obs["cell_index"].to_numpy(np.int64))

    def planned_epochs(self, config: ScGPCLConfig) -> int:
        return config.pretrain_epochs + config.finetune_epochs
