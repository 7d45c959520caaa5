"""Benchmark: every method × every labelled ``.h5ad`` × seeds, with K = number of annotated types.

One CSV row per dataset × method × seed (written as soon as the run ends, so a long benchmark keeps its
partial results), and a summary table (mean ± sd over seeds). Labels are used only for scoring.
"""
from __future__ import annotations

import csv
import logging
import os
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, TextIO

import numpy as np

from .methods import Callback, get_method
from .metrics import UnusableLabelsWarning, evaluate, label_problem

logger = logging.getLogger(__name__)

__all__ = ["BenchRow", "run_bench", "summarize", "find_datasets", "PeakRSS", "COLUMNS", "BATCH_METRICS", "bench_columns", "n_types"]

COLUMNS = ["dataset", "method", "preset", "seed", "n_cells", "n_genes", "k", "k_found", "ari", "nmi", "ca",
           "silhouette", "seconds", "peak_rss_mb", "device", "status", "error"]
#: batch mixing (:func:`scclust_core.integrate.mixing_metrics`), CSV columns when a batch key is given
BATCH_METRICS = ["batch_asw", "ilisi", "ilisi_scaled", "same_batch_share"]


@dataclass
class BenchRow:
    values: dict[str, Any]


class PeakRSS:
    """Samples this process's resident memory in a thread; ``peak_mb`` is the maximum seen."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def current_mb() -> float:
        try:
            with open("/proc/self/statm") as fh:
                pages = int(fh.read().split()[1])
            return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, ValueError):  # non-Linux: fall back to the process-lifetime peak
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def _run(self):
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self.current_mb())
            self._stop.wait(self.interval)

    def __enter__(self):
        self.peak_mb = self.current_mb()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self.current_mb())


class _StderrProgress(Callback):
    """Prints a line every few epochs so long benchmarks show they are alive."""

    def __init__(self, prefix: str, stream: TextIO, every_s: float = 10.0):
        self.prefix, self.stream, self.every_s = prefix, stream, every_s
        self._last = 0.0

    def on_epoch_end(self, log, snapshot):
        now = time.perf_counter()
        if now - self._last >= self.every_s:
            self._last = now
            losses = ", ".join(f"{k}={v:.4g}" for k, v in log.losses.items())
            print(f"    {self.prefix} epoch {log.epoch}/{log.total_epochs} [{log.phase}] {losses} "
                  f"({log.elapsed:.0f} s)", file=self.stream, flush=True)


def _fmt(v: float) -> str:
    """A metric for the progress line; NaN (no usable labels) prints as n/a, with the reason as a warning."""
    return "n/a" if v != v else f"{v:.3f}"


def find_datasets(path: str | Path) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.h5ad"))
        if not files:
            raise ValueError(f"No .h5ad files in {p}")
        return files
    if not p.exists():
        raise ValueError(f"{p} does not exist")
    return [p]


def _same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (after symlinks, ``..`` and hard links)."""
    pa, pb = Path(a), Path(b)
    try:
        if pa.exists() and pb.exists():
            return os.path.samefile(pa, pb)
        return pa.resolve() == pb.resolve()
    except OSError:
        return False


def n_types(truth) -> int:
    """K: the categories that have cells. A categorical column keeps categories whose cells were removed
    (subsetting, filtering), and counting those would ask for clusters of cell types that are not there."""
    return int(truth.astype("category").cat.remove_unused_categories().cat.categories.size)


def _config_for(name: str, *, k: int, seed: int, preset: str | None, sets: dict[str, str]):
    method = get_method(name)
    cls = method.Config
    use_preset = preset if (preset and preset in cls.PRESETS) else cls.default_preset()
    cfg = cls.from_preset(use_preset, seed=seed, n_clusters=k)
    own = {f.name for f in cfg.field_specs()}
    applicable = {kk: v for kk, v in sets.items() if kk in own}
    if applicable:
        cfg = cfg.set_from_strings(applicable)
    return cfg, use_preset


def _check_args(data: str | Path, methods: list[str], seeds: int, sets: dict[str, str],
                out: str | Path | None, integration: str | None = None) -> list[Path]:
    """Fail before any run: no seeds, unknown methods, --set keys or integrations, an output that is an input."""
    if int(seeds) < 1:
        raise ValueError(f"seeds must be at least 1 (got {seeds}): each seed is one run of each method")
    for name in methods:
        get_method(name)  # fail early on unknown names
    if integration is not None:
        unable = [m for m in methods if integration not in get_method(m).integrations]
        if unable:
            can = "; ".join(f"{m}: {', '.join(get_method(m).integrations)}" for m in unable)
            raise ValueError(f"integration {integration!r} cannot be used by {', '.join(unable)} ({can}); run those "
                             "methods separately or with another integration")
    if sets:
        known = set().union(*({s.name for s in get_method(m).Config.field_specs()} for m in methods))
        unknown = sorted(set(sets) - known)
        if unknown:
            raise ValueError(f"--set key(s) {unknown} belong to none of the methods {methods}")
    files = find_datasets(data)
    if out and any(_same_file(out, f) for f in files):
        raise ValueError(f"--out '{out}' is one of the input datasets: writing the CSV would destroy it; "
                         "choose another file name")
    return files


@dataclass
class _Plan:
    """What every run of one benchmark shares."""

    seeds: int
    preset: str | None
    sets: dict[str, str]
    label_key: str
    batch_key: str | None
    integration: str | None
    stream: TextIO
    columns: list[str]


def _usable(path: Path, adata, plan: _Plan) -> str | None:
    """Why a file cannot be benchmarked (no usable annotation, no batch column), or None."""
    from .integrate import check_batches

    if plan.label_key not in adata.obs:
        return f"no obs[{plan.label_key!r}]"
    problem = label_problem(adata.obs[plan.label_key].to_numpy())
    if problem:  # K comes from the annotation and scores against it: neither is possible
        return problem
    if plan.batch_key is not None:
        try:
            check_batches(adata, plan.batch_key, integration=plan.integration or "harmony")
        except ValueError as exc:
            return str(exc)
    return None


def _one_run(path: Path, adata, name: str, seed: int, k: int, plan: _Plan, tag: str) -> dict[str, Any]:
    """One method × seed on one file: the CSV row (a failure is a row with status 'failed')."""
    stream = plan.stream
    truth = adata.obs[plan.label_key]
    cfg, used_preset = _config_for(name, k=k, seed=seed, preset=plan.preset, sets=plan.sets)
    print(f"{tag} {path.stem} · {name} ({used_preset}) · seed {seed} …", file=stream, flush=True)
    row: dict[str, Any] = {"dataset": path.stem, "method": name, "preset": used_preset or "", "seed": seed,
                           "n_cells": adata.n_obs, "n_genes": adata.n_vars, "k": k, "error": ""}
    if plan.batch_key is not None:
        row.update(batch_key=plan.batch_key, integration=plan.integration or "harmony")
    t0 = time.perf_counter()
    try:
        with PeakRSS() as mem:  # with a batch key the annotation groups the batch ASW (scib's definition)
            res = get_method(name).fit(adata, cfg, callback=_StderrProgress(f"{path.stem}/{name}", stream),
                                       label_key=plan.label_key if plan.batch_key else None,
                                       batch_key=plan.batch_key, integration=plan.integration)
        codes = np.asarray(truth.astype("category").cat.codes)[res.cell_index]
        metric_warns: list[str] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnusableLabelsWarning)  # printed below instead
            m = evaluate(res.labels, truth=codes, embedding=res.embedding, warnings_out=metric_warns)
        row.update(k_found=res.n_clusters, ari=m["ari"], nmi=m["nmi"], ca=m["ca"], silhouette=m["silhouette"],
                   seconds=time.perf_counter() - t0, peak_rss_mb=mem.peak_mb, device=res.device, status=res.status)
        row.update({c: res.metrics.get(c, float("nan")) for c in BATCH_METRICS if plan.batch_key})
        batch = "".join(f"  {c} {_fmt(row[c])}" for c in BATCH_METRICS if c in row)
        print(f"    ARI {_fmt(m['ari'])}  NMI {_fmt(m['nmi'])}  CA {_fmt(m['ca'])}{batch}  "
              f"{row['seconds']:.1f} s  {mem.peak_mb:.0f} MB", file=stream, flush=True)
        for w in dict.fromkeys([*res.extras.get("warnings", []), *metric_warns]):
            print(f"    warning: {w}", file=stream, flush=True)
    except Exception as exc:  # a failing method must not sink the whole benchmark
        logger.exception("bench run failed")
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - t0)
        print(f"    FAILED: {row['error']}", file=stream, flush=True)
    return row


def run_bench(data: str | Path, methods: Iterable[str], *, seeds: int = 1, preset: str | None = None,
              sets: dict[str, str] | None = None, label_key: str = "cell_type", out: str | Path | None = None,
              stream: TextIO | None = None, batch_key: str | None = None,
              integration: str | None = None) -> list[dict[str, Any]]:
    """Run the benchmark; returns the rows (and appends them to ``out`` as CSV when given).

    ``batch_key`` (an obs column of each file): batch mixing (``BATCH_METRICS``) joins the rows, with
    ``integration`` (default ``harmony``; one every method can use). Progress goes to ``stream`` (default: the
    current ``sys.stderr``).
    """
    from .io import read

    if integration is not None and batch_key is None:
        raise ValueError(f"integration {integration!r} needs a batch key (--batch-key): the obs column that holds "
                         "each cell's sample/batch")
    methods, sets = list(methods), dict(sets or {})
    files = _check_args(data, methods, seeds, sets, out, integration)
    plan = _Plan(int(seeds), preset, sets, label_key, batch_key, integration,
                 stream if stream is not None else sys.stderr, bench_columns(batch_key))
    rows: list[dict[str, Any]] = []
    fh = open(out, "w", newline="") if out else None
    writer = csv.DictWriter(fh, fieldnames=plan.columns) if fh else None
    if writer:
        writer.writeheader()
    total, done = len(files) * len(methods) * plan.seeds, 0
    try:
        for path in files:
            adata = read(path)
            why = _usable(path, adata, plan)
            if why:
                print(f"skip {path.name}: {why}", file=plan.stream, flush=True)
                continue
            k = n_types(adata.obs[label_key])
            for name in methods:
                for seed in range(plan.seeds):
                    done += 1
                    row = _one_run(path, adata, name, seed, k, plan, f"[{done}/{total}]")
                    rows.append(row)
                    if writer and fh:
                        writer.writerow({c: row.get(c, "") for c in plan.columns})
                        fh.flush()
    finally:
        if fh:
            fh.close()
    return rows


def bench_columns(batch_key: str | None = None) -> list[str]:
    """The CSV columns: ``COLUMNS``, and with a batch key the key, the integration and ``BATCH_METRICS``."""
    if batch_key is None:
        return list(COLUMNS)
    at = COLUMNS.index("silhouette") + 1
    return [*COLUMNS[:at], "batch_key", "integration", *BATCH_METRICS, *COLUMNS[at:]]


def summarize(rows: list[dict[str, Any]]) -> str:
    """Markdown table: mean ± sd over seeds of ARI, NMI, CA (and batch mixing when measured) and seconds per
    dataset × method (× integration)."""
    import pandas as pd

    if not rows:
        return "(no results)"
    df = pd.DataFrame(rows)
    ok = df[df["status"].isin(["completed", "cancelled"])] if "status" in df else df
    batch = [c for c in BATCH_METRICS if c in df and c != "ilisi_scaled"]
    by = ["dataset", "method", *(["integration"] if "integration" in df else [])]
    heads = ["ARI", "NMI", "CA", *(_BATCH_HEADS[c] for c in batch), "seconds", "peak MB"]
    lines = ["| " + " | ".join([*by, "preset", "seeds", *heads]) + " |", "|---" * (len(by) + 2 + len(heads)) + "|"]
    for keys, g in df.groupby(by, sort=False):
        sel = np.ones(len(ok), dtype=bool)
        for col, val in zip(by, keys):
            sel &= (ok[col] == val).to_numpy()
        g_ok = ok[sel]
        lead = " | ".join(map(str, keys))
        if g_ok.empty:
            lines.append(f"| {lead} | {g['preset'].iloc[0]} | 0/{len(g)} | failed: {g['error'].iloc[0]} |"
                         + " |" * (len(heads) - 1))
            continue
        cells = [_mean_sd(g_ok[c]) for c in ("ari", "nmi", "ca", *batch)]
        cells += [_mean_sd(g_ok["seconds"], ".1f"), f"{g_ok['peak_rss_mb'].astype(float).max():.0f}"]
        lines.append(f"| {lead} | {g_ok['preset'].iloc[0]} | {len(g_ok)}/{len(g)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


_BATCH_HEADS = {"batch_asw": "batch ASW", "ilisi": "iLISI", "same_batch_share": "same-batch share"}


def _mean_sd(col, fmt: str = ".3f") -> str:
    """Mean ± sd (ddof 1) of a column, the mean alone for one value; n/a when every value is NaN."""
    v = col.astype(float)
    if v.isna().all():
        return "n/a"
    return f"{v.mean():{fmt}} ± {v.std(ddof=1):{fmt}}" if len(v) > 1 else f"{v.mean():{fmt}}"
