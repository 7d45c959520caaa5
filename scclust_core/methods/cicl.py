"""CICL: cluster-aware iterative contrastive learning with a sequence-length-1 transformer encoder.

Citation: Jiang, Wang, Guan & Zhou, "scRNA-seq Data Clustering by Cluster-aware Iterative Contrastive
Learning" (preprint). Code: ``Alunethy/CICL`` @ 41d2df8 (docs/methods.md §1, §8).

What runs here (tags of docs/methods.md):

- Preprocessing [P] (the code's preprocessed CSVs are not public): R2 — zero genes/cells dropped, size factors =
  library / median, log1p, top ``n_hvg`` = 500 HVGs (scanpy ``seurat``), gene z-score. On an input that
  already has few genes R2 runs on the supplied counts (§8).
- Encoder [C]: 4 deep copies of one layer (identical at init) + final LayerNorm; a layer is
  ``V = xW_V`` (2 heads × 512), the length-1 attention (softmax ≡ 1, so context = V), ``o = W_O·ctx``,
  ``a = LN₀(o + x)`` with a fresh non-learned LayerNorm, ``h = LN₁(x + drop(a))``,
  ``out = LN₂(h + drop(FFN(h)))`` (FFN G→1024→G, ReLU, dropout 0.2). Embedding dimension = G.
  ``compute_qk=True`` computes the no-op Q/K products like the code; ``False`` skips them (exact, faster).
- Head [C]: Linear(G, 2048) → ReLU → Linear(2048, 512), L2-normalised.
- Views [C]: two augmented copies made **once** before training (per cell and per view, ⌊0.8·G⌋ genes get
  N(0, 0.5²) noise; §8) — ``resample_views_each_epoch`` redraws them every epoch ([P] algorithm box);
  ``augmentation="minmax_gaussian"`` is the paper's N(0,1) noise rescaled into [0, 1] and added [P].
- Losses [C]: one-directional InfoNCE (anchors view 1, cross-view negatives, T = 0.5) + 0.1 × the
  cluster-aware ``CirculatePairConLoss`` (same-pseudo-cluster cells removed from the negatives; **sum over
  clusters** — ``cluster_loss_reduction="mean"`` fixes that quirk). ``instance_loss="paper"`` uses the
  symmetric SimCLR NT-Xent [P]; ``cluster_loss="paper"`` our reading of the paper's Eq. 15 (same-cluster
  pairs in the numerator).
- Pseudo-labels [C]: centres from scikit-learn K-means (k-means++, ``n_init=10``, ``random_state=seed``) on
  the *untrained* encoder's embedding of all cells computed in **train mode** (dropout on; the code's quirk,
  ``centres_from_train_mode=False`` uses eval mode); they never move (no gradient reaches them).
  Each step, the clean batch goes through the encoder (train mode, under ``no_grad`` — exact, the code tracked
  gradients for nothing) and the argmax of the Student-t assignment to the centres gives the labels.
  ``centroids="kmeans_every_step"`` [P] runs K-means (``n_init=20``) on each step's clean embedding instead.
- Optimizer [C]: Adam, head lr 1e-5; encoder lr 1e-4 with (L2-style) weight decay 1e-3; centres lr 1e-4,
  wd 1e-3. 51 epochs (the code's loop 0..50). Batch 6000 per step on one device.
- ``shards`` (§8): split each step's batch into S random shards, compute the losses per shard (negatives only
  within a shard), average the gradients, one optimizer step. The original ran 4 GPUs with per-GPU losses,
  i.e. batch_size 24000 with 4 shards; a single device with ``shards=1`` has 4× more negatives (the spec's
  single-device default). ``shards=0`` = auto: 1 up to 3,000 cells per step, else 4 (cpu preset).
- Final clustering [C]: eval-mode embedding (dropout off) → K-means with the given K (the code's
  ``torch_kmeans`` is replaced by scikit-learn K-means, ``n_init=10``, ``random_state=seed``, as the spec says).
  The code's best-epoch selection by ground-truth ARI is **not** reproduced (label leakage): the final
  epoch is reported.

Choices where the spec is silent: live labels every epoch are the step pseudo-labels ("model score" in the
code: nearest fixed centre of the clean pass), assembled over the epoch's steps (kept on the device, copied
once per epoch); the epoch-0 snapshot is the train-mode embedding the centres were fitted on, with its K-means
labels; later snapshots embed only the snapshot subsample (eval mode, no random numbers drawn). Views use a torch generator seeded
with ``seed``; shards and minibatches a numpy generator seeded with ``seed``; dropout the global torch RNG
(seeded by the base). The ``cpu`` preset is the [A] adaptation of §1.10/§6: 500 HVGs, full batch, 25 epochs,
Q/K skipped, one evaluation at the end (no intermediate snapshots), sharding above 3,000 cells. ``amp``
(CUDA only, off by default) runs the encoder and head in bfloat16 autocast; the losses stay in float32.
"""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from anndata import AnnData

from ..config import MethodConfig, param
from ..losses import cluster_aware_loss, cluster_aware_loss_paper, info_nce, nt_xent, student_t_q
from ..preprocess import recipe_r2
from ..estimate import CostModel, Measured, measured_runs
from ._types import MethodCard
from ._base import FitContext, Prepared
from ._blocks import amp_context, kmeans
from ._loop import EpochMeter, encode_all, minibatches, to_device
from ._params import adaptation_note, cuda_amp, kmeans_restarts, smoke_test_note, variant
from ._registry import register_method
from ._trainer import DeepMethod, Phase, Report, Trainer

logger = logging.getLogger(__name__)

__all__ = ["CICLConfig", "CICL", "CICLTrainer", "CICLLayer", "CICLEncoder", "CICLHead", "make_views"]

_EVAL_BATCH = 4096


@dataclass
class CICLConfig(MethodConfig):
    n_hvg: int = param(500, min=10, max=100000,
                       help="Highly variable genes kept; also the embedding dimension (the paper's t = 500).")
    epochs: int = param(51, min=1, max=5000, help="Training epochs (the code's loop runs 0..50 → 51).")
    batch_size: int = param(6000, min=4, max=1_000_000,
                            help="Cells per optimizer step (all shards together); ≥ N means one full-batch step per epoch.")
    lr_encoder: float = param(1e-4, min=1e-8, max=1.0, help="Adam learning rate of the encoder (and centres).")
    lr_head: float = param(1e-5, min=1e-8, max=1.0, help="Adam learning rate of the projection head.")
    shards: int = param(1, min=0, max=64,
                        help="Split each step's batch into this many random shards, losses per shard, gradients "
                             "averaged (the original 4-GPU run); 0 = auto (1 up to 3,000 cells per step, else 4).")
    weight_decay: float = param(1e-3, min=0.0, max=1.0, advanced=True,
                                help="L2 weight decay (Adam, not AdamW) of the encoder and centres.")
    temperature: float = param(0.5, min=0.01, max=10.0, advanced=True, help="Temperature of both losses.")
    cluster_weight: float = param(0.1, min=0.0, max=100.0, advanced=True,
                                  help="λ: weight of the cluster-aware loss (paper ablation: 0.1 best).")
    noise_std: float = param(0.5, min=0.0, max=10.0, advanced=True, help="Std of the Gaussian noise of the views.")
    noise_gene_frac: float = param(0.8, min=0.0, max=1.0, advanced=True,
                                   help="Fraction of genes noised per cell and view.")
    augmentation: str = variant("masked_gaussian", choices=("masked_gaussian", "minmax_gaussian"),
                                help="masked_gaussian [C]: noise on 80 % of genes; minmax_gaussian [P]: N(0,1) "
                                     "rescaled to [0,1] added to all genes.")
    resample_views_each_epoch: bool = variant(False,
                                              "Redraw the two views every epoch ([P]); the code draws them once.")
    instance_loss: str = variant("code", choices=("code", "paper"),
                                 help="code: one-directional InfoNCE with cross-view negatives; paper: symmetric NT-Xent.")
    cluster_loss: str = variant("code", choices=("code", "paper"),
                                help="code: CirculatePairConLoss (instance pair positive, same-cluster cells removed "
                                     "from negatives); paper: same-cluster pairs in the numerator (Eq. 15).")
    cluster_loss_reduction: str = variant("sum", choices=("sum", "mean"),
                                          help="sum over clusters present (code quirk, scale grows with K) or mean.")
    centroids: str = variant("fixed_init", choices=("fixed_init", "kmeans_every_step"),
                             help="fixed_init [C]: K-means centres of the untrained encoder, never updated; "
                                  "kmeans_every_step [P]: K-means on each step's embedding.")
    centres_from_train_mode: bool = variant(True,
                                            "Fit the initial centres on the train-mode (dropout on) embedding, "
                                            "as the code does; False uses eval mode.")
    dropout: float = param(0.2, min=0.0, max=0.9, advanced=True, help="Dropout in every encoder layer.")
    n_layers: int = param(4, min=1, max=12, advanced=True, help="Encoder layers.")
    n_heads: int = param(2, min=1, max=16, advanced=True, help="Attention heads (512 dims each).")
    d_ff: int = param(1024, min=8, max=8192, advanced=True, help="Feed-forward width of an encoder layer.")
    compute_qk: bool = param(True, advanced=True,
                             help="Compute the Q/K attention products, which are exact no-ops for a length-1 "
                                  "sequence; False skips them (identical results, ~30 % faster).")
    head_hidden: int = param(2048, min=8, max=8192, advanced=True, help="Hidden width of the projection head.")
    head_out: int = param(512, min=2, max=4096, advanced=True, help="Output width of the projection head.")
    kmeans_n_init: int = kmeans_restarts(10, "Restarts of the centre-initialisation and final K-means.")
    amp: bool = cuda_amp("the encoder and head (losses in float32)")

    PRESETS = {
        "paper": {"epochs": 51, "batch_size": 6000, "shards": 1, "compute_qk": True, "snapshot_every": 5},
        "cpu": {"n_hvg": 500, "epochs": 25, "batch_size": 6000, "shards": 0, "compute_qk": False,
                "snapshot_every": 0},
        "tiny": {"n_hvg": 40, "epochs": 3, "shards": 0, "compute_qk": False, "snapshot_every": 1, "d_ff": 32,
                 "head_hidden": 32, "head_out": 16, "n_layers": 2, "kmeans_n_init": 2},
    }
    PRESET_NOTES = {
        "paper": "Code settings [C]: 500 HVGs, 51 epochs, batch 6000 on one device, evaluation every 5 epochs "
                 "(the paper's 1000 epochs: set epochs).",
        "cpu": adaptation_note("25 epochs, Q/K skipped (exact), one evaluation at the end, batch split into 4 "
                               "shards above 3,000 cells (as the original 4 GPUs)."),
        "tiny": smoke_test_note("a 2-layer, narrow network for 3 epochs"),
    }


def _n_shards(config: CICLConfig, batch: int) -> int:
    if config.shards > 0:
        return max(1, min(config.shards, batch // 2))
    return 1 if batch <= 3000 else 4


# ---------------------------------------------------------------- network [C] (docs/methods.md §1.2–§1.3)
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


class CICLTrainer(Trainer[CICLConfig]):
    """Views drawn once, fixed K-means centres of the untrained encoder, then one ``train`` phase (§1)."""

    def __init__(self, data: Prepared, config: CICLConfig, ctx: FitContext):
        super().__init__(data, config, ctx)
        dev, self.k = self.dev, int(config.n_clusters or 0)
        self.x = to_device(data.adata.X, dev)
        self.n, self.g = self.x.shape
        self.gen = torch.Generator(device=dev).manual_seed(config.seed)  # the two views
        self.rng = np.random.default_rng(config.seed)  # minibatches and shards
        self.enc = CICLEncoder(self.g, config.n_layers, n_heads=config.n_heads, d_ff=config.d_ff,
                               dropout=config.dropout).to(dev)
        self.enc.set_compute_qk(config.compute_qk)
        self.head = CICLHead(self.g, config.head_hidden, config.head_out).to(dev)
        self.views = self._views()
        # (1) fixed centres: K-means on the untrained encoder's embedding (train mode = dropout on, as the code)
        h0 = encode_all(self.enc, self.x, batch=_EVAL_BATCH, module=self.enc, train_mode=config.centres_from_train_mode)
        labels0, centres0 = kmeans(h0, self.k, n_init=config.kmeans_n_init, seed=config.seed)
        self.centres = nn.Parameter(torch.from_numpy(centres0.astype(np.float32)).to(dev))
        self._initial: tuple[np.ndarray, np.ndarray] | None = (h0, labels0)
        self.opt = torch.optim.Adam([
            {"params": self.head.parameters(), "lr": config.lr_head},
            {"params": self.enc.parameters(), "lr": config.lr_encoder, "weight_decay": config.weight_decay},
            {"params": [self.centres], "lr": config.lr_encoder, "weight_decay": config.weight_decay},
        ])
        self.batch = min(config.batch_size, self.n)
        self.n_shards = _n_shards(config, self.batch)
        self.pseudo = torch.from_numpy(labels0).to(dev)  # live labels: each step's pseudo-labels, on the device
        self.sub = torch.from_numpy(ctx.sub_idx).to(dev)

    def initial_view(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The train-mode embedding the centres were fitted on, with its K-means labels (then freed)."""
        view, self._initial = self._initial, None
        return view

    def phases(self) -> list[Phase]:
        return [Phase("train", self.cfg.epochs, self._epoch)]

    def _epoch(self, epoch: int) -> Report:
        """(2) pseudo-labels of each clean batch, (3) the contrastive losses, one optimizer step per batch."""
        if self.cfg.resample_views_each_epoch and epoch > 1:
            self.views = self._views()
        self.enc.train()
        self.head.train()
        meter = EpochMeter()
        for idx in minibatches(self.n, self.batch, rng=self.rng, min_size=2, merge_small=False):
            if self.ctx.stop_requested:
                break
            idx_t = torch.from_numpy(idx).to(self.dev)
            lab = self._pseudo_labels(self.x[idx_t])
            self.pseudo[idx_t] = lab
            meter.add(1, **self._step(idx_t, lab))
        return Report(meter.means(epoch=epoch, phase="train"), labels=self.pseudo.cpu().numpy())

    def live_embedding(self) -> np.ndarray:
        """Eval-mode embedding of the snapshot rows only (draws no random numbers)."""
        return encode_all(self.enc, self.x[self.sub], batch=_EVAL_BATCH, module=self.enc)

    def embedding(self) -> np.ndarray:
        """(4) The eval-mode embedding of the last epoch (never one picked by labels)."""
        return encode_all(self.enc, self.x, batch=_EVAL_BATCH, module=self.enc).astype(np.float32)

    def cluster(self, z: np.ndarray) -> np.ndarray:
        return kmeans(z, self.k, n_init=self.cfg.kmeans_n_init, seed=self.cfg.seed)[0]

    def extras(self) -> dict:
        return {"n_genes": int(self.g), "shards": int(self.n_shards), "batch_size": int(self.batch)}

    def _views(self) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        kw = dict(kind=cfg.augmentation, noise_std=cfg.noise_std, gene_frac=cfg.noise_gene_frac, generator=self.gen)
        return make_views(self.x, **kw), make_views(self.x, **kw)

    @torch.no_grad()
    def _pseudo_labels(self, xb: torch.Tensor) -> torch.Tensor:
        """Pseudo-labels of a clean batch: argmax of the Student-t assignment to the fixed centres [C] (train mode,
        no gradient: exact, the code tracked gradients for nothing), or to a fresh K-means of the batch [P]."""
        h = self.enc(xb)
        if self.cfg.centroids == "fixed_init":
            return student_t_q(h, self.centres.detach()).argmax(dim=1)
        step_seed = int(self.rng.integers(2**31 - 1))
        _, c = kmeans(h.cpu().numpy(), min(self.k, len(xb)), n_init=20, seed=step_seed)
        return student_t_q(h, torch.from_numpy(c.astype(np.float32)).to(h.device)).argmax(dim=1)

    def _step(self, idx_t: torch.Tensor, lab: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimizer step: per random shard, views → encoder → head → losses; gradients averaged over shards.

        Returns the step's loss components (device tensors, mean over shards)."""
        cfg, views = self.cfg, self.views
        self.opt.zero_grad(set_to_none=True)
        order = torch.from_numpy(self.rng.permutation(len(idx_t))).to(self.dev)
        parts = [p for p in torch.tensor_split(order, self.n_shards) if len(p) >= 2]
        out: dict[str, torch.Tensor] = {}
        for p in parts:
            rows = idx_t[p]
            with amp_context(cfg.amp, self.dev):
                z = self.head(self.enc(torch.cat([views[0][rows], views[1][rows]])))
            f1, f2 = z.float()[: len(p)], z.float()[len(p):]
            l_ins = (info_nce(f1, f2, cfg.temperature) if cfg.instance_loss == "code"
                     else nt_xent(f1, f2, cfg.temperature))
            l_clu = (cluster_aware_loss(f1, f2, lab[p], cfg.temperature, cfg.cluster_loss_reduction)
                     if cfg.cluster_loss == "code" else cluster_aware_loss_paper(f1, f2, lab[p], cfg.temperature))
            loss = l_ins + cfg.cluster_weight * l_clu
            (loss / len(parts)).backward()
            for key, v in (("instance", l_ins), ("cluster", l_clu), ("total", loss)):
                out[key] = out.get(key, 0.0) + v.detach() / len(parts)
        self.opt.step()
        return out


@register_method("cicl")
class CICL(DeepMethod[CICLConfig]):
    """Cluster-aware contrastive learning: a length-1 transformer encoder, InfoNCE + 0.1 × cluster-aware loss.

    See the module docstring for what is [C]/[P]/[A] and every choice made where the spec is silent.
    """

    card = MethodCard(
        what=('Contrastive learning at two levels at once: the same cell under two augmentations, and the same '
              'cluster across them. The clusters come from its cluster head.'),
        when=('Worth a try on well-separated immune or developmental data; slow on a CPU (minutes per thousand '
              'cells).'))
    #: measured on a 2-core CPU, one torch thread (README benchmark tables; peak RSS of one-run processes)
    cost = CostModel(
        measured_runs("cpu", (4271, 2000, 202), (2746, 2003, 210), (4186, 13488, 174), (822, 14878, 26),
                             (220, 12694, 8), (1000, 900, 30))
        + measured_runs("paper", (4271, 2000, 630))
        + (Measured("paper", 4271, 2000, None, 4198, "one-run process"),))

    citation = ("Jiang, Wang, Guan & Zhou. scRNA-seq Data Clustering by Cluster-aware Iterative Contrastive "
                "Learning (preprint); code github.com/Alunethy/CICL")
    recipe = "R2: median normalisation, log1p, top 500 HVGs (seurat), z-score"  # needs counts, K; faithful
    trainer_cls = CICLTrainer

    def prepare(self, adata: AnnData, config: CICLConfig) -> Prepared:
        ad = recipe_r2(adata, n_top_genes=min(config.n_hvg, adata.n_vars))
        return Prepared(ad, ad.obs["cell_index"].to_numpy(np.int64))

    def planned_epochs(self, config: CICLConfig) -> int:
        return int(config.epochs)
