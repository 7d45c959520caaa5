"""Background training: run a clustering method away from the UI and expose its live state (no Streamlit here).

:class:`TrainingJob` trains one method with two callbacks: a :class:`~scclust_core.runs.RunRecorder` (the run
directory on disk, so nothing is lost when the page or the server goes away) and :class:`JobState`
(lock-protected live state the UI polls through :meth:`JobState.snapshot`: epoch logs, snapshots, status,
error message, queue position).

Why a worker *process* per training (``isolation="process"``, the default): torch's random generator and its
thread count are process-global and dropout draws from that generator, so two trainings sharing a process can
never be reproducible (issue 14: CICL on Klein, same seed, ARI 0.7405 with a second run overlapping vs 0.7339
alone; here contrastive-sc on 150 synthetic cells, same seed: embeddings 0.33 apart when two runs overlap in
threads, bit-identical in processes). Each training runs in its own child started from a fork server that has already imported torch,
scanpy and the methods, so a start costs a fork, not an import; the child seeds its own generators, sends epoch
logs, snapshots and the result back through a queue, stops when the cancel event is set, and its exit returns
all of its memory. Measured on a shared 2-core machine: the fork server's one-off start (importing torch,
scanpy and the methods) takes ~25 s and is begun when the app opens (:func:`prestart_workers`); after that a
training starts 0.5-1.4 s later than in a thread. ``isolation="thread"`` runs in a thread of this process (notebooks, tests with ad-hoc
methods); it is only reproducible when no other training overlaps.

At most ``$SCCLUST_MAX_TRAININGS`` trainings (default 1: on a CPU two trainings only slow each other down) run
at once in this server process; the others wait in a first-come queue with status ``queued`` and their
position, which the live view shows. Jobs are kept in a process-wide registry keyed by workspace
(:func:`jobs_for`), so a browser refresh finds a job that is still training; a finished job keeps only its
light live state (its result is on disk) and leaves the registry after a while.
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import queue as _queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from anndata import AnnData

from .methods import get_method
from .methods._types import Callback, CallbackList, EpochLog, MethodResult, Snapshot

logger = logging.getLogger(__name__)

__all__ = ["JobState", "JobSnapshot", "TrainingJob", "jobs_for", "active_run_ids", "register_job",
           "friendly_error", "max_trainings", "busy_workspaces", "prestart_workers"]

TERMINAL = ("completed", "cancelled", "failed")
#: a finished job stays in the registry this long (its live view is replaced by the record on disk)
KEEP_FINISHED_S = 300.0
#: imported once by the fork server (imports only: running code there, e.g. a warm-up fit, starts OpenMP thread
#: pools, and libgomp then refuses to fork)
_PRELOAD = ["scclust_core.jobs", "scclust_core.methods", "scclust_core.metrics", "torch", "scanpy",
            "sklearn.cluster", "sklearn.decomposition", "sklearn.metrics", "sklearn.neighbors",
            "scclust_core._forkserver_warmup"]


def friendly_error(exc: BaseException) -> str:
    """A message a biologist can act on (the traceback is kept separately)."""
    name = type(exc).__name__
    if isinstance(exc, MemoryError) or "OutOfMemory" in name or "out of memory" in str(exc).lower():
        return ("Out of memory: the data or the model did not fit. Try fewer cells (QC filtering), a smaller "
                "batch size or fewer genes, or the CPU device. " + (str(exc)[:300] if str(exc) else ""))
    if isinstance(exc, ValueError):
        return str(exc)
    return f"{name}: {exc}"


def max_trainings() -> int:
    """How many trainings may run at once (``$SCCLUST_MAX_TRAININGS``, default 1)."""
    raw = os.environ.get("SCCLUST_MAX_TRAININGS", "").strip() or "1"
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"SCCLUST_MAX_TRAININGS must be a positive integer, got {raw!r}")
    return n


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
        return self.status in ("queued", "running")

    @property
    def eta(self) -> float | None:
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
    if not device.startswith("cuda"):
        return None
    try:
        import torch

        return round(torch.cuda.memory_allocated() / 2**30, 3)
    except Exception:  # pragma: no cover - only on CUDA machines
        return None


class _Slots:
    """First-come queue in front of at most :func:`max_trainings` concurrent trainings."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = 0
        self._waiting: list[TrainingJob] = []

    def acquire(self, job: "TrainingJob") -> bool:
        """Wait for a free slot; False when the job was cancelled while it waited."""
        with self._cond:
            self._waiting.append(job)
            try:
                while True:
                    if job.cancel_requested:
                        return False
                    if self._waiting[0] is job and self._running < max_trainings():
                        self._running += 1
                        return True
                    self._publish_positions()
                    self._cond.wait(timeout=0.5)
            finally:
                self._waiting.remove(job)
                self._publish_positions()
                self._cond.notify_all()

    def release(self) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _publish_positions(self) -> None:
        for i, j in enumerate(self._waiting):
            j.state.update(queue_position=self._running + i)


_SLOTS = _Slots()


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
    """

    def __init__(self, adata: AnnData, method: str, config, *, runs_root: str | Path, preset: str | None = None,
                 label_key: str | None = None, dataset_name: str | None = None, workspace: str | None = None,
                 isolation: str | None = None):
        from .io import dataset_fingerprint
        from .runs import RunRecorder

        isolation = isolation or os.environ.get("SCCLUST_JOB_ISOLATION", "").strip() or "process"
        if isolation not in ("process", "thread"):
            raise ValueError(f"isolation must be 'process' or 'thread', got {isolation!r}")
        self.isolation = isolation
        self.method = method
        self.config = config
        self.preset = preset
        self.label_key = label_key
        self.workspace = workspace
        self._adata: AnnData | None = adata.copy()
        self._stop = threading.Event()
        self._mp_stop: Any = None
        self._proc: Any = None  # the worker process (isolation="process"), once started
        fp = dataset_fingerprint(self._adata)
        if dataset_name:
            fp["name"] = dataset_name
        self.recorder = RunRecorder(runs_root, method=method, seed=config.seed, preset=preset, dataset=fp,
                                    label_key=label_key, extra={"status": "queued"})
        self.run_id = self.recorder.run_id
        self.run_dir = self.recorder.dir
        self.state = JobState(self._stop, run_id=self.run_id, method=method)
        self._thread = threading.Thread(target=self._work, name=f"scclust-{self.run_id}", daemon=True)

    # ------------------------------------------------------------------ control
    def start(self) -> "TrainingJob":
        self.state.update(t0=time.time())
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Stop after the current epoch (the labels so far are kept); a queued job never starts."""
        self._stop.set()
        if self._mp_stop is not None:
            self._mp_stop.set()
        _SLOTS.wake()

    @property
    def cancel_requested(self) -> bool:
        return self._stop.is_set()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

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
    def result(self) -> MethodResult | None:
        """The result, read from the run record (a finished job does not keep it in memory)."""
        if self.status not in ("completed", "cancelled") or not (self.run_dir / "result.json").exists():
            return None
        from .runs import load_result

        return load_result(self.run_dir)

    def snapshot(self) -> JobSnapshot:
        return self.state.snapshot()

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        callbacks = CallbackList([self.recorder, self.state])
        if not _SLOTS.acquire(self):
            self._finish_cancelled_in_queue()
            return
        try:
            self.state.update(status="running", queue_position=None)
            if self.isolation == "process":
                _run_in_process(self, callbacks)
            else:
                _run_in_thread(self, callbacks)
        except BaseException as exc:  # noqa: BLE001 - a worker must never die silently
            self._fail(exc)
        finally:
            _SLOTS.release()
            self._adata = None  # free memory
            self.state.update(result=None)  # on disk now; the registry keeps only the light live state

    def _finish_cancelled_in_queue(self) -> None:
        self.recorder.update(status="cancelled", finished_at=_now_iso(),
                             error="Cancelled while queued: it never started")
        self.state.update(status="cancelled", t_end=time.time(), queue_position=None)
        self._adata = None

    def _fail(self, exc: BaseException, tb: str | None = None) -> None:
        logger.error("Run %s failed: %s", self.run_id, exc)
        try:
            self.recorder.fail(exc)
        except Exception:  # pragma: no cover
            logger.exception("Could not record the failure of %s", self.run_id)
        self.state.update(status="failed", error=friendly_error(exc), t_end=time.time(),
                          traceback=tb or "".join(traceback.format_exception(exc)))


def _now_iso() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _run_in_thread(job: TrainingJob, callbacks: Callback) -> None:
    result = get_method(job.method).fit(job._adata, job.config, callback=callbacks, label_key=job.label_key)
    job.state.update(status=result.status, t_end=time.time())


# ---------------------------------------------------------------------- worker process
def _mp_context():
    """A fork server that preloads torch/scanpy/the methods (a child starts in a fork, not an import)."""
    if "forkserver" not in mp.get_all_start_methods():  # pragma: no cover - Windows/macOS without it
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


_LAUNCH_LOCK = threading.Lock()


@contextlib.contextmanager
def _without_main_module():
    """Start a child without re-running the caller's ``__main__`` in it.

    multiprocessing re-imports the parent's main script in every child it does not fork directly; under Streamlit
    ``__main__`` is the page script (app.py) while it runs, so the worker would run the app. The worker needs
    nothing from ``__main__`` (its target and payload live in importable modules), so the main-module entries are
    dropped from the preparation data while this process starts a child (serialised by a lock).
    """
    from multiprocessing import spawn

    original = spawn.get_preparation_data

    def without_main(name):
        data = original(name)
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
        return data

    with _LAUNCH_LOCK:
        spawn.get_preparation_data = without_main
        try:
            yield
        finally:
            spawn.get_preparation_data = original


def _run_in_process(job: TrainingJob, callbacks: Callback) -> None:
    ctx = _mp_context()
    events = ctx.Queue()
    job._mp_stop = ctx.Event()
    if job.cancel_requested:
        job._mp_stop.set()
    env = {k: v for k, v in os.environ.items() if k.startswith(("SCCLUST_", "OMP_", "MKL_"))}
    payload = {"adata": job._adata, "method": job.method, "config": job.config, "label_key": job.label_key,
               "env": env}
    proc = ctx.Process(target=_child_main, args=(payload, events, job._mp_stop), daemon=True,
                       name=f"scclust-{job.run_id}")
    with _without_main_module():
        proc.start()
    job._proc = proc
    job._adata = None  # the child has its own copy now
    del payload
    try:
        finished = _pump(job, proc, events, callbacks)
    except BaseException:
        proc.terminate()  # e.g. the run record could not be written: do not leave the child training alone
        raise
    proc.join(timeout=30)
    if not finished:
        code = proc.exitcode
        why = ": killed, probably out of memory" if code == -9 else ""
        job._fail(RuntimeError(f"The training process stopped unexpectedly (exit code {code}{why})"))


def _pump(job: TrainingJob, proc, events, callbacks: Callback) -> bool:
    """Forward the child's events to the callbacks until it ends; True when it sent its final message."""
    while True:
        if job.cancel_requested:
            job._mp_stop.set()
        try:
            msg = events.get(timeout=0.25)
        except _queue.Empty:
            if not proc.is_alive():
                try:  # the last messages may still be in the pipe
                    msg = events.get(timeout=1.0)
                except _queue.Empty:
                    return False
            else:
                continue
        kind = msg[0]
        if kind == "begin":
            callbacks.on_train_begin(msg[1])
        elif kind == "epoch":
            callbacks.on_epoch_end(msg[1], msg[2])
        elif kind == "snapshot":
            callbacks.on_snapshot(msg[1])
        elif kind == "end":
            callbacks.on_train_end(msg[1])
            job.state.update(status=msg[1].status, t_end=time.time())
            return True
        elif kind == "error":
            exc, tb = msg[1], msg[2]
            exc.add_note("Traceback in the training process:\n" + tb)  # kept in run.json
            job._fail(exc, tb)
            return True


class _Forward(Callback):
    """In the child: send every callback event to the parent; stop when the parent's event is set."""

    def __init__(self, events, stop):
        self.events, self.stop = events, stop

    def on_train_begin(self, info):
        self.events.put(("begin", info))

    def on_epoch_end(self, log, snapshot):
        self.events.put(("epoch", log, snapshot))

    def on_snapshot(self, snapshot):
        self.events.put(("snapshot", snapshot))

    def on_train_end(self, result):
        self.events.put(("end", result))

    def should_stop(self):
        return self.stop.is_set()


def _child_main(payload: dict, events, stop) -> None:
    """Entry point of the worker process: fit, report through ``events``, exit (returning all memory)."""
    import pickle

    os.environ.update(payload["env"])
    try:
        get_method(payload["method"]).fit(payload["adata"], payload["config"], callback=_Forward(events, stop),
                                          label_key=payload["label_key"])
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which records it
        tb = "".join(traceback.format_exception(exc))
        try:
            pickle.dumps(exc)
        except Exception:  # noqa: BLE001 - an exception that cannot travel is sent as its text
            exc = RuntimeError(f"{type(exc).__name__}: {exc}")
        events.put(("error", exc, tb))
    finally:
        events.close()
        events.join_thread()


# ---------------------------------------------------------------------- process-wide registry
_REGISTRY: dict[str, dict[str, TrainingJob]] = {}
_REG_LOCK = threading.Lock()


def register_job(job: TrainingJob) -> TrainingJob:
    with _REG_LOCK:
        _REGISTRY.setdefault(job.workspace or "", {})[job.run_id] = job
    return job


def _prune(now: float) -> None:
    """Forget jobs that finished more than ``KEEP_FINISHED_S`` ago (their record is on disk). Call under the lock."""
    for ws in list(_REGISTRY):
        jobs = _REGISTRY[ws]
        for rid in [r for r, j in jobs.items() if not j.running and now - (j.state.get("t_end") or now) > KEEP_FINISHED_S]:
            del jobs[rid]
        if not jobs:
            del _REGISTRY[ws]


def jobs_for(workspace: str | None) -> dict[str, TrainingJob]:
    """Jobs started in this process for ``workspace`` (run id → job), oldest first."""
    with _REG_LOCK:
        _prune(time.time())
        return dict(_REGISTRY.get(workspace or "", {}))


def active_run_ids(workspace: str | None) -> set[str]:
    return {rid for rid, j in jobs_for(workspace).items() if j.running}


def busy_workspaces() -> set[str]:
    """Workspaces with a queued or running job in this process (the idle sweeper leaves them alone)."""
    with _REG_LOCK:
        return {ws for ws, jobs in _REGISTRY.items() if any(j.running for j in jobs.values())}


def prestart_workers() -> None:
    """Start the training fork server now (it imports torch, scanpy and the methods once, which takes seconds
    to tens of seconds), so the first training does not wait for it. Harmless when already running."""
    ctx = _mp_context()
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()
