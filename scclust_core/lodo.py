"""The honest protocol for ``recommend``'s choices: leave one dataset out.

Every choice recommend makes from data — here the consensus rule and which candidates it combines — is chosen
on six labelled files and scored on the seventh, for each of the seven; the mean of the seven held-out scores
is *the* figure, reported beside the in-sample one (the option best on all seven at once, which is what a rule
picked on all the shared files claims). Labels are used only to score: never by recommend itself, never to
choose anything for the file being scored.

The candidate partitions of a file (:func:`~scclust_core.methods.recommend.candidate_partitions`) are computed
once per seed and mode (K given = the annotated types that have cells; K estimated) and every option combines a
subset of them, so the protocol costs one recommend run per file × seed × mode plus the consensus steps.

``python -m scclust_core.lodo DATA_DIR [--seeds 3] [--out table.csv]`` runs it and prints both tables.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

__all__ = ["OPTIONS", "candidate_scores", "leave_one_out", "main"]

#: (candidate subset, consensus rule) pairs the protocol chooses among
SUBSETS = ("all", "leiden", "kmeans")


def _options() -> list[tuple[str, str]]:
    from .consensus import RULES

    return [(sub, rule) for sub in SUBSETS for rule in RULES]


OPTIONS = _options()


def _subset(names: list[str], which: str) -> np.ndarray:
    if which == "all":
        return np.arange(len(names))
    return np.array([i for i, n in enumerate(names) if n.startswith(which)], dtype=np.int64)


def candidate_scores(path: Path, seeds: Iterable[int], *, label_key: str = "cell_type") -> list[dict]:
    """ARI of every option on one file, per seed and mode (K given / K estimated)."""
    import anndata as ad

    from .consensus import consensus
    from .methods import get_method
    from .methods.recommend import candidate_partitions
    from .metrics import ari

    adata = ad.read_h5ad(path)
    truth = adata.obs[label_key]
    k_true = int(truth[truth.notna()].astype(str).nunique())
    m = get_method("recommend")
    rows = []
    for seed in seeds:
        for mode, k in (("K given", k_true), ("K estimated", None)):
            t0 = time.perf_counter()
            cfg = m.default_config(None, n_clusters=k, seed=seed)
            parts, names, kept = candidate_partitions(adata, cfg)
            t_cand = time.perf_counter() - t0
            for sub, rule in OPTIONS:
                rows_ = _subset(names, sub)
                if len(rows_) < 2 or (k is None and rule != "select"):
                    continue  # with K estimated every rule cuts the same dendrogram: one option per subset
                labels = consensus(parts[rows_], n_clusters=k, k_max=cfg.k_max, max_cells=cfg.max_cells, rule=rule,
                                   seed=seed).labels
                full = np.full(adata.n_obs, -1)
                full[kept] = labels  # cells the recipe dropped count as a cluster of their own (-1)
                rows.append({"file": path.stem, "seed": seed, "mode": mode, "subset": sub, "rule": rule,
                             "ari": float(ari(truth.astype(str).to_numpy(), full)), "candidate_s": t_cand})
            logger.info("%s seed %d %s: %d candidates in %.0f s", path.stem, seed, mode, len(names), t_cand)
    return rows


def leave_one_out(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(held_out, in_sample)``: per mode and file, the option chosen on the other files and its ARI there;
    and per mode the option best on all files with its per-file ARI."""
    mean = table.groupby(["mode", "file", "subset", "rule"], as_index=False)["ari"].mean()
    held, ins = [], []
    for mode, grp in mean.groupby("mode"):
        files = sorted(grp["file"].unique())
        for f in files:
            train = grp[grp["file"] != f].groupby(["subset", "rule"])["ari"].mean()
            sub, rule = train.idxmax()
            score = grp[(grp["file"] == f) & (grp["subset"] == sub) & (grp["rule"] == rule)]["ari"]
            held.append({"mode": mode, "file": f, "chosen": f"{sub} / {rule}", "ari": float(score.iloc[0])})
        best = grp.groupby(["subset", "rule"])["ari"].mean().idxmax()
        for f in files:
            score = grp[(grp["file"] == f) & (grp["subset"] == best[0]) & (grp["rule"] == best[1])]["ari"]
            ins.append({"mode": mode, "file": f, "chosen": f"{best[0]} / {best[1]}", "ari": float(score.iloc[0])})
    return pd.DataFrame(held), pd.DataFrame(ins)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scclust_core.lodo", description=__doc__.splitlines()[0])
    p.add_argument("data", help="a folder of labelled .h5ad files (obs[label_key])")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--label-key", default="cell_type")
    p.add_argument("--out", default=None, help="CSV of every option's ARI per file, seed and mode")
    args = p.parse_args(argv)
    if args.seeds < 1:
        print("error: --seeds must be at least 1", file=sys.stderr)
        return 2
    files = sorted(Path(args.data).glob("*.h5ad")) if Path(args.data).is_dir() else [Path(args.data)]
    if len(files) < 2:
        print("error: leave-one-dataset-out needs at least two labelled files", file=sys.stderr)
        return 2
    rows = [r for f in files for r in candidate_scores(f, range(args.seeds), label_key=args.label_key)]
    table = pd.DataFrame(rows)
    if args.out:
        table.to_csv(args.out, index=False)
    held, ins = leave_one_out(table)
    for name, t in (("held out (chosen on the other files)", held), ("in sample (chosen on all files)", ins)):
        print(f"\n{name}:\n{t.to_string(index=False)}")
        print(t.groupby("mode")["ari"].mean().round(3).to_string())
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
