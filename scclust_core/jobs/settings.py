"""Background-training settings read from the environment, with one check for all of them.

Why a check: a typo in one of these variables used to surface only inside the queue's worker thread, which died
and left the job ``queued`` for ever (and the Start button disabled). :func:`check_configuration` is called when
the app starts (the page shows the message) and again by every job before it queues (the job fails with it).
"""
from __future__ import annotations

import os

ENV_MAX_TRAININGS = "SCCLUST_MAX_TRAININGS"
ENV_ISOLATION = "SCCLUST_JOB_ISOLATION"
ISOLATIONS = ("process", "thread")


class ConfigurationError(ValueError):
    """An environment variable of scclust has a value it cannot use (the message names both)."""


def max_trainings() -> int:
    """How many trainings may run at once (``$SCCLUST_MAX_TRAININGS``, default 1)."""
    raw = os.environ.get(ENV_MAX_TRAININGS, "").strip() or "1"
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigurationError(
            f"Configuration error: {ENV_MAX_TRAININGS} must be a positive integer (how many trainings may run "
            f"at once), got {raw!r}. Fix the environment variable and restart the server.")
    return n


def job_isolation(explicit: str | None = None) -> str:
    """``explicit``, else ``$SCCLUST_JOB_ISOLATION``, else ``"process"``; anything else is an error."""
    from_env = not explicit
    value = explicit or os.environ.get(ENV_ISOLATION, "").strip() or "process"
    if value not in ISOLATIONS:
        where = f"{ENV_ISOLATION} must be" if from_env else "isolation must be"
        raise ConfigurationError(f"Configuration error: {where} 'process' or 'thread', got {value!r}.")
    return value


def check_configuration() -> None:
    """Raise :class:`ConfigurationError` (a ValueError) naming every wrong variable and its value."""
    problems = []
    for check in (max_trainings, job_isolation):
        try:
            check()
        except ConfigurationError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigurationError(" ".join(problems))
