"""The result and callback types, for the methods' own imports (they live in :mod:`scclust_core.results`)."""
from __future__ import annotations

from ..results import (Callback, CallbackList, CallbackProtocol, EpochLog, MethodCard, MethodResult,  # noqa: F401
                       Prepared, Snapshot)

__all__ = ["MethodCard", "EpochLog", "Snapshot", "MethodResult", "Callback", "CallbackProtocol", "CallbackList",
           "Prepared"]
