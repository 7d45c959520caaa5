"""Background training: run a clustering method away from the UI and expose its live state (no Streamlit here).

One module per concern (after RQ's job / queue / worker / registry):

- :mod:`.state`: :class:`JobState`, the lock-protected live state the UI polls through :meth:`JobState.snapshot`
  (epoch logs, snapshots, status, error message, queue position), and :func:`friendly_error`;
- :mod:`.job`: :class:`TrainingJob`, one training with its run record (:class:`~scclust_core.runs.RunRecorder`);
- :mod:`.slots`: the first-come queue; at most ``$SCCLUST_MAX_TRAININGS`` trainings (default 1: on a CPU two
  trainings only slow each other down) run at once in this server process, the others wait as ``queued``;
- :mod:`.registry`: the process-wide registry keyed by workspace (:func:`jobs_for`);
- :mod:`.procs`: the fork server and the parent-side handle of a worker process;
- :mod:`.worker`: what runs in the worker process (it dies with the server);
- :mod:`.settings`: the environment variables, checked by :func:`check_configuration`.

Why a worker *process* per training (``isolation="process"``, the default): torch's random generator and its
thread count are process-global and dropout draws from that generator, so two trainings sharing a process can
never be reproducible (issue 14: CICL on Klein, same seed, ARI 0.7405 with a second run overlapping vs 0.7339
alone; here contrastive-sc on 150 synthetic cells, same seed: embeddings 0.33 apart when two runs overlap in
threads, bit-identical in processes). Each training runs in its own child started from a fork server that has
already imported torch, scanpy and the methods, so a start costs a fork, not an import; the child seeds its own
generators, sends epoch logs, snapshots and the result back through a queue, stops when the cancel event is set,
and its exit returns all of its memory. Measured on a shared 2-core machine: the fork server's one-off start
(importing torch, scanpy and the methods) takes ~25 s and is begun when the app opens (:func:`prestart_workers`);
after that a training starts 0.5-1.4 s later than in a thread. ``isolation="thread"`` runs in a thread of this
process (notebooks, tests with ad-hoc methods); it is only reproducible when no other training overlaps.
"""
from __future__ import annotations

from .job import TrainingJob
from .procs import prestart as prestart_workers
from .registry import active_run_ids, busy_workspaces, jobs_for, register_job
from .settings import ConfigurationError, check_configuration, max_trainings
from .state import TERMINAL, JobSnapshot, JobState, friendly_error

__all__ = ["JobState", "JobSnapshot", "TrainingJob", "jobs_for", "active_run_ids", "register_job",
           "friendly_error", "max_trainings", "busy_workspaces", "prestart_workers", "check_configuration",
           "ConfigurationError", "TERMINAL"]
