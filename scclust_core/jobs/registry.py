"""The process-wide registry of jobs, keyed by workspace: a browser refresh finds a job that is still training.

A finished job keeps only its light live state (its result is on disk) and leaves the registry
``KEEP_FINISHED_S`` seconds after it ended.
"""
from __future__ import annotations

import threading
import time

from .job import TrainingJob

#: a finished job stays in the registry this long (its live view is replaced by the record on disk)
KEEP_FINISHED_S = 300.0

_REGISTRY: dict[str, dict[str, TrainingJob]] = {}
_REG_LOCK = threading.Lock()


def register_job(job: TrainingJob) -> TrainingJob:
    """Remember ``job`` under its workspace (returns it, to chain ``.start()``)."""
    with _REG_LOCK:
        _REGISTRY.setdefault(job.workspace or "", {})[job.run_id] = job
    return job


def _prune(now: float) -> None:
    """Forget jobs that finished more than ``KEEP_FINISHED_S`` ago (their record is on disk). Call under the lock."""
    for ws in list(_REGISTRY):
        jobs = _REGISTRY[ws]
        for rid in [r for r, j in jobs.items() if not j.running and now - (j.finished_at or now) > KEEP_FINISHED_S]:
            del jobs[rid]
        if not jobs:
            del _REGISTRY[ws]


def jobs_for(workspace: str | None) -> dict[str, TrainingJob]:
    """Jobs started in this process for ``workspace`` (run id → job), oldest first."""
    with _REG_LOCK:
        _prune(time.time())
        return dict(_REGISTRY.get(workspace or "", {}))


def active_run_ids(workspace: str | None) -> set[str]:
    """Run ids of the workspace's queued or running jobs (their records must not be deleted)."""
    return {rid for rid, j in jobs_for(workspace).items() if j.running}


def busy_workspaces() -> set[str]:
    """Workspaces with a queued or running job in this process (the idle sweeper leaves them alone)."""
    with _REG_LOCK:
        return {ws for ws, jobs in _REGISTRY.items() if any(j.running for j in jobs.values())}
