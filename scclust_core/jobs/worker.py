"""The training side of a job: fit a method and, in a worker process, report to the parent and die with it.

Everything here runs where the training runs: in the worker process (:func:`child_main`, started by
:mod:`.procs`) or, with ``isolation="thread"``, in a thread of the server (:func:`fit`).

Why a worker must watch its parents (issue: orphaned workers): the worker is a child of the fork server, which
is a child of the server. When the server is killed (SIGKILL, OOM killer) the fork server sees its "alive" pipe
close and exits; ``PR_SET_PDEATHSIG`` then has the kernel kill the worker, and a watcher thread ends it too when
its parent changes or the server's pid is gone (other platforms, or a fork server that lingers). Without both,
a worker trained at full CPU for ever with nobody to read its results.
"""
from __future__ import annotations

import ctypes
import logging
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from typing import Any

from anndata import AnnData

from ..methods import get_method
from ..results import Callback, EpochLog, MethodResult, Snapshot

logger = logging.getLogger(__name__)

#: from <linux/prctl.h>
PR_SET_PDEATHSIG = 1
#: how often the watcher thread checks that the parents still live (seconds)
WATCH_EVERY_S = 1.0


def fit(method: str, adata: AnnData, config: Any, callback: Callback, label_key: str | None,
        **options: Any) -> MethodResult:
    """Fit a registered method (the one place a job resolves its method; tests replace ``get_method`` here);
    ``options``: ``batch_key`` / ``integration`` when the data holds several samples."""
    return get_method(method).fit(adata, config, callback=callback, label_key=label_key, **options)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as dead: a killed server whose parent has not reaped it yet)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except FileNotFoundError:
        return False
    except (OSError, IndexError):  # no /proc (macOS): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Have the kernel send ``sig`` to this process when its parent dies (Linux ``prctl``); False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as exc:  # pragma: no cover - exotic libc
        logger.warning("Could not set the parent-death signal (%s): relying on the watcher thread", exc)
        return False
    return True


def _watch_parents(parent_pid: int, server_pid: int, every: float) -> None:
    """Exit this process at once when its parent changed (the fork server died) or the server is gone."""
    while True:
        if os.getppid() != parent_pid or not pid_alive(server_pid):
            os._exit(1)  # nobody is left to read the results: stop training now
        time.sleep(every)


def die_with_parents(server_pid: int, every: float = WATCH_EVERY_S) -> None:
    """Make this worker end when its parent (the fork server) or the server process ``server_pid`` ends."""
    parent_pid = os.getppid()
    set_parent_death_signal(signal.SIGKILL)
    if not pid_alive(server_pid) or os.getppid() != parent_pid:  # died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch_parents, args=(parent_pid, server_pid, every), daemon=True,
                     name="scclust-parent-watch").start()


class Forward(Callback):
    """In the child: send every callback event to the parent; stop when the parent's event is set."""

    def __init__(self, events: Any, stop: Any):
        self.events, self.stop = events, stop

    def on_train_begin(self, info: dict[str, Any]) -> None:
        self.events.put(("begin", info))

    def on_epoch_end(self, log: EpochLog, snapshot: Snapshot | None) -> None:
        self.events.put(("epoch", log, snapshot))

    def on_snapshot(self, snapshot: Snapshot) -> None:
        self.events.put(("snapshot", snapshot))

    def on_train_end(self, result: MethodResult) -> None:
        self.events.put(("end", result))

    def should_stop(self) -> bool:
        return self.stop.is_set()


def child_main(payload: dict[str, Any], events: Any, stop: Any) -> None:
    """Entry point of the worker process: fit, report through ``events``, exit (returning all memory)."""
    die_with_parents(payload["server_pid"])
    os.environ.update(payload["env"])
    try:
        fit(payload["method"], payload["adata"], payload["config"], Forward(events, stop), payload["label_key"],
            **payload.get("fit_options", {}))
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
