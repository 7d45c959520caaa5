"""One background training: :class:`TrainingJob` queues, runs (in a worker process or a thread) and records it.

The job trains with two callbacks: a :class:`~scclust_core.runs.RunRecorder` (the run directory on disk, so
nothing is lost when the page or the server goes away) and its :class:`~.state.JobState` (the live state the UI
polls). Its thread waits for a slot in :data:`~.slots.SLOTS`, then runs the method; every failure, a wrong
setting included, ends as status ``failed`` with the message, in the live state and in the run record.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from anndata import AnnData

from ..results import Callback, CallbackList, EpochLog, MethodResult, Snapshot
from . import worker
from .procs import WorkerProcess
from .settings import check_configuration, job_isolation
from .slots import SLOTS
from .state import TERMINAL, JobSnapshot, JobState, friendly_error

logger = logging.getLogger(__name__)

#: the environment variables a worker process inherits from the server
_ENV_PREFIXES = ("SCCLUST_", "OMP_", "MKL_")


class TrainingJob:
    """Train one method in the background, recording the run to ``runs_root``.

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
    isolation
        ``"process"`` (default; ``$SCCLUST_JOB_ISOLATION`` overrides): a worker process per training, so
        overlapping trainings cannot change each other's results. ``"thread"``: a thread of this process.
    exclude
        A boolean mask of cells left out of the training (e.g. predicted doublets, ``exclude_reason``): the run
        still belongs to the whole dataset (its fingerprint, its rows), the excluded cells get no label.
    """

    def __init__(self, adata: AnnData, method: str, config: Any, *, runs_root: str | Path,
                 preset: str | None = None, label_key: str | None = None, dataset_name: str | None = None,
                 workspace: str | None = None, isolation: str | None = None, batch_key: str | None = None,
                 integration: str | None = None, exclude: Any = None, exclude_reason: str = "excluded"):
        from ..io import dataset_fingerprint
        from ..runs import RunRecorder

        self.isolation = job_isolation(isolation)
        self.method = method
        self.config = config
        self.preset = preset
        self.label_key = label_key
        #: several samples: the obs column of each cell's batch and the integration (``fit``'s own arguments)
        self.fit_options = {"batch_key": batch_key, "integration": integration} if batch_key else {}
        self.workspace = workspace
        self._rows, extra = _kept_rows(adata, exclude, exclude_reason)
        self._n_all = adata.n_obs
        self._adata: AnnData | None = adata.copy() if self._rows is None else adata[self._rows].copy()
        self._stop = threading.Event()
        self._worker: WorkerProcess | None = None  # isolation="process", once started
        fp = dataset_fingerprint(adata)  # the whole dataset's, whichever cells train
        if dataset_name:
            fp["name"] = dataset_name
        self.recorder = RunRecorder(runs_root, method=method, seed=config.seed, preset=preset, dataset=fp,
                                    label_key=label_key, extra={"status": "queued", **self.fit_options, **extra})
        self.run_id = self.recorder.run_id
        self.run_dir = self.recorder.dir
        self.state = JobState(self._stop, run_id=self.run_id, method=method)
        self._thread = threading.Thread(target=self._work, name=f"scclust-{self.run_id}", daemon=True)

    # ------------------------------------------------------------------ control
    def start(self) -> TrainingJob:
        """Queue the job (its thread waits for a slot, then trains)."""
        self.state.update(t0=time.time())
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Stop after the current epoch (the labels so far are kept); a queued job never starts."""
        self._stop.set()
        if self._worker is not None:
            self._worker.request_stop()
        SLOTS.wake()

    @property
    def cancel_requested(self) -> bool:
        return self._stop.is_set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the job to end; True when it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ------------------------------------------------------------------ state
    @property
    def status(self) -> str:
        return self.state.get("status")

    @property
    def running(self) -> bool:
        return self.status not in TERMINAL

    @property
    def error(self) -> str | None:
        return self.state.get("error")

    @property
    def finished_at(self) -> float | None:
        """When the job ended (``time.time()``), None while it is queued or running."""
        return self.state.get("t_end")

    @property
    def holds_data(self) -> bool:
        """Whether this process still keeps the job's copy of the dataset (only until the training has it)."""
        return self._adata is not None

    @property
    def worker_pid(self) -> int | None:
        """The pid of the worker process (``isolation="process"``, once started), else None."""
        return None if self._worker is None else self._worker.pid

    @property
    def result(self) -> MethodResult | None:
        """The result, read from the run record (a finished job does not keep it in memory)."""
        if self.status not in ("completed", "cancelled") or not (self.run_dir / "result.json").exists():
            return None
        from ..runs import load_result

        return load_result(self.run_dir)

    def snapshot(self) -> JobSnapshot:
        return self.state.snapshot()

    # ------------------------------------------------------------------ the job's thread
    def _work(self) -> None:
        callbacks: Callback = CallbackList([self.recorder, self.state])
        if self._rows is not None:
            callbacks = _FullRows(callbacks, self._rows, self._n_all)
        acquired = False
        try:
            check_configuration()  # a wrong setting fails the job here instead of killing this thread
            acquired = SLOTS.acquire(self)
            if not acquired:
                self._finish_cancelled_in_queue()
                return
            self.state.update(status="running", queue_position=None)
            if self.isolation == "process":
                self._run_in_process(callbacks)
            else:
                self._run_in_thread(callbacks)
        except BaseException as exc:  # noqa: BLE001 - a job must never die silently
            self._fail(exc)
        finally:
            if acquired:
                SLOTS.release()
            self._adata = None  # free memory
            self.state.update(result=None, queue_position=None)  # on disk now; keep only the light live state

    def _finish_cancelled_in_queue(self) -> None:
        self.recorder.update(status="cancelled", finished_at=_now_iso(),
                             error="Cancelled while queued: it never started")
        self.state.update(status="cancelled", t_end=time.time(), queue_position=None)

    def _fail(self, exc: BaseException, tb: str | None = None) -> None:
        logger.error("Run %s failed: %s", self.run_id, exc)
        try:
            self.recorder.fail(exc)
        except Exception:  # pragma: no cover
            logger.exception("Could not record the failure of %s", self.run_id)
        self.state.update(status="failed", error=friendly_error(exc), t_end=time.time(),
                          traceback=tb or "".join(traceback.format_exception(exc)))

    def _run_in_thread(self, callbacks: Callback) -> None:
        result = worker.fit(self.method, self._adata, self.config, callbacks, self.label_key, **self.fit_options)
        self.state.update(status=result.status, t_end=time.time())

    def _run_in_process(self, callbacks: Callback) -> None:
        env = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}
        payload = {"adata": self._adata, "method": self.method, "config": self.config,
                   "label_key": self.label_key, "fit_options": dict(self.fit_options), "env": env}
        proc = WorkerProcess(payload, name=f"scclust-{self.run_id}")
        if self.cancel_requested:
            proc.request_stop()
        proc.start()
        self._worker = proc
        self._adata = None  # the child has its own copy now
        del payload
        try:
            finished = self._pump(proc, callbacks)
        except BaseException:
            proc.terminate()  # e.g. the run record could not be written: do not leave the child training alone
            raise
        proc.join(timeout=30)
        if not finished:
            code = proc.exitcode
            why = ": killed, probably out of memory" if code == -9 else ""
            self._fail(RuntimeError(f"The training process stopped unexpectedly (exit code {code}{why})"))

    def _pump(self, proc: WorkerProcess, callbacks: Callback) -> bool:
        """Forward the child's events to the callbacks until it ends; True when it sent its final message."""
        while True:
            if self.cancel_requested:
                proc.request_stop()
            msg = proc.next_event(0.25)
            if msg is None:
                if proc.is_alive():
                    continue
                msg = proc.next_event(1.0)  # the last messages may still be in the pipe
                if msg is None:
                    return False
            if self._dispatch(msg, callbacks):
                return True

    def _dispatch(self, msg: tuple, callbacks: Callback) -> bool:
        """Hand one message of the child to the callbacks; True for its final one (result or error)."""
        kind = msg[0]
        if kind == "begin":
            callbacks.on_train_begin(msg[1])
        elif kind == "epoch":
            callbacks.on_epoch_end(msg[1], msg[2])
        elif kind == "snapshot":
            callbacks.on_snapshot(msg[1])
        elif kind == "end":
            callbacks.on_train_end(msg[1])
            self.state.update(status=msg[1].status, t_end=time.time())
            return True
        elif kind == "error":
            exc, tb = msg[1], msg[2]
            exc.add_note("Traceback in the training process:\n" + tb)  # kept in run.json
            self._fail(exc, tb)
            return True
        return False


def _kept_rows(adata: AnnData, exclude: Any, reason: str) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The rows that train (None: all) and what the run record says about the others."""
    if exclude is None:
        return None, {}
    mask = np.asarray(exclude, dtype=bool)
    if mask.shape != (adata.n_obs,):
        raise ValueError(f"exclude must hold one flag per cell ({adata.n_obs}), got shape {mask.shape}")
    if not mask.any():
        return None, {}
    if mask.all():
        raise ValueError(f"Every cell is {reason}: nothing is left to cluster")
    return np.flatnonzero(~mask), {"excluded_cells": {"n": int(mask.sum()), "why": reason}}


class _FullRows(Callback):
    """Rows of a training on some cells mapped back to rows of the whole dataset, so its record fits the
    dataset's (the excluded cells have no label, like cells a method's QC drops)."""

    def __init__(self, inner: Callback, rows: np.ndarray, n_all: int):
        self.inner, self.rows, self.n_all = inner, np.asarray(rows, dtype=np.int64), int(n_all)

    def on_train_begin(self, info: dict[str, Any]) -> None:
        if info.get("snapshot_index") is not None:
            info = {**info, "snapshot_index": self.rows[np.asarray(info["snapshot_index"], dtype=np.int64)]}
        self.inner.on_train_begin(info)

    def on_epoch_end(self, log: EpochLog, snapshot: Snapshot | None) -> None:
        self.inner.on_epoch_end(log, snapshot)

    def on_snapshot(self, snapshot: Snapshot) -> None:
        self.inner.on_snapshot(snapshot)

    def on_train_end(self, result: MethodResult) -> None:
        self.inner.on_train_end(dataclasses.replace(
            result, cell_index=self.rows[np.asarray(result.cell_index, dtype=np.int64)], n_input_cells=self.n_all,
            snapshot_index=self.rows[np.asarray(result.snapshot_index, dtype=np.int64)]))

    def should_stop(self) -> bool:
        return self.inner.should_stop()


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
