"""The method contract every clustering method follows.

A method is a :class:`ClusteringMethod` subclass with a config dataclass (``Config``), registered by name.
``fit(adata, config, callback=...)`` never mutates ``adata``; it returns a :class:`MethodResult` with the
embedding, labels, per-epoch :class:`EpochLog` history (named loss components, display-only metrics),
:class:`Snapshot` s of a fixed subsample in 2-D, and the config. The training loop of a method stays a plain
``for epoch in ...`` loop that calls :meth:`FitContext.emit`, which computes display metrics, takes aligned
snapshots, calls the callback and reports a cooperative cancel.

Labels passed as ``label_key`` are used **only** for display metrics; no method may use them to pick an
epoch, a model or a hyperparameter.
"""
from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar, Protocol, Sequence, runtime_checkable

import numpy as np
from anndata import AnnData

from ..config import MethodConfig
from ..device import resolve_device, set_threads
from .. import metrics as _metrics

logger = logging.getLogger(__name__)

__all__ = [
    "EpochLog", "Snapshot", "MethodResult", "Callback", "CallbackProtocol", "CallbackList",
    "FitContext", "Prepared", "ClusteringMethod", "RunCancelled", "degenerate_clustering_warnings",
]

#: at most this many cells are followed in snapshots (and used for live silhouettes)
SNAPSHOT_CELLS = 5000
SILHOUETTE_CELLS = 2000


@dataclass
class EpochLog:
    """One training epoch: named loss components and display-only metrics."""

    epoch: int  # 1-based, counted across phases
    phase: str  # e.g. "train", "pretrain", "cluster"
    losses: dict[str, float]
    metrics: dict[str, float]
    seconds: float  # wall time of this epoch
    elapsed: float  # wall time since fit() started
    total_epochs: int  # planned epochs (an upper bound for methods that stop early)

    def to_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"epoch": self.epoch, "phase": self.phase, "seconds": self.seconds,
                               "elapsed": self.elapsed, "total_epochs": self.total_epochs}
        row.update({f"loss_{k}": v for k, v in self.losses.items()})
        row.update({f"metric_{k}": v for k, v in self.metrics.items()})
        return row


@dataclass
class Snapshot:
    """2-D view of the current embedding of a fixed subsample, with the current cluster labels."""

    epoch: int
    phase: str
    xy: np.ndarray  # float32 [n_sub, 2], aligned to the previous snapshot
    labels: np.ndarray  # int64 [n_sub]


@dataclass
class MethodResult:
    """What ``fit`` returns. Row ``i`` of ``embedding``/``labels`` is input cell ``cell_index[i]``."""

    method: str
    embedding: np.ndarray  # float32 [n_kept, d]
    labels: np.ndarray  # int64 [n_kept]
    cell_index: np.ndarray  # int64 [n_kept], rows of the input AnnData (cells removed by QC are absent)
    n_input_cells: int
    history: list[EpochLog]
    snapshots: list[Snapshot]
    snapshot_index: np.ndarray  # int64 [n_sub], input-cell rows followed by the snapshots
    config: dict[str, Any]
    metrics: dict[str, float]  # final metrics (display only when computed against an annotation)
    status: str = "completed"  # "completed" | "cancelled"
    device: str = "cpu"
    seconds: float = 0.0
    started_at: str = ""
    finished_at: str = ""
    label_key: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def n_clusters(self) -> int:
        return int(len(np.unique(self.labels)))

    def full_labels(self) -> np.ndarray:
        """Labels for every input cell; cells dropped by preprocessing get -1."""
        out = np.full(self.n_input_cells, -1, dtype=np.int64)
        out[self.cell_index] = self.labels
        return out

    def full_embedding(self) -> np.ndarray:
        """Embedding for every input cell; cells dropped by preprocessing get NaN rows."""
        out = np.full((self.n_input_cells, self.embedding.shape[1]), np.nan, dtype=np.float32)
        out[self.cell_index] = self.embedding
        return out

    def history_frame(self):
        import pandas as pd

        return pd.DataFrame([h.to_row() for h in self.history])


@runtime_checkable
class CallbackProtocol(Protocol):
    def on_train_begin(self, info: dict[str, Any]) -> None: ...
    def on_epoch_end(self, log: EpochLog, snapshot: Snapshot | None) -> None: ...
    def on_train_end(self, result: MethodResult) -> None: ...
    def should_stop(self) -> bool: ...


class Callback:
    """No-op base: override what you need (a run recorder, a UI job state, a progress bar)."""

    def on_train_begin(self, info: dict[str, Any]) -> None:
        """``info``: method, n_cells, n_genes, device, config, snapshot_index (input-cell rows the snapshots
        follow, int64)."""

    def on_epoch_end(self, log: EpochLog, snapshot: Snapshot | None) -> None:
        """Called after every epoch of every phase."""

    def on_snapshot(self, snapshot: Snapshot) -> None:
        """Called for snapshots taken outside an epoch (epoch 0 and the final one)."""

    def on_train_end(self, result: MethodResult) -> None:
        """Called once with the finished (or cancelled) result."""

    def should_stop(self) -> bool:
        """Cooperative cancel: return True to stop after the current step."""
        return False


class CallbackList(Callback):
    def __init__(self, callbacks: Sequence[Callback | None]):
        self.callbacks = [c for c in callbacks if c is not None]

    def on_train_begin(self, info):
        for c in self.callbacks:
            c.on_train_begin(info)

    def on_epoch_end(self, log, snapshot):
        for c in self.callbacks:
            c.on_epoch_end(log, snapshot)

    def on_snapshot(self, snapshot):
        for c in self.callbacks:
            if hasattr(c, "on_snapshot"):
                c.on_snapshot(snapshot)

    def on_train_end(self, result):
        for c in self.callbacks:
            c.on_train_end(result)

    def should_stop(self):
        return any(c.should_stop() for c in self.callbacks)


class RunCancelled(Exception):
    """Raised inside a method only when it cannot produce labels after a cancel (rare)."""


@dataclass
class Prepared:
    """A method's preprocessed input: ``adata`` (cells × selected genes) and where its cells came from."""

    adata: AnnData
    cell_index: np.ndarray  # int64 rows of the input AnnData


class FitContext:
    """Per-fit helper handed to a method's training loop (metrics, snapshots, callback, cancel)."""

    def __init__(self, *, method: str, callback: Callback | None, truth: np.ndarray | None,
                 n_cells: int, snapshot_every: int, seed: int, device: str):
        self.method = method
        self.callback = callback or Callback()
        self.truth = truth
        self.snapshot_every = int(snapshot_every)
        self.device = device
        rng = np.random.default_rng(seed)
        n_sub = min(n_cells, SNAPSHOT_CELLS)
        self.sub_idx = np.sort(rng.choice(n_cells, size=n_sub, replace=False)) if n_sub < n_cells else np.arange(n_cells)
        self.history: list[EpochLog] = []
        self.snapshots: list[Snapshot] = []
        self.total_epochs = 0
        self.t0 = time.perf_counter()
        self._t_last = self.t0
        self._stop = False
        self._prev_xy: np.ndarray | None = None
        self._last_epoch = 0

    # ------------------------------------------------------------ schedule
    def begin(self, total_epochs: int) -> None:
        """Declare the planned number of epochs (across phases; an upper bound if stopping early)."""
        self.total_epochs = int(total_epochs)
        self._t_last = time.perf_counter()

    def snapshot_due(self, epoch: int) -> bool:
        """True when ``emit(epoch, ...)`` will take a snapshot if given an embedding."""
        if epoch == 0:
            return True
        return self.snapshot_every > 0 and epoch % self.snapshot_every == 0

    @property
    def stop_requested(self) -> bool:
        if not self._stop and self.callback.should_stop():
            self._stop = True
        return self._stop

    # ------------------------------------------------------------ reporting
    def emit(self, epoch: int, phase: str, losses: dict[str, float], *, embedding: np.ndarray | None = None,
             labels: np.ndarray | None = None, extra_metrics: dict[str, float] | None = None,
             snapshot: bool | None = None) -> bool:
        """Record one epoch; returns True when the run should stop (cancel requested).

        Pass ``labels`` (current clustering of all cells) when the method has them: they give the live
        ARI/NMI against the reference annotation (display only). Pass ``embedding`` (all cells) at least when
        :meth:`snapshot_due` is true, to get a snapshot. ``snapshot`` overrides that schedule (for methods whose
        reported epochs are offset by an earlier phase, e.g. contrastive-sc's HVG search).
        """
        now = time.perf_counter()
        metrics = self._display_metrics(labels, embedding)
        if extra_metrics:
            metrics.update({k: float(v) for k, v in extra_metrics.items()})
        log = EpochLog(epoch=int(epoch), phase=phase, losses={k: float(v) for k, v in losses.items()},
                       metrics=metrics, seconds=now - self._t_last, elapsed=now - self.t0,
                       total_epochs=max(self.total_epochs, int(epoch)))
        self._t_last = now
        self.history.append(log)
        self._last_epoch = int(epoch)
        snap = None
        due = self.snapshot_due(epoch) if snapshot is None else snapshot
        if embedding is not None and labels is not None and due:
            snap = self._take_snapshot(epoch, phase, embedding, labels)
        self.callback.on_epoch_end(log, snap)
        return self.stop_requested

    def initial(self, embedding: np.ndarray, labels: np.ndarray, phase: str = "init", epoch: int = 0) -> None:
        """Epoch-0 snapshot: the embedding before any training (as in CICL's Fig. 3). ``epoch`` > 0 when an
        earlier phase already reported epochs (the snapshot then sits where the new training starts)."""
        snap = self._take_snapshot(int(epoch), phase, embedding, labels)
        self.callback.on_snapshot(snap) if hasattr(self.callback, "on_snapshot") else None

    def finish(self, embedding: np.ndarray, labels: np.ndarray, phase: str = "final") -> None:
        """Final snapshot from the final embedding and labels, unless the last epoch already took one."""
        if self.snapshots and self.snapshots[-1].epoch == self._last_epoch and self._last_epoch > 0:
            # replace labels by the final clustering so the last frame matches the result
            last = self.snapshots[-1]
            self.snapshots[-1] = Snapshot(last.epoch, last.phase, last.xy, np.asarray(labels)[self.sub_idx].astype(np.int64))
            return
        snap = self._take_snapshot(self._last_epoch, phase, embedding, labels)
        self.callback.on_snapshot(snap) if hasattr(self.callback, "on_snapshot") else None

    # ------------------------------------------------------------ internals
    def _display_metrics(self, labels, embedding) -> dict[str, float]:
        if labels is None:
            return {}
        labels = np.asarray(labels)
        if self.truth is not None:
            ok = self.truth >= 0
            return {"ari": _metrics.ari(self.truth[ok], labels[ok]), "nmi": _metrics.nmi(self.truth[ok], labels[ok])}
        if embedding is not None:
            idx = self.sub_idx[: SILHOUETTE_CELLS]
            return {"silhouette": _metrics.silhouette(np.asarray(embedding)[idx], labels[idx])}
        return {}

    def _take_snapshot(self, epoch: int, phase: str, embedding: np.ndarray, labels: np.ndarray) -> Snapshot:
        z = np.asarray(embedding, dtype=np.float64)[self.sub_idx]
        xy = pca_2d(z)
        if self._prev_xy is not None:
            xy = procrustes_align(xy, self._prev_xy)
        self._prev_xy = xy
        snap = Snapshot(int(epoch), phase, xy.astype(np.float32), np.asarray(labels)[self.sub_idx].astype(np.int64))
        self.snapshots.append(snap)
        return snap


def pca_2d(z: np.ndarray) -> np.ndarray:
    """First two principal components (cheap and deterministic, for live views)."""
    z = z - z.mean(axis=0, keepdims=True)
    if z.shape[1] < 2:
        return np.column_stack([z[:, 0] if z.shape[1] else np.zeros(len(z)), np.zeros(len(z))])
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    return z @ vt[:2].T


def procrustes_align(xy: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Rotate/reflect ``xy`` onto ``ref`` (same cells) so consecutive snapshots do not flip or spin."""
    from scipy.linalg import orthogonal_procrustes

    a = xy - xy.mean(0)
    b = ref - ref.mean(0)
    if not np.isfinite(a).all() or np.allclose(a, 0):
        return xy
    r, _ = orthogonal_procrustes(a, b)
    return a @ r


class ClusteringMethod(ABC):
    """Base class: declares what a method needs and runs the shared parts of ``fit``.

    Subclasses set the class attributes and implement :meth:`prepare` (preprocessing recipe) and
    :meth:`train` (the model; returns embedding, labels and extras for the prepared cells).
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    citation: ClassVar[str] = ""
    #: e.g. "R2 (500 HVGs, scaled)", shown in the UI and recorded in runs
    recipe: ClassVar[str] = ""
    #: needs integer counts (NB/ZINB decoders or count-based recipes)
    needs_counts: ClassVar[bool] = True
    #: can estimate K when ``n_clusters`` is None
    can_estimate_k: ClassVar[bool] = False
    #: "faithful", "baseline", or "not yet faithful: <why>" — shown in the UI and README
    fidelity: ClassVar[str] = "faithful"
    #: deep methods train for epochs and produce live curves/snapshots
    deep: ClassVar[bool] = True

    @property
    def summary(self) -> str:
        doc = (type(self).__doc__ or "").strip()
        return doc.splitlines()[0] if doc else self.name

    def default_config(self, preset: str | None = None, **overrides: Any) -> MethodConfig:
        return self.Config.from_preset(preset, **overrides)

    # ---------------------------------------------------------------- to implement
    @abstractmethod
    def prepare(self, adata: AnnData, config: MethodConfig) -> Prepared:
        """Preprocess a copy of ``adata`` (raw counts in X) into the method's input."""

    @abstractmethod
    def train(self, data: Prepared, config: MethodConfig, ctx: FitContext) -> tuple[np.ndarray, np.ndarray, dict]:
        """Train and cluster; return ``(embedding float32 [n, d], labels int64 [n], extras)``."""

    # ---------------------------------------------------------------- shared driver
    def fit(self, adata: AnnData, config: MethodConfig | None = None, *, callback: Callback | None = None,
            label_key: str | None = None) -> MethodResult:
        """Preprocess, train and cluster ``adata`` (not modified). See the module docstring."""
        from ..runs import seed_everything

        config = config if config is not None else self.default_config()
        if not isinstance(config, self.Config):
            raise TypeError(f"{self.name} expects a {self.Config.__name__}, got {type(config).__name__}")
        config.validate()
        if adata.n_obs == 0 or adata.n_vars == 0:
            raise ValueError(f"The data has {adata.n_obs} cells and {adata.n_vars} genes; nothing to cluster")
        k = config.n_clusters
        if k is None and not self.can_estimate_k:
            raise ValueError(f"{self.name} needs the number of clusters: set n_clusters (K)")
        if k is not None and k >= adata.n_obs:
            raise ValueError(f"n_clusters={k} must be smaller than the number of cells ({adata.n_obs})")
        truth_all = None
        if label_key is not None:
            if label_key not in adata.obs:
                raise ValueError(f"Annotation column {label_key!r} not in obs; available: {list(adata.obs.columns)}")
            truth_all = _codes(adata.obs[label_key])

        device = resolve_device(config.device)
        if device == "cpu":
            set_threads()
        seed_everything(config.seed)
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        t0 = time.perf_counter()
        data = self.prepare(adata, config)
        n = data.adata.n_obs
        if k is not None and k >= n:
            raise ValueError(f"n_clusters={k} must be smaller than the number of cells left after filtering ({n})")
        truth = truth_all[data.cell_index] if truth_all is not None else None
        ctx = FitContext(method=self.name, callback=callback, truth=truth, n_cells=n,
                         snapshot_every=config.snapshot_every, seed=config.seed, device=device)
        ctx.device = device
        ctx.callback.on_train_begin({"method": self.name, "n_cells": n, "n_genes": data.adata.n_vars,
                                     "device": device, "config": config.to_dict(),
                                     "snapshot_index": np.asarray(data.cell_index, dtype=np.int64)[ctx.sub_idx]})
        seed_everything(config.seed)
        embedding, labels, extras = self.train(data, config, ctx)
        embedding = np.ascontiguousarray(embedding, dtype=np.float32)
        labels = _relabel(np.asarray(labels))
        if embedding.shape[0] != n or labels.shape[0] != n:
            raise RuntimeError(f"{self.name} returned {embedding.shape[0]} embeddings / {labels.shape[0]} labels for {n} cells")
        if self.deep:
            ctx.finish(embedding, labels)
        final = _metrics.evaluate(labels, truth=truth, embedding=embedding)
        extras = dict(extras or {})
        warns = degenerate_clustering_warnings(labels, k)
        if warns:
            extras["warnings"] = list(extras.get("warnings", [])) + warns
            for w in warns:
                logger.warning("%s: %s", self.name, w)
        result = MethodResult(
            method=self.name, embedding=embedding, labels=labels, cell_index=np.asarray(data.cell_index, dtype=np.int64),
            n_input_cells=adata.n_obs, history=ctx.history, snapshots=ctx.snapshots,
            snapshot_index=np.asarray(data.cell_index, dtype=np.int64)[ctx.sub_idx], config=config.to_dict(),
            metrics=final, status="cancelled" if ctx.stop_requested else "completed", device=device,
            seconds=time.perf_counter() - t0, started_at=started,
            finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), label_key=label_key,
            extras=extras,
        )
        ctx.callback.on_train_end(result)
        return result


def degenerate_clustering_warnings(labels: np.ndarray, k_requested: int | None, *,
                                   max_share: float = 0.9) -> list[str]:
    """Label-free warnings for a result that looks collapsed: fewer clusters than asked, or one cluster holding
    ``max_share`` of the cells. Deep methods can collapse (too few optimisation steps on a small dataset, or a
    method that does not suit the data); the user should see that before reading the clusters as biology.
    """
    labels = np.asarray(labels)
    if labels.size == 0:
        return []
    counts = np.bincount(np.unique(labels, return_inverse=True)[1])
    out = []
    if k_requested is not None and len(counts) < k_requested:
        out.append(f"{k_requested} clusters were asked for, but only {len(counts)} received any cells.")
    share = counts.max() / labels.size
    if (k_requested is None or k_requested > 1) and share >= max_share:
        out.append(f"{share:.0%} of the cells are in a single cluster: the training may have collapsed. Compare "
                   "with a classic baseline (Leiden or KMeans on PCA) before reading these clusters as cell types.")
    return out


def _codes(col) -> np.ndarray:
    """Integer codes of an annotation column; missing values become -1 (ignored by metrics)."""
    import pandas as pd

    cat = pd.Categorical(col)
    return np.asarray(cat.codes, dtype=np.int64)


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Consecutive int64 labels 0..K-1, ordered by decreasing cluster size (stable for display)."""
    uniq, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[inv].astype(np.int64)
