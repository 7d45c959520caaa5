"""Config fields that several methods declare with the same meaning, each defined once.

Every factory returns a :func:`~scclust_core.config.param` field, so forms, CLI and validation see the usual
metadata. Bounds, choices and the ``advanced`` flag live here; the default and, where the meaning is specific to a
method, the help text are the caller's. Also the wording shared by preset notes (``PRESET_NOTES``).
"""
from __future__ import annotations

from typing import Any

from ..config import param

__all__ = ["LEIDEN_FLAVORS", "kmeans_restarts", "knn_neighbours", "leiden_resolution_param", "leiden_flavor_param",
           "nt_xent_temperature", "cuda_amp", "variant", "smoke_test_note", "adaptation_note"]

#: Leiden implementations accepted by :func:`~scclust_core.methods._blocks.leiden_on_embedding` and ``leiden``
LEIDEN_FLAVORS = ("igraph", "leidenalg")


def kmeans_restarts(default: int, help: str, *, advanced: bool = True) -> Any:
    """K-means restarts (``n_init``, the best inertia is kept): 1 to 100."""
    return param(default, min=1, max=100, advanced=advanced, help=help)


def knn_neighbours(default: int, help: str, *, max: int = 500, advanced: bool = True) -> Any:
    """Neighbours of a kNN graph (for Leiden): 2 to ``max``."""
    return param(default, min=2, max=max, advanced=advanced, help=help)


def leiden_resolution_param(default: float, help: str, *, advanced: bool = True) -> Any:
    """Leiden resolution (higher → more clusters): 0.01 to 20."""
    return param(default, min=0.01, max=20.0, advanced=advanced, help=help)


def leiden_flavor_param(help: str) -> Any:
    """Leiden implementation, igraph (the default) or leidenalg."""
    return param("igraph", choices=LEIDEN_FLAVORS, advanced=True, help=help)


def nt_xent_temperature(default: float = 0.07) -> Any:
    """Temperature of an NT-Xent (SimCLR) contrastive loss: 0.001 to 10."""
    return param(default, min=0.001, max=10.0, advanced=True, help="NT-Xent temperature.")


def cuda_amp(passes: str, *, scope: str = "") -> Any:
    """The ``amp`` switch, off by default: bfloat16 autocast of ``passes`` on CUDA (``scope`` narrows where, e.g.
    ", float32 models"); ignored on CPU."""
    return param(False, advanced=True, help=f"CUDA only{scope}: bfloat16 autocast for {passes}; ignored on CPU.")


def variant(default: bool | str, help: str, *, choices: tuple[str, ...] | None = None) -> Any:
    """A fidelity switch: which reading of the method runs where the published code [C], the paper's text [P] or a
    fix [Q] differ. Always an advanced field; the default is the code's, ``help`` says what each value does."""
    return param(default, choices=choices, advanced=True, help=help)


def smoke_test_note(what: str) -> str:
    """The ``PRESET_NOTES`` line of a method's ``tiny`` preset: ``what`` it shrinks, and that it is no real run."""
    return f"Smoke test only (seconds on ~150 cells): {what}; not for real data."


def adaptation_note(what: str) -> str:
    """The ``PRESET_NOTES`` line of a preset that adapts the published setting ([A]): ``what`` it changes."""
    return f"Adaptation [A], not the published setting: {what}"
