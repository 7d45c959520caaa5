"""CICL: cluster-aware iterative contrastive learning with a sequence-length-1 transformer encoder.

Citation: Jiang, Wang, Guan & Zhou, "scRNA-seq Data Clustering by Cluster-aware Iterative Contrastive
Learning" (preprint). Code: ``Alunethy/CICL`` @ 41d2df8 (METHODS.md §1, §8).

What runs here (tags of METHODS.md):

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
code: nearest fixed centre of the clean pass), assembled over the epoch's steps; the epoch-0 snapshot is the
train-mode embedding the centres were fitted on, with its K-means labels. Views use a torch generator seeded
with ``seed``; shards and minibatches a numpy generator seeded with ``seed``; dropout the global torch RNG
(seeded by the base). The ``cpu`` preset is the [A] adaptation of §1.10/§6: 500 HVGs, full batch, 25 epochs,
Q/K skipped, one evaluation at the end (no intermediate snapshots), sharding above 3,000 cells.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from anndata import AnnData
from sklearn.cluster import KMeans

from ..device import torch_threads
from ..config import MethodConfig, param
from ..losses import info_nce, nt_xent, student_t_q
from ..preprocess import recipe_r2
from ._base import ClusteringMethod, FitContext, Prepared
from ._cicl_model import CICLEncoder, CICLHead, cluster_aware_loss, cluster_aware_loss_paper, make_views
from ._registry import register_method

logger = logging.getLogger(__name__)

__all__ = ["CICLConfig", "CICL"]

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
    augmentation: str = param("masked_gaussian", choices=("masked_gaussian", "minmax_gaussian"), advanced=True,
                              help="masked_gaussian [C]: noise on 80 % of genes; minmax_gaussian [P]: N(0,1) "
                                   "rescaled to [0,1] added to all genes.")
    resample_views_each_epoch: bool = param(False, advanced=True,
                                            help="Redraw the two views every epoch ([P]); the code draws them once.")
    instance_loss: str = param("code", choices=("code", "paper"), advanced=True,
                               help="code: one-directional InfoNCE with cross-view negatives; paper: symmetric NT-Xent.")
    cluster_loss: str = param("code", choices=("code", "paper"), advanced=True,
                              help="code: CirculatePairConLoss (instance pair positive, same-cluster cells removed "
                                   "from negatives); paper: same-cluster pairs in the numerator (Eq. 15).")
    cluster_loss_reduction: str = param("sum", choices=("sum", "mean"), advanced=True,
                                        help="sum over clusters present (code quirk, scale grows with K) or mean.")
    centroids: str = param("fixed_init", choices=("fixed_init", "kmeans_every_step"), advanced=True,
                           help="fixed_init [C]: K-means centres of the untrained encoder, never updated; "
                                "kmeans_every_step [P]: K-means on each step's embedding.")
    centres_from_train_mode: bool = param(True, advanced=True,
                                          help="Fit the initial centres on the train-mode (dropout on) embedding, "
                                               "as the code does; False uses eval mode.")
    compute_qk: bool = param(True, advanced=True,
                             help="Compute the Q/K attention products, which are exact no-ops for a length-1 "
                                  "sequence; False skips them (identical results, ~30 % faster).")
    dropout: float = param(0.2, min=0.0, max=0.9, advanced=True, help="Dropout in every encoder layer.")
    n_layers: int = param(4, min=1, max=12, advanced=True, help="Encoder layers.")
    n_heads: int = param(2, min=1, max=16, advanced=True, help="Attention heads (512 dims each).")
    d_ff: int = param(1024, min=8, max=8192, advanced=True, help="Feed-forward width of an encoder layer.")
    head_hidden: int = param(2048, min=8, max=8192, advanced=True, help="Hidden width of the projection head.")
    head_out: int = param(512, min=2, max=4096, advanced=True, help="Output width of the projection head.")
    kmeans_n_init: int = param(10, min=1, max=100, advanced=True,
                               help="Restarts of the centre-initialisation and final K-means.")
    torch_threads: int = param(0, min=0, max=256, advanced=True,
                               help="CPU threads torch uses while training (restored afterwards); 0 = the process setting.")

    PRESETS = {
        "paper": {"epochs": 51, "batch_size": 6000, "shards": 1, "compute_qk": True, "snapshot_every": 5},
        "cpu": {"n_hvg": 500, "epochs": 25, "batch_size": 6000, "shards": 0, "compute_qk": False,
                "snapshot_every": 0},
    }
    PRESET_NOTES = {
        "paper": "Code settings [C]: 500 HVGs, 51 epochs, batch 6000 on one device, evaluation every 5 epochs "
                 "(the paper's 1000 epochs: set epochs).",
        "cpu": "Adaptation [A], not the published setting: 25 epochs, Q/K skipped (exact), one evaluation at the "
               "end, batch split into 4 shards above 3,000 cells (as the original 4 GPUs).",
    }


def _n_shards(config: CICLConfig, batch: int) -> int:
    if config.shards > 0:
        return max(1, min(config.shards, batch // 2))
    return 1 if batch <= 3000 else 4


@register_method("cicl")
class CICL(ClusteringMethod):
    """Cluster-aware contrastive learning: a length-1 transformer encoder, InfoNCE + 0.1 × cluster-aware loss.

    See the module docstring for what is [C]/[P]/[A] and every choice made where the spec is silent.
    """

    Config = CICLConfig
    citation = ("Jiang, Wang, Guan & Zhou. scRNA-seq Data Clustering by Cluster-aware Iterative Contrastive "
                "Learning (preprint); code github.com/Alunethy/CICL")
    recipe = "R2: median normalisation, log1p, top 500 HVGs (seurat), z-score"
    needs_counts = True
    can_estimate_k = False
    fidelity = "faithful"

    def prepare(self, adata: AnnData, config: CICLConfig) -> Prepared:  # type: ignore[override]
        ad = recipe_r2(adata, n_top_genes=min(config.n_hvg, adata.n_vars))
        return Prepared(ad, ad.obs["cell_index"].to_numpy(np.int64))

    def train(self, data: Prepared, config: CICLConfig, ctx: FitContext):  # type: ignore[override]
        with torch_threads(config.torch_threads, ctx.device):
            return self._train(data, config, ctx)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    @torch.no_grad()
    def _encode(enc: CICLEncoder, x: torch.Tensor, *, train_mode: bool) -> torch.Tensor:
        was = enc.training
        enc.train(train_mode)
        out = torch.cat([enc(x[s:s + _EVAL_BATCH]) for s in range(0, x.shape[0], _EVAL_BATCH)])
        enc.train(was)
        return out

    def _kmeans(self, z: np.ndarray, k: int, seed: int, n_init: int) -> tuple[np.ndarray, np.ndarray]:
        km = KMeans(n_clusters=k, init="k-means++", n_init=n_init, random_state=seed)
        labels = km.fit_predict(np.asarray(z, dtype=np.float32))
        return labels.astype(np.int64), km.cluster_centers_.astype(np.float32)

    def _views(self, x: torch.Tensor, config: CICLConfig, gen: torch.Generator):
        kw = dict(kind=config.augmentation, noise_std=config.noise_std, gene_frac=config.noise_gene_frac,
                  generator=gen)
        return make_views(x, **kw), make_views(x, **kw)

    # ------------------------------------------------------------------ training
    def _train(self, data: Prepared, config: CICLConfig, ctx: FitContext):
        dev = torch.device(ctx.device)
        k = int(config.n_clusters)
        x = torch.from_numpy(np.ascontiguousarray(data.adata.X, dtype=np.float32)).to(dev)
        n, g = x.shape
        gen = torch.Generator(device=dev).manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)

        enc = CICLEncoder(g, config.n_layers, n_heads=config.n_heads, d_ff=config.d_ff,
                          dropout=config.dropout).to(dev)
        enc.set_compute_qk(config.compute_qk)
        head = CICLHead(g, config.head_hidden, config.head_out).to(dev)
        a1, a2 = self._views(x, config, gen)

        # initial centres: K-means on the untrained encoder's embedding (train mode = dropout on, as the code)
        h0 = self._encode(enc, x, train_mode=config.centres_from_train_mode).cpu().numpy()
        labels0, centres0 = self._kmeans(h0, k, config.seed, config.kmeans_n_init)
        centres = torch.nn.Parameter(torch.from_numpy(centres0).to(dev))
        ctx.initial(h0, labels0)
        del h0

        opt = torch.optim.Adam([
            {"params": head.parameters(), "lr": config.lr_head},
            {"params": enc.parameters(), "lr": config.lr_encoder, "weight_decay": config.weight_decay},
            {"params": [centres], "lr": config.lr_encoder, "weight_decay": config.weight_decay},
        ])
        batch = min(config.batch_size, n)
        n_shards = _n_shards(config, batch)
        ctx.begin(config.epochs)
        pseudo = labels0.copy()
        stopped = False
        for epoch in range(config.epochs):
            if config.resample_views_each_epoch and epoch > 0:
                a1, a2 = self._views(x, config, gen)
            enc.train()
            head.train()
            perm = rng.permutation(n)
            sums = {"instance": 0.0, "cluster": 0.0, "total": 0.0}
            n_steps = 0
            for s in range(0, n, batch):
                if ctx.stop_requested:
                    stopped = True
                    break
                idx = perm[s:s + batch]
                if len(idx) < 2:
                    continue
                idx_t = torch.from_numpy(idx).to(dev)
                # (1) pseudo-labels from the clean batch (train mode, no gradient: exact shortcut)
                with torch.no_grad():
                    h_clean = enc(x[idx_t])
                    if config.centroids == "fixed_init":
                        lab = student_t_q(h_clean, centres.detach()).argmax(dim=1)
                    else:
                        step_seed = int(rng.integers(2**31 - 1))
                        lab_np, c_np = self._kmeans(h_clean.cpu().numpy(), min(k, len(idx)), step_seed, 20)
                        lab = student_t_q(h_clean, torch.from_numpy(c_np).to(dev)).argmax(dim=1)
                    del h_clean
                pseudo[idx] = lab.cpu().numpy()
                # (2) per shard: views → encoder → head → losses; gradients averaged over shards
                opt.zero_grad(set_to_none=True)
                order = torch.from_numpy(rng.permutation(len(idx))).to(dev)
                parts = [p for p in torch.tensor_split(order, n_shards) if len(p) >= 2]
                step = {"instance": 0.0, "cluster": 0.0, "total": 0.0}
                for p in parts:
                    rows = idx_t[p]
                    z = head(enc(torch.cat([a1[rows], a2[rows]])))
                    f1, f2 = z[: len(p)], z[len(p):]
                    l_ins = (info_nce(f1, f2, config.temperature) if config.instance_loss == "code"
                             else nt_xent(f1, f2, config.temperature))
                    if config.cluster_loss == "code":
                        l_clu = cluster_aware_loss(f1, f2, lab[p], config.temperature,
                                                   config.cluster_loss_reduction)
                    else:
                        l_clu = cluster_aware_loss_paper(f1, f2, lab[p], config.temperature)
                    loss = l_ins + config.cluster_weight * l_clu
                    (loss / len(parts)).backward()
                    step["instance"] += float(l_ins.detach()) / len(parts)
                    step["cluster"] += float(l_clu.detach()) / len(parts)
                    step["total"] += float(loss.detach()) / len(parts)
                opt.step()
                for key in sums:
                    sums[key] += step[key]
                n_steps += 1
            losses = {key: v / max(n_steps, 1) for key, v in sums.items()}
            ep = epoch + 1
            emb = None
            if ctx.snapshot_due(ep) and not stopped:
                emb = self._encode(enc, x, train_mode=False).cpu().numpy()
            stop = ctx.emit(ep, "train", losses, embedding=emb, labels=pseudo.copy())
            if stop or stopped:
                break

        z = self._encode(enc, x, train_mode=False).cpu().numpy().astype(np.float32)
        labels, _ = self._kmeans(z, k, config.seed, config.kmeans_n_init)
        extras = {"n_genes": int(g), "shards": int(n_shards), "batch_size": int(batch)}
        return z, labels, extras
