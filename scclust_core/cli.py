"""Command line: ``python -m scclust_core {methods,cluster,bench,demo}``."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

__all__ = ["main"]


def _pairs(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _cmd_methods(args) -> int:
    from .methods import describe_methods

    rows = describe_methods()
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        presets = ",".join(r["presets"])
        print(f"{r['name']:<{width}}  {r['summary']}  [{r['fidelity']}; presets: {presets}]")
    return 0


def _cmd_cluster(args) -> int:
    from . import io
    from .methods import get_method, run_method

    adata = io.read(args.input, transpose=args.transpose)
    method = get_method(args.method)
    cfg = method.default_config(args.preset)
    changes = _pairs(args.set)
    if args.n_clusters is not None:
        changes["n_clusters"] = str(args.n_clusters)
    if args.seed is not None:
        changes["seed"] = str(args.seed)
    if changes:
        cfg = cfg.set_from_strings(changes)
    record = args.runs_dir if args.runs_dir else False
    res = run_method(adata, args.method, cfg, preset=args.preset, key_added=args.key or args.method,
                     label_key=args.label_key, record=record, callback=_progress())
    io.write(adata, args.out)
    mets = ", ".join(f"{k}={v:.3f}" for k, v in res.metrics.items())
    n_k = res.n_clusters
    print(f"{args.method}: {n_k} cluster{'' if n_k == 1 else 's'} on {len(res.labels)} cells in {res.seconds:.1f} s "
          f"({mets}); labels in obs[{(args.key or args.method)!r}], written to {args.out}")
    for w in res.extras.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    return 0


def _progress():
    from .bench import _StderrProgress

    return _StderrProgress("train", sys.stderr, every_s=5.0)


def _cmd_bench(args) -> int:
    from .bench import run_bench, summarize

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    rows = run_bench(args.data, methods, seeds=args.seeds, preset=args.preset, sets=_pairs(args.set),
                     label_key=args.label_key, out=args.out)
    print(summarize(rows))
    if args.out:
        print(f"\nrows written to {args.out}", file=sys.stderr)
    return 0 if all(r.get("status") != "failed" for r in rows) else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m scclust_core", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log INFO messages")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("methods", help="list registered methods")

    c = sub.add_parser("cluster", help="cluster one file and write a labelled .h5ad")
    c.add_argument("input", help=".h5ad, 10x .h5, 10x mtx folder/.zip/.tar.gz, or CSV/TSV counts")
    c.add_argument("--method", required=True)
    c.add_argument("--n-clusters", type=int, default=None)
    c.add_argument("--preset", default=None)
    c.add_argument("--seed", type=int, default=None)
    c.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    c.add_argument("--label-key", default=None, help="reference annotation in obs (display metrics only)")
    c.add_argument("--key", default=None, help="obs/obsm/uns key for the results (default: method name)")
    c.add_argument("--runs-dir", default=None, help="write a run record under this directory")
    c.add_argument("--transpose", default=None, type=lambda s: s.lower() in ("1", "true", "yes"),
                   help="CSV/TSV only: true if rows are genes (default: detect)")
    c.add_argument("--out", required=True, help="output .h5ad")

    b = sub.add_parser("bench", help="benchmark methods on labelled .h5ad files")
    b.add_argument("--data", required=True, help="a .h5ad file or a folder of them")
    b.add_argument("--methods", required=True, help="comma-separated method names")
    b.add_argument("--seeds", type=int, default=1)
    b.add_argument("--preset", default=None, help="preset for methods that have it (others use their default)")
    b.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field where it exists")
    b.add_argument("--label-key", default="cell_type")
    b.add_argument("--out", default=None, help="CSV with one row per dataset × method × seed")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return {"methods": _cmd_methods, "cluster": _cmd_cluster, "bench": _cmd_bench}[args.command](args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
