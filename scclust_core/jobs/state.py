"""A job's live state: what the UI polls while a training runs (no processes, no queue here).

:class:`JobState` is the callback the training reports to (in this process: directly, or forwarded from the
worker process); every access goes through its lock, and readers take a consistent copy, :class:`JobSnapshot`.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..results import Callback, EpochLog, MethodResult, Snapshot

#: statuses after which a job never changes again
TERMINAL = ("completed", "cancelled", "failed")


def friendly_error(exc: BaseException) -> str:
    """A message a biologist can act on (the traceback is kept separately)."""
    name = type(exc).__name__
    if isinstance(exc, MemoryError) or "OutOfMemory" in name or "out of memory" in str(exc).lower():
        return ("Out of memory: the data or the model did not fit. Try fewer cells (QC filtering), a smaller "
                "batch size or fewer genes, or the CPU device. " + (str(exc)[:300] if str(exc) else ""))
    if isinstance(exc, ValueError):
        return str(exc)
    return f"{name}: {exc}"


@dataclass
class JobSnapshot:
    """A consistent copy of a job's live state (taken under the lock)."""

    run_id: str
    method: str
    status: str
    epoch: int
    total_epochs: int
    elapsed: float
    history: list[EpochLog]
    snapshots: list[Snapshot]
    snapshot_index: np.ndarray | None
    error: str | None
    traceback: str | None
    device: str
    gpu_mem_gib: float | None
    started: float
    info: dict[str, Any] = field(default_factory=dict)
    #: while ``queued``: how many trainings are ahead (running ones included); None otherwise
    queue_position: int | None = None

    @property
    def running(self) -> bool:
        """Not finished yet (queued jobs count: the UI keeps polling them)."""
        return self.status in ("queued", "running")

    @property
    def eta(self) -> float | None:
        """Seconds left, from the mean epoch time so far; None before the first or after the last epoch."""
        if self.epoch <= 0 or self.total_epochs <= 0 or self.epoch >= self.total_epochs:
            return None
        return self.elapsed / self.epoch * (self.total_epochs - self.epoch)


class JobState(Callback):
    """Callback collecting what the live view needs; every access goes through one lock.

    Readers use :meth:`snapshot` (a consistent copy) and :meth:`get`; writers the callback hooks and
    :meth:`update`.
    """

    def __init__(self, stop_event: threading.Event, *, run_id: str = "", method: str = ""):
        self._lock = threading.Lock()
        self._stop = stop_event
        self.run_id = run_id
        self.method = method
        self.status = "queued"
        self.queue_position: int | None = None
        self.history: list[EpochLog] = []
        self.snapshots: list[Snapshot] = []
        self.snapshot_index: np.ndarray | None = None
        self.total_epochs = 0
        self.error: str | None = None
        self.traceback: str | None = None
        self.result: MethodResult | None = None
        self.info: dict[str, Any] = {}
        self.device = "cpu"
        self.gpu_mem_gib: float | None = None
        self.t0 = time.time()
        self.t_end: float | None = None

    # callback hooks (worker side)
    def on_train_begin(self, info: dict[str, Any]) -> None:
        idx = info.get("snapshot_index")
        with self._lock:
            self.status = "running"
            self.queue_position = None
            self.info = {k: v for k, v in info.items() if k != "snapshot_index"}
            self.device = str(info.get("device", "cpu"))
            if idx is not None:
                self.snapshot_index = np.asarray(idx, dtype=np.int64)

    def on_epoch_end(self, log: EpochLog, snapshot: Snapshot | None) -> None:
        mem = _gpu_mem(self.device)
        with self._lock:
            self.history.append(log)
            self.total_epochs = max(self.total_epochs, log.total_epochs)
            if snapshot is not None:
                self.snapshots.append(snapshot)
            self.gpu_mem_gib = mem

    def on_snapshot(self, snapshot: Snapshot) -> None:
        with self._lock:
            if self.snapshots and self.snapshots[-1].epoch == snapshot.epoch:
                self.snapshots[-1] = snapshot
            else:
                self.snapshots.append(snapshot)

    def on_train_end(self, result: MethodResult) -> None:
        with self._lock:
            self.result = result
            self.snapshots = list(result.snapshots)
            self.snapshot_index = result.snapshot_index

    def should_stop(self) -> bool:
        return self._stop.is_set()

    # access
    def update(self, **changes: Any) -> None:
        """Set fields under the lock (status, error, traceback, t_end, queue_position, result)."""
        with self._lock:
            for k, v in changes.items():
                if not hasattr(self, k) or k.startswith("_"):
                    raise AttributeError(f"JobState has no field {k!r}")
                setattr(self, k, v)

    def get(self, name: str) -> Any:
        """One field, read under the lock."""
        with self._lock:
            return getattr(self, name)

    def snapshot(self) -> JobSnapshot:
        """A consistent copy of the live state for the UI (lists and arrays are copied)."""
        with self._lock:
            last = self.history[-1] if self.history else None
            end = self.t_end or time.time()
            return JobSnapshot(
                run_id=self.run_id, method=self.method, status=self.status, epoch=last.epoch if last else 0,
                total_epochs=self.total_epochs or (last.total_epochs if last else 0), elapsed=end - self.t0,
                history=list(self.history), snapshots=list(self.snapshots),
                snapshot_index=None if self.snapshot_index is None else self.snapshot_index.copy(),
                error=self.error, traceback=self.traceback, device=self.device, gpu_mem_gib=self.gpu_mem_gib,
                started=self.t0, info=dict(self.info), queue_position=self.queue_position,
            )


def _gpu_mem(device: str) -> float | None:
    """GPU memory in use (GiB) on a CUDA device, None elsewhere: shown next to the progress bar."""
    if not device.startswith("cuda"):
        return None
    try:
        import torch

        return round(torch.cuda.memory_allocated() / 2**30, 3)
    except Exception:  # pragma: no cover - only on CUDA machines
        return None
