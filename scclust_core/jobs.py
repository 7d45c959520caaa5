"""Background training: run a clustering method in a thread and expose its live state (no Streamlit here).

:class:`TrainingJob` runs ``method.fit`` in a daemon thread with two callbacks: a
:class:`~scclust_core.runs.RunRecorder` (the run directory on disk, so nothing is lost when the page or the
server goes away) and :class:`JobState` (lock-protected live state the UI polls: epoch logs, snapshots,
status, error message). Cancel is cooperative (a ``threading.Event`` checked every epoch).

Jobs are also kept in a process-wide registry keyed by workspace (:func:`jobs_for`), so a browser refresh (a new
Streamlit session) finds the job that is still training and shows its live view again.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from anndata import AnnData

from .methods import get_method
from .methods._base import Callback, CallbackList, EpochLog, MethodResult, Snapshot

logger = logging.getLogger(__name__)

__all__ = ["JobState", "TrainingJob", "jobs_for", "active_run_ids", "register_job", "friendly_error"]

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

    @property
    def running(self) -> bool:
        return self.status in ("queued", "running")

    @property
    def eta(self) -> float | None:
        if self.epoch <= 0 or self.total_epochs <= 0 or self.epoch >= self.total_epochs:
            return None
        return self.elapsed / self.epoch * (self.total_epochs - self.epoch)


class JobState(Callback):
    """Callback collecting what the live view needs; every access goes through one lock."""

    def __init__(self, stop_event: threading.Event):
        self._lock = threading.Lock()
        self._stop = stop_event
        self.status = "queued"
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

    # callback hooks (worker thread)
    def on_train_begin(self, info: dict[str, Any]) -> None:
        with self._lock:
            self.status = "running"
            self.info = dict(info)
            self.device = str(info.get("device", "cpu"))

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

    def _set(self, **kw: Any) -> None:
        with self._lock:
            for k, v in kw.items():
                setattr(self, k, v)


def _gpu_mem(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    try:
        import torch

        return round(torch.cuda.memory_allocated() / 2**30, 3)
    except Exception:  # pragma: no cover - only on CUDA machines
        return None


def _snapshot_rows(n_prepared: int, seed: int) -> np.ndarray:
    """Rows (of the prepared cells) that :class:`FitContext` follows in snapshots (same rule as FitContext)."""
    from .methods._base import SNAPSHOT_CELLS

    n_sub = min(n_prepared, SNAPSHOT_CELLS)
    if n_sub < n_prepared:
        return np.sort(np.random.default_rng(seed).choice(n_prepared, size=n_sub, replace=False))
    return np.arange(n_prepared)


class TrainingJob:
    """Train one method in a background thread, recording the run to ``runs_root``.

    Parameters
    ----------
    adata
        The dataset (copied; the worker never touches the caller's object).
    method
        Registered method name.
    config
        The method's config (already validated).
    runs_root
        Directory for the run record (``RunRecorder`` root).
    """

    def __init__(self, adata: AnnData, method: str, config, *, runs_root: str | Path, preset: str | None = None,
                 label_key: str | None = None, dataset_name: str | None = None, workspace: str | None = None):
        from .io import dataset_fingerprint
        from .runs import RunRecorder

        self.method = method
        self.config = config
        self.preset = preset
        self.label_key = label_key
        self.workspace = workspace
        self._adata = adata.copy()
        self._stop = threading.Event()
        self.state = JobState(self._stop)
        fp = dataset_fingerprint(self._adata)
        if dataset_name:
            fp["name"] = dataset_name
        self.recorder = RunRecorder(runs_root, method=method, seed=config.seed, preset=preset, dataset=fp,
                                    label_key=label_key)
        self.run_id = self.recorder.run_id
        self.run_dir = self.recorder.dir
        self._thread = threading.Thread(target=self._work, name=f"scclust-{self.run_id}", daemon=True)

    # ------------------------------------------------------------------ control
    def start(self) -> "TrainingJob":
        self.state.t0 = time.time()
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Ask the method to stop after the current epoch (it keeps the labels it has)."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def status(self) -> str:
        with self.state._lock:
            return self.state.status

    @property
    def running(self) -> bool:
        return self.status not in TERMINAL

    @property
    def error(self) -> str | None:
        with self.state._lock:
            return self.state.error

    @property
    def result(self) -> MethodResult | None:
        with self.state._lock:
            return self.state.result

    def snapshot(self) -> JobSnapshot:
        s = self.state
        with s._lock:
            last = s.history[-1] if s.history else None
            end = s.t_end or time.time()
            return JobSnapshot(
                run_id=self.run_id, method=self.method, status=s.status, epoch=last.epoch if last else 0,
                total_epochs=s.total_epochs or (last.total_epochs if last else 0),
                elapsed=end - s.t0, history=list(s.history), snapshots=list(s.snapshots),
                snapshot_index=None if s.snapshot_index is None else s.snapshot_index.copy(), error=s.error,
                traceback=s.traceback, device=s.device, gpu_mem_gib=s.gpu_mem_gib, started=s.t0, info=dict(s.info),
            )

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        method = get_method(self.method)
        original_prepare = method.prepare
        state = self.state
        seed = int(self.config.seed)

        def prepare(adata, config):  # learn which input rows the live snapshots follow
            prepared = original_prepare(adata, config)
            idx = np.asarray(prepared.cell_index, dtype=np.int64)
            with state._lock:
                state.snapshot_index = idx[_snapshot_rows(len(idx), seed)]
            return prepared

        method.prepare = prepare  # type: ignore[method-assign]
        try:
            state._set(status="running")
            result = method.fit(self._adata, self.config, callback=CallbackList([self.recorder, state]),
                                label_key=self.label_key)
            state._set(status=result.status, t_end=time.time())
        except BaseException as exc:  # noqa: BLE001 - a worker must never die silently
            logger.exception("Run %s failed", self.run_id)
            try:
                self.recorder.fail(exc)
            except Exception:  # pragma: no cover
                logger.exception("Could not record the failure of %s", self.run_id)
            state._set(status="failed", error=friendly_error(exc), t_end=time.time(),
                       traceback="".join(traceback.format_exception(exc)))
        finally:
            self._adata = None  # free memory


# ---------------------------------------------------------------------- process-wide registry
_REGISTRY: dict[str, dict[str, TrainingJob]] = {}
_REG_LOCK = threading.Lock()


def register_job(job: TrainingJob) -> TrainingJob:
    with _REG_LOCK:
        _REGISTRY.setdefault(job.workspace or "", {})[job.run_id] = job
    return job


def jobs_for(workspace: str | None) -> dict[str, TrainingJob]:
    """Jobs started in this process for ``workspace`` (run id → job), oldest first."""
    with _REG_LOCK:
        return dict(_REGISTRY.get(workspace or "", {}))


def active_run_ids(workspace: str | None) -> set[str]:
    return {rid for rid, j in jobs_for(workspace).items() if j.running}
