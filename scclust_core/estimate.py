"""Before Start: how long a run will take and how much memory it will need.

Each method carries its own cost model (:class:`CostModel` on the class, ``cost = CostModel(...)``): the runs
measured on a 2-core CPU with one torch thread (:class:`Measured`; the README's benchmark timings and the peak RSS
of short runs) and how its work grows with the config (:meth:`CostModel.work_units`, epochs by default). This
module combines them and names no method: :func:`fit_rates` fits, per preset,
``seconds = a + b · cells/1000 + c · cells·genes/10⁶`` (non-negative least squares on log-ratios, so small and
large data count alike) and ``MiB = m0 + m1 · cells·genes/10⁶``. A run with more or fewer work units than its
preset scales the per-cell part by their ratio. ``bench`` output refits: ``python -m scclust_core.estimate
results.csv`` prints the rates fitted from a bench CSV.

No GPU run has been measured, so for a CUDA device the estimate says so instead of guessing.
"""
from __future__ import annotations

import csv
import functools
import logging
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["Measured", "CostModel", "measured_runs", "epoch_units", "Rate", "Estimate", "fit_rates", "rates_for",
           "estimate", "format_seconds", "rows_from_bench_csv"]


@dataclass(frozen=True)
class Measured:
    """One measured run: preset, data size, seconds (None: time not measured) and peak RSS MiB (None)."""

    preset: str
    cells: int
    genes: int
    seconds: float | None
    mib: float | None = None
    source: str = "README"


def measured_runs(preset: str, *runs: tuple[int, int, float | None], source: str = "README") -> tuple[Measured, ...]:
    """``(cells, genes, seconds)`` triples of one preset as :class:`Measured` rows (a compact table)."""
    return tuple(Measured(preset, c, g, t, None, source) for c, g, t in runs)


def epoch_units(config: Mapping[str, Any]) -> float | None:
    """Training epochs a config asks for (the sum of its ``*epochs`` fields but warm-up); None without epochs."""
    keys = [k for k, v in config.items() if k.endswith("epochs") and k != "warmup_epochs"
            and isinstance(v, (int, float)) and not isinstance(v, bool)]
    return float(sum(config[k] for k in keys)) if keys else None


@dataclass(frozen=True)
class CostModel:
    """A method's measured cost and how it grows: ``runs`` fitted per preset; ``work_units(config)`` is what the
    per-cell time scales with (epochs by default; a method whose epochs nest sets its own)."""

    runs: tuple[Measured, ...] = ()
    work_units: Callable[[Mapping[str, Any]], float | None] = field(default=epoch_units)


class _Costed(Protocol):
    """What :func:`estimate` needs of a method: its name, cost model and config class."""

    name: str
    cost: CostModel
    Config: Any


@dataclass(frozen=True)
class Rate:
    """Fitted cost of one method × preset on the reference CPU (see the module docstring)."""

    a: float  # fixed seconds
    b: float  # seconds per 1,000 cells
    c: float  # seconds per million cells×genes
    m0: float | None  # MiB at zero data (interpreter, libraries, model)
    m1: float | None  # MiB per million cells×genes
    n_runs: int  # measured runs behind the fit
    max_rel_error: float  # worst |fit / measured - 1| on those runs

    def seconds(self, n_cells: int, n_genes: int) -> float:
        return self.a + self.b * n_cells / 1e3 + self.c * n_cells * n_genes / 1e6

    def mib(self, n_cells: int, n_genes: int) -> float | None:
        if self.m0 is None:
            return None
        return self.m0 + (self.m1 or 0.0) * n_cells * n_genes / 1e6


@dataclass(frozen=True)
class Estimate:
    """What the Cluster page shows before Start (``seconds``/``mib`` None when nothing measured fits)."""

    seconds: float | None
    mib: float | None
    note: str

    def text(self) -> str:
        parts = []
        if self.seconds is not None:
            parts.append(f"≈ {format_seconds(self.seconds)}")
        if self.mib is not None:
            parts.append(f"peak memory ≈ {self.mib / 1024:.1f} GiB" if self.mib >= 1024 else f"peak memory ≈ {self.mib:.0f} MiB")
        elif self.seconds is not None:
            parts.append("peak memory not measured for this method yet")
        return " · ".join(parts) or "no estimate"


def format_seconds(s: float) -> str:
    """Rounded the way a person says it: 8 s, 40 s, 3 min, 1.5 h."""
    if s < 60:
        return f"{max(1, round(s))} s"
    if s < 3600:
        return f"{round(s / 60)} min" if s >= 600 else f"{s / 60:.1f} min".replace(".0 min", " min")
    return f"{s / 3600:.1f} h"


def _nnls(features: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Non-negative coefficients minimising the squared log-ratio of fit to target (a ×2 miss counts the same
    whether over or under, and large runs do not drown small ones); started from the relative-error NNLS."""
    from scipy.optimize import minimize, nnls

    w = 1.0 / np.maximum(target, 1e-3)
    start, _ = nnls(features * w[:, None], target * w)
    scale = np.maximum(np.abs(features).max(axis=0), 1e-12)
    f = features / scale

    def loss(c):
        return float(np.sum(np.log(np.maximum(f @ c, 1e-9) / target) ** 2))

    res = minimize(loss, start * scale + 1e-6, method="L-BFGS-B", bounds=[(0, None)] * f.shape[1])
    return (res.x if res.success or res.fun <= loss(start * scale) else start * scale) / scale


def fit_rates(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Rate]:
    """Fit a :class:`Rate` per (method, preset) from rows with ``method, preset, n_cells, n_genes, seconds`` and
    optionally ``peak_rss_mb`` (the columns of a ``bench`` CSV). Rows without seconds (failed runs) are skipped."""
    groups: dict[tuple[str, str], list[tuple[float, float, float, float | None]]] = {}
    for r in rows:
        try:
            n, g = float(r["n_cells"]), float(r["n_genes"])
            t = float(r["seconds"]) if r.get("seconds") not in (None, "") else float("nan")
        except (KeyError, TypeError, ValueError):
            continue
        if not (n > 0 and g > 0) or str(r.get("status", "completed")) == "failed" or t <= 0:
            continue
        mem = r.get("peak_rss_mb")
        try:
            mem = float(mem) if mem not in (None, "") else None
        except ValueError:
            mem = None
        groups.setdefault((str(r["method"]), str(r.get("preset") or "default")), []).append((n, g, t, mem))
    out = {}
    for key, all_pts in groups.items():
        pts = [p for p in all_pts if np.isfinite(p[2])]
        if not pts:
            continue
        arr = np.array([(n, g, t) for n, g, t, _ in pts])
        n, g, t = arr[:, 0], arr[:, 1], arr[:, 2]
        feats = np.column_stack([np.ones_like(n), n / 1e3, n * g / 1e6])
        if len(pts) < 3:  # too few runs for three terms: time proportional to the cells
            coef = np.array([0.0, float(np.median(t / (n / 1e3))), 0.0])
        else:
            coef = _nnls(feats, t)
        rel = np.abs(feats @ coef / t - 1)
        mems = [(n_ * g_ / 1e6, m) for n_, g_, _, m in all_pts if m is not None]
        m0 = m1 = None
        if len(mems) >= 2:
            mm = np.array(mems)
            m0, m1 = (float(v) for v in _nnls(np.column_stack([np.ones(len(mm)), mm[:, 0]]), mm[:, 1]))
        elif mems:
            m0, m1 = float(mems[0][1]), 0.0
        out[key] = Rate(*(float(v) for v in coef), m0, m1, len(pts), float(rel.max()))
    return out


@functools.lru_cache(maxsize=None)
def _rates(cost: CostModel) -> dict[str, Rate]:
    rows = [dict(method="m", preset=r.preset, n_cells=r.cells, n_genes=r.genes, seconds=r.seconds,
                 peak_rss_mb=r.mib) for r in cost.runs]
    return {preset: rate for (_, preset), rate in fit_rates(rows).items()}


def rates_for(method: _Costed) -> dict[str, Rate]:
    """The :class:`Rate` per preset fitted from ``method.cost`` (computed once per cost model)."""
    return _rates(method.cost)


def estimate(method: _Costed, preset: str | None, n_cells: int, n_genes: int, *, device: str = "cpu",
             config: Mapping[str, Any] | None = None) -> Estimate:
    """Time and peak memory of ``method`` (a registered method or its class) with ``preset`` (and the user's
    ``config`` changes) on this data.

    Raises ``ValueError`` for non-positive sizes. An unmeasured preset or a CUDA device gives an
    :class:`Estimate` with ``seconds=None`` and a note saying why.
    """
    if n_cells <= 0 or n_genes <= 0:
        raise ValueError(f"Cannot estimate for {n_cells} cells × {n_genes} genes")
    cls, name = method.Config, method.name
    used = preset if preset in cls.PRESETS else cls.default_preset() or "default"
    used_preset = used if used in cls.PRESETS else None
    rate = rates_for(method).get(used or "default")
    if rate is None:
        return Estimate(None, None, f"no measured run of {name} ({used}) yet")
    secs = rate.seconds(n_cells, n_genes)
    note = (f"from {rate.n_runs} measured run{'s' if rate.n_runs != 1 else ''} of {name} ({used}) on a 2-core CPU"
            f" (fit within ×{1 + rate.max_rel_error:.1f} of them)")
    if config is not None:
        base = method.cost.work_units(cls.from_preset(used_preset).to_dict())
        mine = method.cost.work_units(dict(config))
        if base and mine is not None and abs(mine - base) > 1e-9:
            secs = rate.a + (secs - rate.a) * mine / base
            note += f"; scaled to {mine:g} work units (preset {base:g})"
    mib = rate.mib(n_cells, n_genes)
    if mib is not None:
        used = _genes_used(config if config is not None else cls.from_preset(used_preset).to_dict(), n_genes)
        mib += DENSE_COPIES * n_cells * used * 4 / 2**20
        note += (f"; memory = the measured peak on small data + {DENSE_COPIES} dense float32 copies of "
                 f"{n_cells:,} cells × {used:,} genes (an assumption for data larger than the measured runs)")
    if str(device).startswith("cuda"):
        return Estimate(None, mib, f"no GPU run measured yet; on this CPU it would take ≈ {format_seconds(secs)}")
    return Estimate(secs, mib, note)


#: dense float32 copies of the (cells × used genes) matrix a method holds at its peak (input, normalised, views)
DENSE_COPIES = 3


def _genes_used(config: Mapping[str, Any], n_genes: int) -> int:
    """Genes a method works on: its HVG / gene-selection setting when numeric, else all genes."""
    for k in ("n_hvg", "select_genes", "n_top_genes"):
        v = config.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            return int(min(v, n_genes))
    return int(n_genes)


def rows_from_bench_csv(path: str) -> list[dict[str, Any]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m scclust_core.estimate BENCH.csv [...]  (prints the rates fitted from bench CSVs)")
        return 2
    rows = [r for p in argv for r in rows_from_bench_csv(p)]
    print("method\tpreset\ta_s\tb_s_per_kcell\tc_s_per_Mvalue\tm0_MiB\tm1_MiB_per_Mvalue\truns\tmax_rel_err")
    for (m, p), r in sorted(fit_rates(rows).items()):
        print(f"{m}\t{p}\t{r.a:.2f}\t{r.b:.2f}\t{r.c:.3f}\t{r.m0}\t{r.m1}\t{r.n_runs}\t{r.max_rel_error:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
