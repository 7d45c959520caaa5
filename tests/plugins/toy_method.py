"""A toy deep method, written as a developer new to the code would: this one file is all it takes.

Registered by one import line (here ``SCCLUST_METHOD_PLUGINS=toy_method``; inside the package, a line in
``scclust_core/methods/__init__.py``), it is picked up by every page, the CLI, the bench, the estimate and the
contract tests without another edit (``tests/test_new_method.py`` checks each).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from anndata import AnnData

from scclust_core.config import MethodConfig, param
from scclust_core.estimate import CostModel, measured_runs
from scclust_core.methods import ClusteringMethod, FitContext, Prepared, register_method
from scclust_core.methods._blocks import kmeans
from scclust_core.methods._loop import check_finite
from scclust_core.results import MethodCard
from scclust_core.preprocess import recipe_r2


@dataclass
class ToyConfig(MethodConfig):
    epochs: int = param(4, min=1, max=100, help="Training epochs of the linear autoencoder.")
    dim: int = param(8, min=2, max=64, help="Embedding size.")
    lr: float = param(0.01, min=1e-5, max=1.0, help="Adam learning rate.")

    PRESETS = {"cpu": {"epochs": 6}, "tiny": {"epochs": 3}}
    PRESET_NOTES = {"cpu": "six epochs", "tiny": "three epochs: a smoke test"}


@register_method("toy")
class Toy(ClusteringMethod[ToyConfig]):
    """Toy: a linear autoencoder of log-normalised HVGs, then K-means on its code."""

    citation = "none: a test fixture"
    fidelity = "baseline"
    recipe = "R2 (top 50 HVGs, z-score)"
    card = MethodCard(what="A linear autoencoder of the top genes, then K-means.", when="Only in tests.")
    cost = CostModel(measured_runs("cpu", (150, 60, 1.0), (1500, 60, 2.0), (3000, 600, 4.0)))

    def prepare(self, adata: AnnData, config: ToyConfig) -> Prepared:
        ad = recipe_r2(adata, n_top_genes=min(50, adata.n_vars))
        return Prepared(ad, ad.obs["cell_index"].to_numpy(np.int64))

    def planned_epochs(self, config: ToyConfig) -> int:
        return int(config.epochs)

    def train(self, data: Prepared, config: ToyConfig, ctx: FitContext) -> tuple[np.ndarray, np.ndarray, dict]:
        x = torch.as_tensor(np.asarray(data.adata.X, dtype=np.float32))
        enc, dec = torch.nn.Linear(x.shape[1], config.dim), torch.nn.Linear(config.dim, x.shape[1])
        opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=config.lr)
        k = config.n_clusters or 2
        with torch.no_grad():
            z0 = enc(x).numpy()
        ctx.initial(z0, kmeans(z0, k, seed=config.seed, n_init=2)[0])  # the epoch-0 snapshot
        for epoch in ctx.phase("train", config.epochs):
            loss = torch.mean((dec(enc(x)) - x) ** 2)
            check_finite("reconstruction", loss, epoch=epoch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                z = enc(x).numpy()
            if ctx.emit(epoch, "train", {"reconstruction": float(loss.detach())}, embedding=z,
                        labels=lambda e: kmeans(e, k, seed=config.seed, n_init=2)[0]):
                break
        with torch.no_grad():
            z = enc(x).numpy()
        return z, kmeans(z, k, seed=config.seed, n_init=4)[0], {}


def pytest_configure(config) -> None:  # noqa: ARG001 - usable as ``pytest -p toy_method``: registered above
    """Being imported is the registration; this hook only lets pytest load the module as a plugin."""
