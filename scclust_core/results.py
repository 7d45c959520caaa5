"""Result and callback types of a fit: a leaf module (numpy and anndata only) on the floor below ``methods``, so
``runs``, ``jobs`` and the UI import them without importing the method machinery, and nothing points upward."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
from anndata import AnnData

__all__ = ["MethodCard", "EpochLog", "Snapshot", "MethodResult", "Callback", "CallbackProtocol", "CallbackList", "Prepared"]


@dataclass(frozen=True)
class MethodCard:
    """What the Cluster page says of a method, for a biologist: what it does, and when to pick it."""

    what: str = ""
    when: str = ""


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

    def history_frame(self) -> Any:
        """History as a pandas DataFrame, one row per epoch (``EpochLog.to_row``)."""
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
        """``info``: method, n_cells, n_genes, device, config, ``total_epochs`` (planned; methods that stop
        early or search may revise it, see ``EpochLog.total_epochs``), ``snapshot_index`` (int64 input-cell
        rows followed by every snapshot, in snapshot row order) and ``threads`` (torch CPU threads and why)."""

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
    """Several callbacks as one (``None`` entries are skipped); a callback without ``on_snapshot`` is allowed."""

    def __init__(self, callbacks: Sequence[Callback | CallbackProtocol | None]):
        self.callbacks = [c for c in callbacks if c is not None]

    def on_train_begin(self, info: dict[str, Any]) -> None:
        for c in self.callbacks:
            c.on_train_begin(info)

    def on_epoch_end(self, log: EpochLog, snapshot: Snapshot | None) -> None:
        for c in self.callbacks:
            c.on_epoch_end(log, snapshot)

    def on_snapshot(self, snapshot: Snapshot) -> None:
        for c in self.callbacks:
            if hasattr(c, "on_snapshot"):
                c.on_snapshot(snapshot)

    def on_train_end(self, result: MethodResult) -> None:
        for c in self.callbacks:
            c.on_train_end(result)

    def should_stop(self) -> bool:
        return any(c.should_stop() for c in self.callbacks)


@dataclass
class Prepared:
    """A method's preprocessed input: ``adata`` (cells × selected genes) and where its cells came from."""

    adata: AnnData
    cell_index: np.ndarray  # int64 rows of the input AnnData
    #: doubts about the input (e.g. "X is not raw counts; taken as log-normalised"), kept in the run's warnings
    warnings: list[str] = field(default_factory=list)

    def input_warnings(self) -> list[str]:
        """This object's warnings plus those a recipe left in ``adata.uns['input_warnings']``."""
        extra = self.adata.uns.get("input_warnings", [])
        extra = extra.tolist() if hasattr(extra, "tolist") else list(extra)
        return list(dict.fromkeys([*self.warnings, *(str(w) for w in extra)]))
