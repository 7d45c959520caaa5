"""Command line: ``python -m scclust_core {methods,cluster,bench,demo}``."""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import tempfile
from pathlib import Path

__all__ = ["main", "MIN_SCALE_CELLS", "MAX_SCALE_CELLS"]

#: ``scale --cells`` bounds: fewer cells than this cannot be clustered; more than the maximum would build a
#: matrix (and an .h5ad) far past what the methods are benchmarked on and what one machine holds.
MIN_SCALE_CELLS, MAX_SCALE_CELLS = 10, 5_000_000


def _pairs(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        try:
            number = float(v)
        except ValueError:
            number = 0.0
        if not math.isfinite(number):
            raise ValueError(f"--set {k.strip()}={v.strip()}: must be a finite number (NaN and infinity are not "
                             "allowed)")
        out[k.strip()] = v.strip()
    return out


_TRUE, _FALSE, _AUTO = ("true", "yes", "1", "genes"), ("false", "no", "0", "cells"), ("auto", "detect", "guess")


def _transpose(text: str) -> bool | None:
    """Strict ``--transpose``: true/false (rows are genes / cells) or auto; anything else is an error."""
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    if low in _AUTO:
        return None
    raise argparse.ArgumentTypeError(
        f"--transpose expects true (rows are genes), false (rows are cells) or auto, got {text!r}")


def _header(text: str) -> bool | None:
    """Strict ``--header``: yes (the first line names the columns, even numbers), no (there is no header
    row) or auto (first line is the header; numbers there are refused as a probably missing header)."""
    low = text.strip().lower()
    for value, words in ((True, _TRUE), (False, _FALSE), (None, _AUTO)):
        if low in words and low not in ("genes", "cells"):
            return value
    raise argparse.ArgumentTypeError(
        f"--header expects yes (first line names the columns, e.g. numeric Entrez ids), no (no header row) or "
        f"auto, got {text!r}")


def _int_between(flag: str, lo: int, hi: int | None = None):
    """An argparse type: an integer in [lo, hi], so a bad count fails before any work."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} expects a whole number, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            bound = f"between {lo:,} and {hi:,}" if hi is not None else f"at least {lo:,}"
            raise argparse.ArgumentTypeError(f"{flag} must be {bound}, got {value:,}")
        return value
    return parse


def _check_out(out: Path, inputs: list[str]) -> None:
    """The output is an .h5ad (HDF5 in a .csv misleads every tool) and is not an input (it would be lost)."""
    from .bench import _same_file

    if out.suffix.lower() != ".h5ad":
        raise ValueError(f"--out '{out}' must end in .h5ad: the result is written as AnnData HDF5 "
                         f"(e.g. --out {out.with_suffix('.h5ad').name})")
    for src in inputs:
        if _same_file(out, src):
            raise ValueError(f"--out '{out}' is the input file: writing the result would overwrite the data it is "
                             "read from; choose another file name")


def _check_writable(path: Path, what: str) -> None:
    """Fail before training, not after, when the output cannot be written."""
    if path.is_dir():
        raise ValueError(f"{what} '{path}' is a directory: give a file name ending in .h5ad")
    if path.exists() and not path.is_file() and os.access(path, os.W_OK):
        return  # a device (/dev/null, a pipe) is written in place: its folder need not be writable
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".scclust_write_check_"):
            pass
    except OSError as exc:
        raise ValueError(f"{what} '{path}' is not writable ({exc.strerror or exc}): choose another location") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{what} '{path}' exists and is read-only: choose another file name")


def _check_finite_settings(cfg, keys) -> None:
    """NaN/inf pass range checks (every comparison with NaN is false), so refuse them by name."""
    for key in keys:
        value = getattr(cfg, key, None)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"--set {key}={value}: must be a finite number (NaN and infinity are not allowed)")


def _fmt_metric(k: str, v: float) -> str:
    return f"{k}=n/a" if v != v else f"{k}={v:.3f}"


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

    method = get_method(args.method)
    cfg = method.default_config(args.preset)
    changes = _pairs(args.set)
    if args.n_clusters is not None:
        changes["n_clusters"] = str(args.n_clusters)
    if args.seed is not None:
        changes["seed"] = str(args.seed)
    if changes:
        cfg = cfg.set_from_strings(changes)
        _check_finite_settings(cfg, changes)
    cfg.validate()
    out = Path(args.out)
    _check_writable(out, "--out")
    _check_out(out, [args.input])
    if args.runs_dir:
        _check_writable(Path(args.runs_dir) / "check", "--runs-dir")
    adata = io.read(args.input, transpose=args.transpose, header=args.header)
    report = io.read_report(adata)
    for line in (report.notes if report else []):
        print(f"read: {line}", file=sys.stderr)
    record = args.runs_dir if args.runs_dir else False
    res = run_method(adata, args.method, cfg, preset=args.preset, key_added=args.key or args.method,
                     label_key=args.label_key, record=record, callback=_progress())
    io.write(adata, args.out)
    mets = ", ".join(_fmt_metric(k, v) for k, v in res.metrics.items())
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


def _cmd_scale(args: argparse.Namespace) -> int:
    from . import io as scio
    from .scaling import resample_thinned

    _check_writable(Path(args.out), "--out")
    _check_out(Path(args.out), [args.data])
    out = resample_thinned(scio.read(args.data), args.cells, keep=args.keep, seed=args.seed)
    out.write_h5ad(args.out)
    print(f"{out.n_obs:,} cells × {out.n_vars:,} genes written to {args.out}")
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from . import io as scio
    from .methods import get_method
    from .profiling import format_profile, profile_fit

    adata = scio.read(args.data)
    cfg = get_method(args.method).Config.from_preset(args.preset, n_clusters=args.n_clusters)
    cfg = cfg.set_from_strings(_pairs(args.set))
    print(f"{args.method} ({args.preset or 'default preset'}) on {adata.n_obs:,} cells × {adata.n_vars:,} genes")
    print(format_profile(profile_fit(adata, args.method, cfg)))
    return 0


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
    c.add_argument("--transpose", default=None, type=_transpose, metavar="{true,false,auto}",
                   help="CSV/TSV only: true if rows are genes, false if rows are cells (default: auto, from the "
                        "names and totals; asks when they do not tell)")
    c.add_argument("--header", default=None, type=_header, metavar="{yes,no,auto}",
                   help="CSV/TSV only: yes if the first line names the columns even when it holds numbers (e.g. "
                        "Entrez gene ids), no if there is no header row, auto (default) to refuse a numeric header")
    c.add_argument("--out", required=True, help="output .h5ad")

    b = sub.add_parser("bench", help="benchmark methods on labelled .h5ad files")
    b.add_argument("--data", required=True, help="a .h5ad file or a folder of them")
    b.add_argument("--methods", required=True, help="comma-separated method names")
    b.add_argument("--seeds", type=_int_between("--seeds", 1), default=1, help="runs per method (at least 1)")
    b.add_argument("--preset", default=None, help="preset for methods that have it (others use their default)")
    b.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field where it exists")
    b.add_argument("--label-key", default="cell_type")
    b.add_argument("--out", default=None, help="CSV with one row per dataset × method × seed")

    s = sub.add_parser("scale", help="make a larger file for scale benchmarks: resampled cells, binomially thinned")
    s.add_argument("--data", required=True, help="a labelled .h5ad with raw counts in X")
    s.add_argument("--cells", type=_int_between("--cells", MIN_SCALE_CELLS, MAX_SCALE_CELLS), required=True,
                   help=f"cells in the output ({MIN_SCALE_CELLS:,} to {MAX_SCALE_CELLS:,})")
    s.add_argument("--keep", type=float, default=0.8, help="binomial thinning: share of each count kept")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="output .h5ad")

    f = sub.add_parser("profile", help="where a method's time goes: one fit under cProfile, in buckets")
    f.add_argument("--data", required=True, help="a .h5ad with raw counts")
    f.add_argument("--method", required=True)
    f.add_argument("--preset", default=None)
    f.add_argument("--n-clusters", type=int, default=None)
    f.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return {"methods": _cmd_methods, "cluster": _cmd_cluster, "bench": _cmd_bench,
                "scale": _cmd_scale, "profile": _cmd_profile}[args.command](args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory: the data or the model does not fit in this machine's memory; use a smaller "
              "file, fewer genes, or a smaller batch size", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}: check the paths, "
              "permissions and free disk space", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
