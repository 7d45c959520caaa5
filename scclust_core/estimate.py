"""Before Start: how long a run will take and how much memory it will need, and a label-free default K.

Time and peak memory come from *measured* runs (``MEASURED``: the README's benchmark timings and the peak RSS
of short runs, all on a 2-core CPU with one torch thread), fitted per method and preset by
:func:`fit_rates` to ``seconds = a + b · cells/1000 + c · cells·genes/10⁶`` (non-negative least squares on
relative errors, so small and large data count alike) and ``MiB = m0 + m1 · cells·genes/10⁶``. A run with more
or fewer epochs than its preset scales the per-cell part by the ratio of epochs. ``bench`` output refits the
table: ``python -m scclust_core.estimate results.csv`` prints the rates fitted from a bench CSV.

No GPU has been lent to this project, so there is no measured GPU rate: for a CUDA device the estimate says so
instead of guessing.
"""
from __future__ import annotations

import csv
import logging
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["Rate", "Estimate", "MEASURED", "RATES", "fit_rates", "estimate", "work_units", "leiden_k",
           "rows_from_bench_csv"]

#: (method, preset, cells, genes, seconds or None, peak RSS MiB or None, where it was measured)
MEASURED: list[tuple[str, str, int, int, float | None, float | None, str]] = [
    # README, classic baselines (bench --seeds 1, shared 2-core CPU)
    ("kmeans", "default", 4271, 2000, 14.3, None, "README"), ("kmeans", "default", 822, 14878, 11.0, None, "README"),
    ("kmeans", "default", 8617, 2000, 25.3, None, "README"), ("kmeans", "default", 220, 12694, 0.7, None, "README"),
    ("kmeans", "default", 1000, 900, 5.1, None, "README"), ("kmeans", "default", 2746, 2003, 16.7, None, "README"),
    ("kmeans", "default", 4186, 13488, 9.9, None, "README"),
    ("leiden", "default", 4271, 2000, 39.5, None, "README"), ("leiden", "default", 822, 14878, 6.9, None, "README"),
    ("leiden", "default", 8617, 2000, 63.5, None, "README"), ("leiden", "default", 220, 12694, 3.7, None, "README"),
    ("leiden", "default", 1000, 900, 2.8, None, "README"), ("leiden", "default", 2746, 2003, 7.8, None, "README"),
    ("leiden", "default", 4186, 13488, 9.9, None, "README"),
    # README, recommend (consensus), K given, 3-seed means, idle 2-core CPU
    ("recommend", "default", 4271, 2000, 25.9, None, "README"), ("recommend", "default", 822, 14878, 7.6, None, "README"),
    ("recommend", "default", 8617, 2000, 54.4, None, "README"), ("recommend", "default", 220, 12694, 2.6, None, "README"),
    ("recommend", "default", 1000, 900, 2.4, None, "README"), ("recommend", "default", 2746, 2003, 22.7, None, "README"),
    ("recommend", "default", 4186, 13488, 32.4, None, "README"),
    # README, deep methods, cpu presets (3-seed tables; the middle of the reported range)
    ("contrastive_sc", "cpu", 4271, 2000, 15, None, "README"), ("contrastive_sc", "cpu", 2746, 2003, 10, None, "README"),
    ("contrastive_sc", "cpu", 4186, 13488, 15, None, "README"), ("contrastive_sc", "cpu", 822, 14878, 3, None, "README"),
    ("contrastive_sc", "cpu", 220, 12694, 1, None, "README"), ("contrastive_sc", "cpu", 1000, 900, 3, None, "README"),
    ("contrastive_sc", "cpu", 8617, 2000, 31, None, "README"),
    ("contrastive_sc", "paper", 4271, 2000, 302, None, "README"), ("contrastive_sc", "paper", 2746, 2003, 175, None, "README"),
    ("contrastive_sc", "paper", 4186, 13488, 926, None, "README"), ("contrastive_sc", "paper", 822, 14878, 215, None, "README"),
    ("contrastive_sc", "paper", 220, 12694, 60, None, "README"), ("contrastive_sc", "paper", 1000, 900, 24, None, "README"),
    ("contrastive_sc", "paper", 8617, 2000, 535, None, "README"),
    ("cicl", "cpu", 4271, 2000, 202, None, "README"), ("cicl", "cpu", 2746, 2003, 210, None, "README"),
    ("cicl", "cpu", 4186, 13488, 174, None, "README"), ("cicl", "cpu", 822, 14878, 26, None, "README"),
    ("cicl", "cpu", 220, 12694, 8, None, "README"), ("cicl", "cpu", 1000, 900, 30, None, "README"),
    ("cicl", "paper", 4271, 2000, 630, 4198, "README"),
    ("scgpcl", "cpu", 4271, 2000, 170, None, "README"), ("scgpcl", "cpu", 2746, 2003, 71, None, "README"),
    ("scgpcl", "cpu", 4186, 13488, 135, None, "README"), ("scgpcl", "cpu", 822, 14878, 28, None, "README"),
    ("scgpcl", "cpu", 220, 12694, 10, None, "README"), ("scgpcl", "cpu", 1000, 900, 12.5, None, "README"),
    ("scgpcl", "cpu", 8617, 2000, 227, None, "README"),
    ("scgpcl", "paper", 4271, 2000, 1408, None, "README"), ("scgpcl", "paper", 2746, 2003, 2196, None, "README"),
    ("scgpcl", "paper", 4186, 13488, 3524, None, "README"),
    ("scsamac", "cpu", 4271, 2000, 162, None, "README"), ("scsamac", "cpu", 2746, 2003, 98, None, "README"),
    ("scsamac", "cpu", 4186, 13488, 154, None, "README"), ("scsamac", "cpu", 822, 14878, 32, None, "README"),
    ("scsamac", "cpu", 220, 12694, 5.5, None, "README"), ("scsamac", "cpu", 1000, 900, 24.5, None, "README"),
    ("scsamac", "cpu", 8617, 2000, 331, None, "README"),
    ("scsamac", "paper", 8617, 2000, 4165, None, "README"),
    ("scamac", "cpu", 4271, 2000, 174, None, "README"), ("scamac", "cpu", 2746, 2003, 100, None, "README"),
    ("scamac", "cpu", 4186, 13488, 176, None, "README"), ("scamac", "cpu", 822, 14878, 45, None, "README"),
    ("scamac", "cpu", 220, 12694, 22, None, "README"), ("scamac", "cpu", 1000, 900, 30.5, None, "README"),
    ("scamac", "cpu", 8617, 2000, 477, None, "README"),
    ("scamac", "paper", 2746, 2003, 780, None, "README"),
    # peak RSS of one-run processes (bench, 1 torch thread; times omitted: the CPU was 5-10× oversubscribed)
    ("kmeans", "default", 1000, 900, None, 584, "ui helper"), ("leiden", "default", 1000, 900, None, 702, "ui helper"),
    ("contrastive_sc", "cpu", 1000, 900, None, 663, "ui helper"),
    ("contrastive_sc", "cpu", 220, 12694, None, 645, "ui helper"),
    ("scgpcl", "cpu", 1000, 900, None, 1085, "ui helper"), ("scsamac", "cpu", 220, 12694, None, 759, "ui helper"),
]


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


def _measured_rows() -> list[dict[str, Any]]:
    return [dict(method=m, preset=p, n_cells=n, n_genes=g, seconds=t, peak_rss_mb=mem)
            for m, p, n, g, t, mem, _ in MEASURED]


RATES: dict[tuple[str, str], Rate] = fit_rates(_measured_rows())


def work_units(method: str, config: Mapping[str, Any]) -> float | None:
    """Epochs of training a config asks for (what the per-cell time scales with); None for non-epoch methods."""
    c = dict(config)
    if method == "scamac":
        return float(c.get("epochs", 0)) * (float(c.get("de_epochs", 0)) + float(c.get("fkm_epochs", 0)))
    keys = [k for k in c if k.endswith("epochs") and k != "warmup_epochs" and isinstance(c[k], (int, float))]
    return float(sum(c[k] for k in keys)) if keys else None


def estimate(method: str, preset: str | None, n_cells: int, n_genes: int, *, device: str = "cpu",
             config: Mapping[str, Any] | None = None) -> Estimate:
    """Time and peak memory of ``method`` with ``preset`` (and the user's ``config`` changes) on this data.

    Raises ``ValueError`` for non-positive sizes. An unmeasured method/preset or a CUDA device gives an
    :class:`Estimate` with ``seconds=None`` and a note saying why.
    """
    if n_cells <= 0 or n_genes <= 0:
        raise ValueError(f"Cannot estimate for {n_cells} cells × {n_genes} genes")
    from .methods import get_method

    cls = get_method(method).Config
    used = preset if preset in cls.PRESETS else cls.default_preset() or "default"
    used_preset = used if used in cls.PRESETS else None
    rate = RATES.get((method, used or "default"))
    if rate is None:
        return Estimate(None, None, f"no measured run of {method} ({used}) yet")
    secs = rate.seconds(n_cells, n_genes)
    note = (f"from {rate.n_runs} measured run{'s' if rate.n_runs != 1 else ''} of {method} ({used}) on a 2-core CPU"
            f" (fit within ×{1 + rate.max_rel_error:.1f} of them)")
    if config is not None:
        base = work_units(method, cls.from_preset(used_preset).to_dict())
        mine = work_units(method, config)
        if base and mine is not None and abs(mine - base) > 1e-9:
            secs = rate.a + (secs - rate.a) * mine / base
            note += f"; scaled to {mine:g} epochs (preset {base:g})"
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


def leiden_k(adata, *, seed: int = 0, n_neighbors: int = 15, resolution: float = 1.0) -> int:
    """Label-free number of clusters: Leiden (resolution 1) on the kNN graph of 50 PCs (the classic recipe:
    normalise, log, 2,000 HVGs, scale, PCA), as the ``leiden`` method does. Used as the default K when no
    reference annotation is chosen.

    The kNN graph is built with scikit-learn (exact, connectivities 1 for each neighbour, symmetrised) rather than
    ``sc.pp.neighbors``, whose first call in a process compiles numba code for minutes on a small CPU.
    """
    import igraph as ig
    from scipy import sparse
    from sklearn.neighbors import NearestNeighbors

    from .preprocess import recipe_classic

    if adata.n_obs < 3:
        raise ValueError(f"Need at least 3 cells to estimate K (got {adata.n_obs})")
    with warnings.catch_warnings():  # "X is not counts" is the classic recipe's business, not the estimate's
        warnings.simplefilter("ignore")
        ad = recipe_classic(adata, n_top_genes=2000, n_pcs=50, max_value=10, seed=seed)
    x = np.asarray(ad.obsm["X_pca"], dtype=np.float32)
    k = int(min(n_neighbors, len(x) - 1))
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    rows = np.repeat(np.arange(len(x)), k)
    graph = sparse.csr_matrix((np.ones(rows.size), (rows, idx[:, 1:].ravel())), shape=(len(x), len(x)))
    graph = graph.maximum(graph.T).tocoo()
    keep = graph.row < graph.col
    g = ig.Graph(n=len(x), edges=np.column_stack([graph.row[keep], graph.col[keep]]).tolist())
    import random

    random.seed(seed)  # igraph's Leiden draws from Python's RNG
    ig.set_random_number_generator(random)
    part = g.community_leiden(objective_function="modularity", resolution=resolution, n_iterations=-1)
    return max(2, int(len(set(part.membership))))


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
