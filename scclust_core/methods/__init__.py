"""Clustering methods. Importing this package registers every method (one import line each)."""
from __future__ import annotations

from ._types import Callback, CallbackList, EpochLog, MethodResult, Prepared, Snapshot
from ._base import ClusteringMethod, FitContext
from ._loop import NonFiniteLossError
from ._registry import get_method, list_methods, register_method
from ._run import consensus_summary, run_method, write_result

# Registration: the consensus recommendation heads the list, then the classic baselines, then the deep methods.
from . import recommend  # noqa: E402,F401  (recommend: consensus of candidates)
from . import classic  # noqa: E402,F401  (leiden, kmeans)

from . import contrastive_sc  # noqa: E402,F401
from . import cicl  # noqa: E402,F401
from . import scsamac  # noqa: E402,F401
from . import scamac  # noqa: E402,F401
from . import scgpcl  # noqa: E402,F401


def _load_plugins() -> None:
    """Methods from outside the package: each module named in ``$SCCLUST_METHOD_PLUGINS`` (comma-separated) is
    imported here, so it registers in every process that imports the methods — the app, its training workers, the
    CLI — exactly as a built-in method's import line does."""
    import importlib
    import os

    for module in filter(None, (m.strip() for m in os.environ.get("SCCLUST_METHOD_PLUGINS", "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ImportError(f"SCCLUST_METHOD_PLUGINS names {module!r}, which cannot be imported: {exc}") from exc


_load_plugins()

__all__ = ["Callback", "CallbackList", "ClusteringMethod", "EpochLog", "FitContext", "MethodResult", "Prepared",
           "Snapshot", "NonFiniteLossError", "get_method", "list_methods", "register_method", "run_method", "consensus_summary", "kind_of",
           "write_result", "describe_methods"]


def describe_methods() -> list[dict]:
    """One row per registered method: what it says of itself (name, kind, card, citation, fidelity, needs)."""
    rows = []
    for n in list_methods():
        m = get_method(n)
        rows.append({"name": n, "summary": m.summary, "citation": m.citation, "fidelity": m.fidelity,
                     "needs_counts": m.needs_counts, "can_estimate_k": m.can_estimate_k, "deep": m.deep,
                     "kind": m.kind, "card": m.card, "summary_key": m.summary_key, "takes_k": m.takes_k,
                     "recipe": m.recipe, "presets": m.Config.preset_names()})
    return rows


def kind_of(name: str) -> str | None:
    """``classic`` / ``deep`` / ``consensus`` of a registered method; None for a name no longer registered (a run
    recorded by another version)."""
    return get_method(name).kind if name in list_methods() else None
