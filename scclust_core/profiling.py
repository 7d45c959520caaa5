"""Where a method's time goes: one ``fit`` under :mod:`cProfile`, summed into buckets a reader can act on.

``python -m scclust_core profile --data file.h5ad --method cicl [--preset cpu]`` prints, as shares of the fit:

- ``prepare`` — preprocessing before training (normalisation, HVGs, scaling, graphs);
- ``before first epoch`` — everything from the start of ``fit`` to the end of the first epoch minus that epoch
  (preprocessing, model construction, initial clustering, the epoch-0 snapshot);
- ``live views`` — display metrics, snapshot embedding, 2-D projection and snapshot clustering (``FitContext``);
- ``K-means`` / ``Leiden`` — every clustering call (inside epochs too: prototypes, checks, final labels);
- ``torch compute`` — time inside torch's compiled functions (forward, backward, optimiser);
- ``data handling`` — the rest of the epochs: batching, host ↔ device copies, Python bookkeeping.

Buckets overlap where the code nests (a snapshot's K-means counts under live views and K-means); the line
``epochs`` is the sum of the epoch times the method reported. cProfile adds per-call overhead to Python code, so
shares of Python-heavy work are upper bounds. ``torch._dynamo``, which torch imports when the first optimiser of a
process is built (~3 s), is imported before the profile starts: the app's training workers have it preloaded.
"""
from __future__ import annotations

import cProfile
import pstats
import time
from typing import Any

from anndata import AnnData

__all__ = ["profile_fit", "format_profile"]

_LIVE = ("_take_snapshot", "_display_metrics", "_resolve")


def _cum(stats: pstats.Stats, *, file_part: str = "", names: tuple[str, ...] = (), exact: bool = True) -> float:
    """Cumulative time of the functions named ``names`` (or, ``exact=False``, whose name contains one of them) in
    files whose path contains ``file_part``. Nested calls of the same function would count twice; the functions
    summed here do not nest."""
    total = 0.0
    for (fname, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        hit = func in names if exact else any(n in func for n in names)
        if hit and file_part in fname:
            total += ct
    return total


def _torch_time(stats: pstats.Stats) -> float:
    """Own time of built-in (compiled) functions from torch: the tensor maths, autograd and optimiser kernels."""
    total = 0.0
    for (fname, _line, func), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if fname == "~" and ("torch" in func or "run_backward" in func or "Tensor" in func):
            total += tt
    return total


def profile_fit(adata: AnnData, method: str, config: Any = None, **kw: Any) -> dict[str, float]:
    """Fit ``method`` on ``adata`` under cProfile; returns seconds per bucket (see the module docstring)."""
    from .methods import Callback, get_method

    m = get_method(method)
    logs: list = []

    class _Keep(Callback):
        def on_epoch_end(self, log, snapshot):
            logs.append(log)

    import torch._dynamo  # noqa: F401 - a one-time ~3 s import at the first optimiser; the app's workers preload it

    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    res = m.fit(adata, config, callback=_Keep(), **kw)
    prof.disable()
    total = time.perf_counter() - t0
    st = pstats.Stats(prof)
    epochs = sum(log.seconds for log in logs)
    prepare = _cum(st, file_part="scclust_core/methods", names=("prepare",))
    out = {
        "total": total, "fit (reported)": res.seconds, "prepare": prepare,
        "before first epoch": prepare + ((logs[0].elapsed - logs[0].seconds) if logs else 0.0),
        "epochs": epochs,
        "after last epoch": max(0.0, res.seconds - prepare - logs[-1].elapsed) if logs else 0.0,
        "live views": sum(_cum(st, file_part="methods/_base.py", names=(n,)) for n in _LIVE),
        "K-means": _cum(st, file_part="cluster/_kmeans.py", names=("fit",)),
        "Leiden": _cum(st, names=("community_leiden", "find_partition"), exact=False),
        "torch compute": _torch_time(st),
    }
    out["data handling"] = max(0.0, epochs - out["torch compute"])
    return out


def format_profile(prof: dict[str, float]) -> str:
    """One line per bucket: seconds and share of the fit.

    Three decimals: a tiny fit on a fast machine lasts well under 0.1 s, and one decimal would print it as zero.
    """
    total = prof["total"] or 1.0
    return "\n".join(f"{k:>20s}  {v:10.3f} s  {100 * v / total:5.1f} %" for k, v in prof.items())
