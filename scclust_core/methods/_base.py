"""The method contract every clustering method follows.

A method is a :class:`ClusteringMethod` subclass with a config dataclass (``Config``), registered by name.
``fit(adata, config, callback=...)`` never mutates ``adata``; it returns a :class:`MethodResult` with the
embedding, labels, per-epoch :class:`EpochLog` history (named loss components, display-only metrics),
:class:`Snapshot` s of a fixed subsample in 2-D, and the config. ``fit`` runs, in order: input checks, ``prepare``,
the input side of an integration (:mod:`._batch`), ``train``, the output side, final metrics. A deep method's
``train`` is the one trainer shape of :mod:`._trainer` (phases of epochs reported through
:meth:`FitContext.emit`, which computes display metrics, takes aligned snapshots lazily on a fixed subsample,
calls the callback and reports a cooperative cancel). The result/callback types live in
:mod:`scclust_core.results`, the loop helpers in :mod:`._loop`.

Labels passed as ``label_key`` are used **only** for display metrics; no method may use them to pick an
epoch, a model or a hyperparameter.
"""
from __future__ import annotations

import logging
import time
import warnings
from abc import ABC, abstractmethod
from datetime import datetime, timezone
from typing import Any, Callable, ClassVar, Generic, Iterator, Mapping, TypeVar, Union, cast, get_args, get_origin

import numpy as np
from anndata import AnnData

from ..config import MethodConfig
from ..device import fit_threads, hold_threads, resolve_device
from ..estimate import CostModel
from ._batch import Integration
from .. import metrics as _metrics
from ._types import (Callback, CallbackList, CallbackProtocol, EpochLog, MethodCard, MethodResult,  # noqa: F401
                     Prepared, Snapshot)

logger = logging.getLogger(__name__)

__all__ = [
    "EpochLog", "Snapshot", "MethodResult", "Callback", "CallbackProtocol", "CallbackList",
    "FitContext", "Prepared", "ClusteringMethod", "ConfigT", "degenerate_clustering_warnings", "snapshot_rows",
]

ConfigT = TypeVar("ConfigT", bound=MethodConfig)
#: an embedding for :meth:`FitContext.emit`: all cells or the snapshot rows, or a callable computing it lazily
EmbeddingArg = Union[np.ndarray, Callable[[], np.ndarray], None]
#: labels for :meth:`FitContext.emit`: all cells or the snapshot rows, or ``f(embedding_rows) -> labels``
LabelsArg = Union[np.ndarray, Callable[[np.ndarray], np.ndarray], None]

#: at most this many cells are followed in snapshots
SNAPSHOT_CELLS = 5000
#: the live silhouette (display only, when no reference is chosen) is computed on a fixed random subset of this
#: many snapshot cells: it is quadratic in the cells, and 500 give it to about ±0.01 (per-cell spread ~0.2)
SILHOUETTE_CELLS = 500


class FitContext:
    """Per-fit helper handed to a method's training loop: phases and the global epoch counter, cooperative
    cancel, display metrics, lazily computed snapshots and the callback.

    The live views follow a fixed subsample of at most :data:`SNAPSHOT_CELLS` cells (``sub_idx``, rows of the
    prepared cells): snapshots and display metrics are computed on it, so a live view never reclusters all
    cells of a 50k dataset. Methods may hand :meth:`emit` an embedding / labels of all ``n`` cells or of the
    ``n_sub`` subsample rows (``sub_idx`` order) — when ``n ≤ 5,000`` both are the same.
    """

    def __init__(self, *, method: str, callback: Callback | CallbackProtocol | None, truth: np.ndarray | None,
                 n_cells: int, snapshot_every: int, seed: int, device: str):
        self.method = method
        self.callback = callback or Callback()
        # an annotation without usable labels scores nothing (NaN at the end, with a warning): no live ARI/NMI
        self.truth = truth if truth is not None and _metrics.label_problem(truth) is None else None
        self.n_cells = int(n_cells)
        self.snapshot_every = int(snapshot_every)
        self.device = device
        self.sub_idx = snapshot_rows(n_cells, seed)
        n_sub = len(self.sub_idx)  # a random subset: the first rows would be the file's first cells (often one type)
        self._sil_rows = np.sort(np.random.default_rng(seed + 1).choice(n_sub, SILHOUETTE_CELLS, replace=False)) \
            if n_sub > SILHOUETTE_CELLS else slice(None)
        self.history: list[EpochLog] = []
        self.snapshots: list[Snapshot] = []
        self.total_epochs = 0
        self.epoch = 0  # global epoch counter, owned by :meth:`phase`
        self.phase_name = ""
        self.t0 = time.perf_counter()
        self._t_last = self.t0
        self._stop = False
        self._prev_xy: np.ndarray | None = None
        self._last_epoch = 0
        #: the fit's integration over the prepared cells (a consensus corrects each of its views with it)
        self.integration: Integration = Integration()

    @property
    def n_sub(self) -> int:
        return int(len(self.sub_idx))

    # ------------------------------------------------------------ schedule
    def begin(self, total_epochs: int) -> None:
        """Declare (or revise) the planned number of epochs across phases (an upper bound if stopping early)."""
        self.total_epochs = int(total_epochs)
        self._t_last = time.perf_counter()

    def phase(self, name: str, n_epochs: int) -> Iterator[int]:
        """``for epoch in ctx.phase("pretrain", n): ...`` yields the **global** epoch number (1-based, counted
        across phases) and ends early once a cancel is requested (checked before every epoch)."""
        self.phase_name = name
        for _ in range(int(n_epochs)):
            if self.stop_requested:
                return
            self.epoch += 1
            self.phase_name = name
            yield self.epoch

    def snapshot_due(self, epoch: int) -> bool:
        """True when ``emit(epoch, ...)`` will take a snapshot if given an embedding and labels."""
        if epoch == 0:
            return True
        return self.snapshot_every > 0 and epoch % self.snapshot_every == 0

    @property
    def stop_requested(self) -> bool:
        if not self._stop and self.callback.should_stop():
            self._stop = True
        return self._stop

    # ------------------------------------------------------------ reporting
    def emit(self, epoch: int, phase: str, losses: Mapping[str, float], *, embedding: EmbeddingArg = None,
             labels: LabelsArg = None, extra_metrics: Mapping[str, float] | None = None,
             snapshot: bool | None = None) -> bool:
        """Record one epoch; returns True when the run should stop (cancel requested).

        ``embedding``: an array (all cells or the subsample rows) or a zero-argument callable evaluated only
        when a snapshot is due — pass a callable so that epochs without a snapshot cost nothing.
        ``labels``: the current clustering (all cells or subsample rows), or a callable ``f(embedding)``
        evaluated on the (subsample) embedding when a snapshot is due; with a reference annotation they give
        the live ARI/NMI (display only). ``snapshot`` overrides the schedule (:meth:`snapshot_due`).
        """
        now = time.perf_counter()
        due = self.snapshot_due(epoch) if snapshot is None else bool(snapshot)
        z_sub, lab_sub = self._resolve(embedding, labels, evaluate=due)
        metrics = self._display_metrics(lab_sub, z_sub)
        if extra_metrics:
            metrics.update({k: float(v) for k, v in extra_metrics.items()})
        log = EpochLog(epoch=int(epoch), phase=phase, losses={k: float(v) for k, v in losses.items()},
                       metrics=metrics, seconds=now - self._t_last, elapsed=now - self.t0,
                       total_epochs=max(self.total_epochs, int(epoch)))
        self.history.append(log)
        self._last_epoch = int(epoch)
        snap = None
        if due and z_sub is not None and lab_sub is not None:
            snap = self._take_snapshot(epoch, phase, z_sub, lab_sub)
        self.callback.on_epoch_end(log, snap)
        self._t_last = time.perf_counter()  # live-view work is not counted in the next epoch's seconds
        return self.stop_requested

    def initial(self, embedding: EmbeddingArg, labels: LabelsArg, phase: str = "init", epoch: int = 0) -> None:
        """Epoch-0 snapshot: the embedding before any training (as in CICL's Fig. 3). ``epoch`` > 0 when an
        earlier phase already reported epochs (the snapshot then sits where the new training starts)."""
        z_sub, lab_sub = self._resolve(embedding, labels, evaluate=True)
        if z_sub is None or lab_sub is None:
            raise ValueError("FitContext.initial needs an embedding and labels")
        self._notify(self._take_snapshot(int(epoch), phase, z_sub, lab_sub))
        self._t_last = time.perf_counter()

    def finish(self, embedding: np.ndarray, labels: np.ndarray, phase: str = "final") -> None:
        """Final snapshot from the final embedding and labels, unless the last epoch already took one."""
        lab_sub = self._rows(np.asarray(labels)).astype(np.int64)
        if self.snapshots and self.snapshots[-1].epoch == self._last_epoch and self._last_epoch > 0:
            # replace labels by the final clustering so the last frame matches the result
            last = self.snapshots[-1]
            self.snapshots[-1] = Snapshot(last.epoch, last.phase, last.xy, lab_sub)
            return
        self._notify(self._take_snapshot(self._last_epoch, phase, self._rows(np.asarray(embedding)), lab_sub))

    # ------------------------------------------------------------ internals
    def _notify(self, snap: Snapshot) -> None:
        if hasattr(self.callback, "on_snapshot"):
            self.callback.on_snapshot(snap)

    def _rows(self, a: np.ndarray) -> np.ndarray:
        """Subsample rows of an all-cell array; an array that already has ``n_sub`` rows is returned as is."""
        if len(a) == self.n_sub:
            return a
        if len(a) == self.n_cells:
            return a[self.sub_idx]
        raise ValueError(f"{self.method}: expected {self.n_cells} (all cells) or {self.n_sub} (snapshot "
                         f"subsample) rows, got {len(a)}")

    def _resolve(self, embedding: EmbeddingArg, labels: LabelsArg, *,
                 evaluate: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Subsample rows of the embedding / labels, calling lazy arguments only when ``evaluate``."""
        z = embedding() if callable(embedding) and evaluate else embedding
        z_sub = self._rows(np.asarray(z)) if z is not None and not callable(z) else None
        if callable(labels):
            lab = labels(z_sub) if evaluate and z_sub is not None else None
        else:
            lab = labels
        lab_sub = self._rows(np.asarray(lab)).astype(np.int64) if lab is not None else None
        return z_sub, lab_sub

    def _display_metrics(self, lab_sub: np.ndarray | None, z_sub: np.ndarray | None) -> dict[str, float]:
        if lab_sub is None:
            return {}
        if self.truth is not None:
            truth = self.truth[self.sub_idx]
            ok = truth >= 0
            return {"ari": _metrics.ari(truth[ok], lab_sub[ok]), "nmi": _metrics.nmi(truth[ok], lab_sub[ok])}
        if z_sub is not None:
            return {"silhouette": _metrics.silhouette(z_sub[self._sil_rows], lab_sub[self._sil_rows])}
        return {}

    def _take_snapshot(self, epoch: int, phase: str, z_sub: np.ndarray, lab_sub: np.ndarray) -> Snapshot:
        xy = pca_2d(np.asarray(z_sub, dtype=np.float64))
        if self._prev_xy is not None:
            xy = procrustes_align(xy, self._prev_xy)
        self._prev_xy = xy
        snap = Snapshot(int(epoch), phase, xy.astype(np.float32), np.asarray(lab_sub, dtype=np.int64))
        self.snapshots.append(snap)
        return snap


def snapshot_rows(n_cells: int, seed: int) -> np.ndarray:
    """The fixed subsample (rows of the prepared cells, sorted int64) that live views follow."""
    n_sub = min(n_cells, SNAPSHOT_CELLS)
    if n_sub < n_cells:
        return np.sort(np.random.default_rng(seed).choice(n_cells, size=n_sub, replace=False)).astype(np.int64)
    return np.arange(n_cells, dtype=np.int64)


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


class ClusteringMethod(ABC, Generic[ConfigT]):
    """Base class: declares what a method needs and runs the shared parts of ``fit``.

    Subclasses set the class attributes and implement :meth:`prepare` (preprocessing recipe) and
    :meth:`train` (the model; returns embedding, labels and extras for the prepared cells). A method is
    parametrised by its config class (``class CICL(ClusteringMethod[CICLConfig])``), so ``prepare``/``train``
    take the method's own config type.
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
    #: uses K at all (False: the number of clusters follows from other settings, e.g. Leiden's resolution, and
    #: the forms offer no K)
    takes_k: ClassVar[bool] = True
    #: "faithful", "baseline", or "not yet faithful: <why>" — shown in the UI and README
    fidelity: ClassVar[str] = "faithful"
    #: deep methods train for epochs and produce live curves/snapshots
    deep: ClassVar[bool] = True
    #: trains a torch network with an optimizer (False for methods whose "epochs" are other steps, e.g. the
    #: candidates of ``recommend``): the non-finite-loss and CUDA contract checks apply only to these
    trains_network: ClassVar[bool] = True
    #: "classic", "deep" or "consensus" (a combination of other clusterings): how pages group the method and which
    #: live view it gets; derived from ``deep`` unless the class sets it
    kind: ClassVar[str] = ""
    #: the Cluster page's plain-language card (the summary line of the docstring when empty)
    card: ClassVar[MethodCard] = MethodCard()
    #: key of ``MethodResult.extras`` holding a consensus summary (candidates, agreement, per-cell ``confidence``):
    #: the library writes it to ``obs[key + '_confidence']`` / ``uns[key]['consensus']`` and the pages draw it
    summary_key: ClassVar[str | None] = None
    #: measured runs and how the cost grows with the config (:mod:`scclust_core.estimate`)
    cost: ClassVar[CostModel] = CostModel()
    #: integrations of several samples this method can use (:mod:`._batch`); deep methods: Harmony on the learned
    #: embedding before a final clustering there (their counts are never corrected)
    integrations: ClassVar[tuple[str, ...]] = ("none", "harmony")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """``Config`` is the class's type argument (``ClusteringMethod[CICLConfig]``): written once, not twice."""
        super().__init_subclass__(**kwargs)
        for base in getattr(cls, "__orig_bases__", ()):
            args = [a for a in get_args(base) if isinstance(a, type) and issubclass(a, MethodConfig)]
            origin = get_origin(base)
            if isinstance(origin, type) and issubclass(origin, ClusteringMethod) and args and "Config" not in cls.__dict__:
                cls.Config = args[0]
        if "kind" not in cls.__dict__:
            cls.kind = "deep" if cls.deep else "classic"

    @property
    def summary(self) -> str:
        doc = (type(self).__doc__ or "").strip()
        return doc.splitlines()[0] if doc else self.name

    def default_config(self, preset: str | None = None, **overrides: Any) -> ConfigT:
        return cast(ConfigT, self.Config.from_preset(preset, **overrides))

    def planned_epochs(self, config: ConfigT) -> int:
        """Epochs the training plans across its phases (0 for non-deep methods); given to callbacks at
        ``on_train_begin`` as ``total_epochs``. An upper bound for methods that may stop early."""
        return 0

    def integrate_input(self, data: Prepared, integ: Integration, config: ConfigT) -> Prepared:
        """Correct the prepared input for the batches (a method that integrates before training overrides it);
        by default nothing: a deep method is corrected after training (:meth:`Integration.finish`)."""
        return data

    # ---------------------------------------------------------------- reuse (subclustering)
    def cluster_embedding(self, z: np.ndarray, config: ConfigT) -> tuple[np.ndarray, dict]:
        """Cluster a given embedding (a parent run's, restricted to some cells): ``(labels, extras)``.

        Methods that learn their own representation cannot: they subcluster by recomputing on the cells' counts.
        """
        raise ValueError(f"{self.name} learns its own representation and cannot reuse a parent embedding: "
                         "subcluster with mode 'recompute'")

    @classmethod
    def reuses_embedding(cls) -> bool:
        """True when the method can cluster a given embedding (it overrides :meth:`cluster_embedding`)."""
        return cls.cluster_embedding is not ClusteringMethod.cluster_embedding

    # ---------------------------------------------------------------- to implement
    @abstractmethod
    def prepare(self, adata: AnnData, config: ConfigT) -> Prepared:
        """Preprocess a copy of ``adata`` (raw counts in X) into the method's input."""

    @abstractmethod
    def train(self, data: Prepared, config: ConfigT, ctx: FitContext) -> tuple[np.ndarray, np.ndarray, dict]:
        """Train and cluster; return ``(embedding float32 [n, d], labels int64 [n], extras)``."""

    # ---------------------------------------------------------------- shared driver
    def fit(self, adata: AnnData, config: ConfigT | None = None, *, callback: Callback | None = None,
            label_key: str | None = None, batch_key: str | None = None,
            integration: str | None = None) -> MethodResult:
        """Preprocess, train and cluster ``adata`` (not modified). See the module docstring.

        ``batch_key``: the obs column of each cell's sample/batch; ``integration`` (default ``harmony`` with a batch
        key): one of the method's :attr:`integrations` (:mod:`._batch`). Batch mixing joins the metrics.
        """
        from ..runs import seed_everything

        cfg: ConfigT = config if config is not None else self.default_config()
        truth_all = self._check_inputs(adata, cfg, label_key)
        integ = Integration.check(self, adata, batch_key, integration)
        device = resolve_device(cfg.device)
        with fit_threads(int(getattr(cfg, "torch_threads", 0) or 0), device) as threads:
            seed_everything(cfg.seed)
            started = datetime.now(timezone.utc).isoformat(timespec="seconds")
            t0 = time.perf_counter()
            data = self.prepare(adata, cfg)
            integ = integ.for_cells(data.cell_index)
            data = self.integrate_input(data, integ, cfg) if integ.active else data
            n = data.adata.n_obs
            k = cfg.n_clusters
            if k is not None and k >= n:
                raise ValueError(f"n_clusters={k} must be smaller than the number of cells left after filtering ({n})")
            truth = truth_all[data.cell_index] if truth_all is not None else None
            ctx = FitContext(method=self.name, callback=callback, truth=truth, n_cells=n,
                             snapshot_every=cfg.snapshot_every, seed=cfg.seed, device=device)
            ctx.integration = integ
            ctx.begin(self.planned_epochs(cfg))
            hold_threads(threads, device)  # preprocessing (scanpy) may have reset torch's thread count
            cell_index = np.asarray(data.cell_index, dtype=np.int64)
            ctx.callback.on_train_begin({"method": self.name, "n_cells": n, "n_genes": data.adata.n_vars,
                                         "device": device, "config": cfg.to_dict(), "threads": dict(threads),
                                         "total_epochs": ctx.total_epochs, "snapshot_index": cell_index[ctx.sub_idx]})
            seed_everything(cfg.seed)
            embedding, labels, extras = self.train(data, cfg, ctx)
            embedding, labels = integ.finish(self, np.asarray(embedding, dtype=np.float32), np.asarray(labels), cfg)
        embedding = np.ascontiguousarray(embedding, dtype=np.float32)
        labels = _relabel(np.asarray(labels))
        if embedding.shape[0] != n or labels.shape[0] != n:
            raise RuntimeError(f"{self.name} returned {embedding.shape[0]} embeddings / {labels.shape[0]} labels for {n} cells")
        if self.deep:
            ctx.finish(embedding, labels)
        warns = data.input_warnings()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", _metrics.UnusableLabelsWarning)  # kept in warns instead
            final = _metrics.evaluate(labels, truth=truth, embedding=embedding, warnings_out=warns)
        final.update(integ.metrics(embedding, labels, truth, cfg.seed))
        extras = {**(extras or {}), **integ.extras(labels)}
        extras = self._final_extras(extras, labels, k, threads, warns)
        result = MethodResult(
            method=self.name, embedding=embedding, labels=labels, cell_index=cell_index, n_input_cells=adata.n_obs,
            history=ctx.history, snapshots=ctx.snapshots, snapshot_index=cell_index[ctx.sub_idx],
            config=cfg.to_dict(), metrics=final,
            status="cancelled" if ctx.stop_requested else "completed", device=device,
            seconds=time.perf_counter() - t0, started_at=started,
            finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), label_key=label_key,
            extras=extras,
        )
        ctx.callback.on_train_end(result)
        return result

    def _check_inputs(self, adata: AnnData, config: ConfigT, label_key: str | None) -> np.ndarray | None:
        """Validate config, data size, K and the annotation column; return the annotation codes (or None)."""
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
        if label_key is None:
            return None
        if label_key not in adata.obs:
            raise ValueError(f"Annotation column {label_key!r} not in obs; available: {list(adata.obs.columns)}")
        return _codes(adata.obs[label_key])

    def _final_extras(self, extras: dict | None, labels: np.ndarray, k: int | None,
                      threads: dict[str, Any], input_warnings: list[str]) -> dict[str, Any]:
        out = dict(extras or {})
        out.setdefault("threads", dict(threads))
        warns = list(input_warnings) + degenerate_clustering_warnings(labels, k)
        if warns:
            out["warnings"] = list(out.get("warnings", [])) + warns
            for w in warns:
                logger.warning("%s: %s", self.name, w)
        return out


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
