"""The first-come queue in front of at most :func:`~.settings.max_trainings` concurrent trainings.

It knows a waiting job only through :class:`Waiter` (cancel flag and live state), so it needs no import of
:mod:`.job` and the job module can use it.
"""
from __future__ import annotations

import threading
from typing import Protocol

from .settings import max_trainings
from .state import JobState


class Waiter(Protocol):
    """What the queue needs of a job: whether it was cancelled, and its live state (for its position)."""

    state: JobState

    @property
    def cancel_requested(self) -> bool: ...


class Slots:
    """First-come queue in front of at most :func:`max_trainings` concurrent trainings."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = 0
        self._waiting: list[Waiter] = []

    def acquire(self, job: Waiter) -> bool:
        """Wait for a free slot; False when the job was cancelled while it waited.

        Raises the settings' ValueError when ``$SCCLUST_MAX_TRAININGS`` is wrong (the job then fails with it).
        """
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
        """Give a slot back (once per successful :meth:`acquire`)."""
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    def wake(self) -> None:
        """Let waiters re-check (a cancel): a cancelled queued job leaves at once, not at the next timeout."""
        with self._cond:
            self._cond.notify_all()

    def _publish_positions(self) -> None:
        for i, j in enumerate(self._waiting):
            j.state.update(queue_position=self._running + i)


#: the one queue of this server process
SLOTS = Slots()
