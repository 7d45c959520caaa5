"""Worker processes: the fork server that preloads the heavy imports, and the parent-side handle of a worker.

Why a fork server: a training starts in a fork of a process that has already imported torch, scanpy and the
methods (~25 s on a shared 2-core machine, begun when the app opens: :func:`prestart`), so a start costs a fork,
not an import. The fork server is configured through the context's own ``set_forkserver_preload``; nothing of
``multiprocessing`` is patched.

Why a Popen of our own: multiprocessing re-runs the parent's ``__main__`` script in every child it does not
fork directly. Under Streamlit ``__main__`` is the page script (app.py), so the worker would run the app. The
worker needs nothing from ``__main__`` (its target and payload live in importable modules), so
:class:`_NoMainPopen` sends the child the usual preparation data without the main-module entries. It is a
subclass used only by this module's workers: other users of multiprocessing in the process are unaffected.
"""
from __future__ import annotations

import io
import multiprocessing as mp
import os
import queue
from multiprocessing import context as mp_context
from multiprocessing import forkserver, reduction, spawn, util
from multiprocessing.context import BaseContext
from typing import Any

from .worker import child_main

#: imported once by the fork server (imports only: running code there, e.g. a warm-up fit, starts OpenMP thread
#: pools, and libgomp then refuses to fork). The worker's modules come first: a child unpickles its target
#: (``worker.child_main``) and its process class (this module).
PRELOAD = ["scclust_core.jobs.worker", "scclust_core.jobs.procs", "scclust_core.methods", "scclust_core.metrics",
           "torch", "scanpy", "sklearn.cluster", "sklearn.decomposition", "sklearn.metrics", "sklearn.neighbors",
           "scclust_core._forkserver_warmup"]

HAS_FORKSERVER = "forkserver" in mp.get_all_start_methods()


def context() -> BaseContext:
    """The fork-server context with :data:`PRELOAD` set (``spawn`` where there is no fork server: Windows)."""
    if not HAS_FORKSERVER:  # pragma: no cover - Windows
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def prestart() -> None:
    """Start the fork server now (it imports torch, scanpy and the methods once, which takes seconds to tens of
    seconds), so the first training does not wait for it. Harmless when already running."""
    if context().get_start_method() == "forkserver":
        forkserver.ensure_running()


if HAS_FORKSERVER:
    from multiprocessing import popen_forkserver

    class _NoMainPopen(popen_forkserver.Popen):
        """The fork server's Popen, minus the parent's ``__main__`` in the child (see the module docstring)."""

        def _launch(self, process_obj: Any) -> None:
            prep_data = spawn.get_preparation_data(process_obj.name)
            prep_data.pop("init_main_from_path", None)
            prep_data.pop("init_main_from_name", None)
            buf = io.BytesIO()
            mp_context.set_spawning_popen(self)
            try:
                reduction.dump(prep_data, buf)
                reduction.dump(process_obj, buf)
            finally:
                mp_context.set_spawning_popen(None)
            self.sentinel, w = forkserver.connect_to_new_process(self._fds)
            parent_w = os.dup(w)  # a sentinel of the parent for the child, as the stock Popen keeps
            self.finalizer = util.Finalize(self, util.close_fds, (parent_w, self.sentinel))
            with open(w, "wb", closefd=True) as f:
                f.write(buf.getbuffer())
            self.pid = forkserver.read_signed(self.sentinel)

    class _WorkerProcess(mp_context.ForkServerProcess):
        """A fork-server process started through :class:`_NoMainPopen`."""

        @staticmethod
        def _Popen(process_obj: Any) -> Any:
            return _NoMainPopen(process_obj)


class WorkerProcess:
    """Parent-side handle of one training process: start it, read its events, ask it to stop, watch it end."""

    def __init__(self, payload: dict[str, Any], *, name: str):
        ctx = context()
        self._events = ctx.Queue()
        self._stop = ctx.Event()
        cls = _WorkerProcess if ctx.get_start_method() == "forkserver" else ctx.Process
        payload = {**payload, "server_pid": os.getpid()}  # the worker ends when this process ends
        self._proc = cls(target=child_main, args=(payload, self._events, self._stop), daemon=True, name=name)

    def start(self) -> None:
        """Launch the child (the payload is pickled to it now)."""
        self._proc.start()

    def request_stop(self) -> None:
        """Ask the child to stop after its current epoch (its labels so far are kept)."""
        self._stop.set()

    def next_event(self, timeout: float) -> tuple | None:
        """The child's next message, or None when none came within ``timeout`` seconds."""
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    @property
    def exitcode(self) -> int | None:
        return self._proc.exitcode

    def is_alive(self) -> bool:
        return self._proc.is_alive()

    def terminate(self) -> None:
        self._proc.terminate()

    def join(self, timeout: float | None = None) -> None:
        self._proc.join(timeout)
