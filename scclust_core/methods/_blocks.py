"""Shared building blocks of the deep methods: MLP builder, NB/ZINB count heads, clustering of an embedding.

Each method composes these instead of re-writing them (lightly's "building blocks over monoliths"). They are
written so that a method switching to them draws the same random numbers in the same order as before
(parameters are created, and initialised, layer by layer in forward order), so results stay identical.
"""
from __future__ import annotations

import warnings
from contextlib import AbstractContextManager, nullcontext
from typing import Callable, Sequence

import numpy as np
from ..graph import leiden_on_embedding  # noqa: F401  (the methods' import path)
import torch
import torch.nn as nn

from ..losses import disp_activation, mean_activation

__all__ = ["mlp", "CountHead", "kmeans", "leiden_on_embedding", "amp_context"]


def mlp(dims: Sequence[int], *, act: Callable[[], nn.Module] | None = nn.ReLU,
        norm: Callable[[int], nn.Module] | None = None, act_last: bool = False,
        init: Callable[[nn.Linear], None] | None = None) -> nn.Sequential:
    """``[Linear → norm → act] * (len(dims) - 1)`` as one ``nn.Sequential``.

    ``dims``: widths, input first (``[G, 256, 64]`` gives two Linear layers). ``norm`` (e.g.
    ``nn.BatchNorm1d``) and ``act`` follow every Linear except the last unless ``act_last`` (then the last
    block gets them too). ``init`` is applied to each Linear right after it is created (so the random draws
    happen in the same order as a hand-written loop).
    """
    dims = [int(d) for d in dims]
    if len(dims) < 2 or any(d < 1 for d in dims):
        raise ValueError(f"mlp needs at least two positive widths, got {dims!r}")
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        lin = nn.Linear(dims[i], dims[i + 1])
        if init is not None:
            init(lin)
        layers.append(lin)
        if i < len(dims) - 2 or act_last:
            if norm is not None:
                layers.append(norm(dims[i + 1]))
            if act is not None:
                layers.append(act())
    return nn.Sequential(*layers)


class CountHead(nn.Module):
    """NB (``zinb=False``) or ZINB output heads over a decoder's last hidden layer (DCA form, docs/methods.md §0.3).

    ``forward(h [B, H]) -> (mean [B, G], dispersion [B, G], pi [B, G] | None)``: mean = clamped ``exp``,
    dispersion = clamped ``softplus``, dropout probability π = ``sigmoid`` (ZINB only). The three Linear layers
    are created in the order mean, dispersion, π. Feed the outputs to ``losses.count_nll``.
    """

    def __init__(self, hidden: int, n_genes: int, *, zinb: bool):
        super().__init__()
        self.mean = nn.Linear(hidden, n_genes)
        self.disp = nn.Linear(hidden, n_genes)
        self.pi = nn.Linear(hidden, n_genes) if zinb else None

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        mean, disp = mean_activation(self.mean(h)), disp_activation(self.disp(h))
        return mean, disp, (torch.sigmoid(self.pi(h)) if self.pi is not None else None)


def kmeans(z: np.ndarray, k: int, *, n_init: int, seed: int, init: str = "k-means++") -> tuple[np.ndarray, np.ndarray]:
    """K-means (scikit-learn) on an embedding: ``(labels int64 [N], centres [K, D])``.

    ``z`` is used as given (its dtype changes scikit-learn's arithmetic, so callers keep the dtype they had);
    the centres keep that dtype.
    """
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=int(k), init=init, n_init=int(n_init), random_state=int(seed))
    labels = km.fit_predict(z)
    return labels.astype(np.int64), km.cluster_centers_


def amp_context(enabled: bool, device: torch.device | str) -> AbstractContextManager:
    """bfloat16 autocast on CUDA when ``enabled`` (a method's ``amp`` flag), else a no-op (always on CPU).

    bfloat16 keeps float32's range, so no gradient scaler is needed; callers compute their losses on
    ``.float()`` outputs outside the context.
    """
    if enabled and torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()
