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

__all__ = ["BenchRow", "run_bench", "summarize", "find_datasets", "PeakRSS", "COLUMNS", "n_types"]

COLUMNS = ["dataset", "method", "preset", "seed", "n_cells", "n_genes", "k", "k_found", "ari", "nmi", "ca",
           "silhouette", "seconds", "peak_rss_mb", "device", "status", "error"]


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
                out: str | Path | None) -> list[Path]:
    """Fail before any run: no seeds, unknown methods or --set keys, an output that is an input."""
    if int(seeds) < 1:
        raise ValueError(f"seeds must be at least 1 (got {seeds}): each seed is one run of each method")
    for name in methods:
        get_method(name)  # fail early on unknown names
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


def run_bench(data: str | Path, methods: Iterable[str], *, seeds: int = 1, preset: str | None = None,
              sets: dict[str, str] | None = None, label_key: str = "cell_type", out: str | Path | None = None,
              stream: TextIO | None = None) -> list[dict[str, Any]]:
    """Run the benchmark; returns the rows (and appends them to ``out`` as CSV when given).

    Progress goes to ``stream`` (default: the current ``sys.stderr``).
    """
    from .io import read

    stream = stream if stream is not None else sys.stderr
    methods, sets = list(methods), dict(sets or {})
    files = _check_args(data, methods, seeds, sets, out)
    rows: list[dict[str, Any]] = []
    writer = None
    fh = None
    if out:
        fh = open(out, "w", newline="")
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
    total = len(files) * len(methods) * seeds
    done = 0
    try:
        for path in files:
            adata = read(path)
            if label_key not in adata.obs:
                print(f"skip {path.name}: no obs[{label_key!r}]", file=stream, flush=True)
                continue
            truth = adata.obs[label_key]
            problem = label_problem(truth.to_numpy())
            if problem:  # K comes from the annotation and scores against it: neither is possible
                print(f"skip {path.name}: {problem}", file=stream, flush=True)
                continue
            k = n_types(truth)
            for name in methods:
                for seed in range(seeds):
                    done += 1
                    cfg, used_preset = _config_for(name, k=k, seed=seed, preset=preset, sets=sets)
                    print(f"[{done}/{total}] {path.stem} · {name} ({used_preset}) · seed {seed} …",
                          file=stream, flush=True)
                    row = {"dataset": path.stem, "method": name, "preset": used_preset or "", "seed": seed,
                           "n_cells": adata.n_obs, "n_genes": adata.n_vars, "k": k, "error": ""}
                    t0 = time.perf_counter()
                    try:
                        with PeakRSS() as mem:
                            res = get_method(name).fit(adata, cfg, callback=_StderrProgress(f"{path.stem}/{name}", stream))
                        codes = np.asarray(truth.astype("category").cat.codes)[res.cell_index]
                        metric_warns: list[str] = []
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore", UnusableLabelsWarning)  # printed below instead
                            m = evaluate(res.labels, truth=codes, embedding=res.embedding, warnings_out=metric_warns)
                        row.update(k_found=res.n_clusters, ari=m["ari"], nmi=m["nmi"], ca=m["ca"],
                                   silhouette=m["silhouette"], seconds=time.perf_counter() - t0,
                                   peak_rss_mb=mem.peak_mb, device=res.device, status=res.status)
                        print(f"    ARI {_fmt(m['ari'])}  NMI {_fmt(m['nmi'])}  CA {_fmt(m['ca'])}  "
                              f"{row['seconds']:.1f} s  {mem.peak_mb:.0f} MB", file=stream, flush=True)
                        for w in dict.fromkeys([*res.extras.get("warnings", []), *metric_warns]):
                            print(f"    warning: {w}", file=stream, flush=True)
                    except Exception as exc:  # a failing method must not sink the whole benchmark
                        logger.exception("bench run failed")
                        row.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                                   seconds=time.perf_counter() - t0)
                        print(f"    FAILED: {row['error']}", file=stream, flush=True)
                    rows.append(row)
                    if writer:
                        writer.writerow({c: row.get(c, "") for c in COLUMNS})
                        fh.flush()
    finally:
        if fh:
            fh.close()
    return rows


def summarize(rows: list[dict[str, Any]]) -> str:
    """Markdown table: mean ± sd over seeds of ARI, NMI, CA and seconds per dataset × method."""
    import pandas as pd

    if not rows:
        return "(no results)"
    df = pd.DataFrame(rows)
    ok = df[df["status"].isin(["completed", "cancelled"])] if "status" in df else df
    lines = ["| dataset | method | preset | seeds | ARI | NMI | CA | seconds | peak MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (ds, meth), g in df.groupby(["dataset", "method"], sort=False):
        g_ok = ok[(ok["dataset"] == ds) & (ok["method"] == meth)]
        if g_ok.empty:
            lines.append(f"| {ds} | {meth} | {g['preset'].iloc[0]} | 0/{len(g)} | failed: {g['error'].iloc[0]} | | | | |")
            continue

        def ms(col: str, fmt: str = ".3f") -> str:
            v = g_ok[col].astype(float)
            return f"{v.mean():{fmt}} ± {v.std(ddof=1):{fmt}}" if len(v) > 1 else f"{v.mean():{fmt}}"

        lines.append(f"| {ds} | {meth} | {g_ok['preset'].iloc[0]} | {len(g_ok)}/{len(g)} | {ms('ari')} | {ms('nmi')} | "
                     f"{ms('ca')} | {ms('seconds', '.1f')} | {g_ok['peak_rss_mb'].astype(float).max():.0f} |")
    return "\n".join(lines)
