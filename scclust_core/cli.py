"""Command line: ``python -m scclust_core {methods,cluster,annotate,bench,scale,profile}``."""
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


_BATCH_METRICS = ("batch_asw", "ilisi", "ilisi_scaled", "same_batch_share")


def _cluster_config(args):
    """The method's config from --preset, --set, --n-clusters and --seed, validated."""
    from .methods import get_method

    cfg = get_method(args.method).default_config(args.preset)
    changes = _pairs(args.set)
    if args.n_clusters is not None:
        changes["n_clusters"] = str(args.n_clusters)
    if args.seed is not None:
        changes["seed"] = str(args.seed)
    if changes:
        cfg = cfg.set_from_strings(changes)
        _check_finite_settings(cfg, changes)
    cfg.validate()
    return cfg


def _subset_arg(text: str) -> tuple[str, list[str]]:
    """``--subset KEY=LABEL[,LABEL…]`` as (key, labels)."""
    key, sep, rest = text.partition("=")
    labels = [v.strip() for v in rest.split(",") if v.strip()]
    if not sep or not key.strip() or not labels:
        raise argparse.ArgumentTypeError(f"--subset expects KEY=LABEL[,LABEL...] (e.g. leiden=3,5), got {text!r}")
    return key.strip(), labels


def _check_cluster_flags(args) -> None:
    """Combinations of the several-samples flags that cannot work, refused before anything is read."""
    from .methods import get_method

    several = len(args.input) > 1
    if args.join is not None and not several:
        raise ValueError("--join applies to several inputs (inner: the genes every file has; outer: all genes)")
    if args.subset is None and args.subset_mode is not None:
        raise ValueError("--subset-mode needs --subset KEY=LABEL[,LABEL...]")
    if args.subset is not None:
        if several:
            raise ValueError("--subset works on one input that already holds the clusters to split (a `cluster` "
                             "output): cluster the samples together first, then subcluster that file")
        if args.batch_key or args.integrate:
            raise ValueError("--subset does not integrate samples: drop --batch-key/--integrate (subcluster an "
                             "integrated run with --subset-mode reuse, which keeps its corrected embedding)")
    batch_key = args.batch_key or ("sample" if several else None)
    if args.integrate not in (None, "none") and batch_key is None:
        raise ValueError(f"--integrate {args.integrate} needs --batch-key: the obs column that holds each cell's "
                         "sample/batch (several inputs get obs['sample'] and use it by default)")
    method = get_method(args.method)
    if batch_key is not None and (args.integrate or "harmony") not in method.integrations:
        raise ValueError(f"{args.method} cannot use --integrate {args.integrate or 'harmony'}; it can use: "
                         f"{', '.join(method.integrations)}")


def _read_inputs(args):
    """One input through io.read, several through samples.read_many (obs['sample'] = each file's name)."""
    from . import io
    from .samples import read_many

    if len(args.input) == 1:
        adata = io.read(args.input[0], transpose=args.transpose, header=args.header)
    else:
        adata = read_many(args.input, join=args.join or "inner", transpose=args.transpose, header=args.header)
        info = adata.uns.get("scclust_samples", {})
        counts = ", ".join(f"{n} {c:,}" for n, c in zip(info.get("samples", []), info.get("n_cells", [])))
        print(f"read: {len(args.input)} samples in obs['sample'] ({counts} cells), {adata.n_vars:,} genes "
              f"({args.join or 'inner'} join)", file=sys.stderr)
    report = io.read_report(adata)
    for line in (report.notes if report else []):
        print(f"read: {line}", file=sys.stderr)
    return adata


def _check_cluster_data(adata, args, cfg, batch_key: str | None) -> None:
    """What needs the data but no training: the batch key, the subset, the annotation column."""
    from .integrate import check_batches
    from .subcluster import check_subset

    if batch_key is not None:
        check_batches(adata, batch_key, integration=args.integrate or "harmony")
    if args.subset is not None:
        check_subset(adata, args.subset[0], args.subset[1], n_clusters=cfg.n_clusters)
    if args.label_key is not None and args.label_key not in adata.obs:
        raise ValueError(f"--label-key {args.label_key!r} is not in obs; columns: "
                         f"{', '.join(map(str, adata.obs.columns[:12])) or 'none'}")


def _doublets(adata, mode: str, batch_key: str | None):
    """``--doublets flag``: Scrublet per sample, both columns kept; ``remove``: the predicted doublets dropped."""
    from .samples import drop_doublets, flag_doublets

    if mode == "off":
        return adata
    table = flag_doublets(adata, batch_key=batch_key)
    per = ", ".join(f"{r.sample} {int(r.doublets)}/{int(r.cells):,}" for r in table.itertuples()) if batch_key else ""
    n = int(table["doublets"].sum())
    print(f"doublets: {n:,} of {adata.n_obs:,} cells predicted{f' ({per})' if per else ''}; obs['doublet_score'] "
          "and obs['predicted_doublet']", file=sys.stderr)
    if mode == "remove":
        adata = drop_doublets(adata)
        print(f"doublets: removed {n:,} predicted doublets before clustering; {adata.n_obs:,} cells left")
    return adata


def _cmd_cluster(args) -> int:
    from . import io

    cfg = _cluster_config(args)
    _check_cluster_flags(args)
    out = Path(args.out)
    _check_writable(out, "--out")
    _check_out(out, list(args.input))
    if args.runs_dir:
        _check_writable(Path(args.runs_dir) / "check", "--runs-dir")
    batch_key = args.batch_key or ("sample" if len(args.input) > 1 else None)
    adata = _read_inputs(args)
    _check_cluster_data(adata, args, cfg, batch_key)
    adata = _doublets(adata, args.doublets, batch_key)
    if args.subset is not None:
        key, res = _run_subset(adata, args, cfg)
    else:
        from .methods import run_method

        key = args.key or args.method
        res = run_method(adata, args.method, cfg, preset=args.preset, key_added=key, label_key=args.label_key,
                         record=args.runs_dir if args.runs_dir else False, callback=_progress(),
                         batch_key=batch_key, integration=args.integrate if batch_key else None)
    io.write(adata, args.out)
    _print_result(args, res, key)
    return 0


def _run_subset(adata, args, cfg):
    """``--subset``: subcluster the named clusters, every other cell keeping its label."""
    from .subcluster import subcluster

    key, labels = args.subset
    key_added = args.key or f"{key}_sub"
    res = subcluster(adata, args.method, subset=(key, labels), mode=args.subset_mode or "recompute",
                     preset=args.preset, config=cfg, key_added=key_added, callback=_progress(),
                     label_key=args.label_key)
    print(f"subset: obs[{key!r}] {', '.join(labels)} ({res.n_input_cells:,} cells), mode "
          f"{args.subset_mode or 'recompute'}; every other cell keeps its label")
    return key_added, res


def _print_result(args, res, key: str) -> None:
    """The summary line: clusters, cells, seconds, ARI/NMI and batch mixing beside them, where the labels are."""
    order = sorted(res.metrics, key=lambda k: (k in _BATCH_METRICS, k not in ("ari", "nmi")))
    mets = ", ".join(_fmt_metric(k, res.metrics[k]) for k in order)
    n_k = res.n_clusters
    print(f"{args.method}: {n_k} cluster{'' if n_k == 1 else 's'} on {len(res.labels)} cells in {res.seconds:.1f} s "
          f"({mets or 'no metrics'}); labels in obs[{key!r}], written to {args.out}")
    integ = res.extras.get("integration")
    if isinstance(integ, dict):
        print(f"samples: obs[{integ.get('batch_key')!r}] ({len(integ.get('batches', []))} batches), integration "
              f"{integ.get('method')}")
        for note in integ.get("notes", []):
            print(f"note: {note}", file=sys.stderr)
    for w in [*res.extras.get("warnings", []), *res.extras.get("batch_warnings", [])]:
        print(f"warning: {w}", file=sys.stderr)


def _progress():
    from .bench import _StderrProgress

    return _StderrProgress("train", sys.stderr, every_s=5.0)


def _cmd_bench(args) -> int:
    from .bench import run_bench, summarize

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    rows = run_bench(args.data, methods, seeds=args.seeds, preset=args.preset, sets=_pairs(args.set),
                     label_key=args.label_key, out=args.out, batch_key=args.batch_key, integration=args.integrate)
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


def _check_annotate_flags(args) -> None:
    """Markers or a reference (not both, not neither), and what each needs; the outputs; before any read."""
    if (args.markers is None) == (args.reference is None):
        raise ValueError("annotate needs either --markers FILE.csv|FILE.gmt|bundled:NAME (name clusters) or "
                         "--reference REF.h5ad --reference-key LABELS (label cells from a reference), not both")
    if args.markers is not None and args.groupby is None:
        raise ValueError("--markers names clusters: give --groupby KEY, the obs column of the clusters (e.g. leiden)")
    if args.reference is not None and args.reference_key is None:
        raise ValueError("--reference needs --reference-key: the obs column of the reference's cell types")
    if args.reference is None and args.reference_key is not None:
        raise ValueError("--reference-key needs --reference REF.h5ad")
    if not (math.isfinite(args.min_margin) and args.min_margin >= 0):
        raise ValueError(f"--min-margin must be a finite number ≥ 0, got {args.min_margin}")
    out = Path(args.out)
    _check_writable(out, "--out")
    _check_out(out, [args.input, *([args.reference] if args.reference else [])])


def _marker_sets(spec: str):
    """``bundled:NAME`` or a CSV/TSV/GMT file, read before the data."""
    from .annotate import bundled_marker_sets, load_bundled, read_marker_sets

    if spec.startswith("bundled:"):
        return load_bundled(spec.split(":", 1)[1].strip())
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"--markers '{spec}' is not a file: give a CSV (cell_type,gene[,weight]), a GMT file, or a "
                         f"bundled set ({', '.join('bundled:' + n for n in bundled_marker_sets())})")
    return read_marker_sets(path)


def _table(df, columns: list[str]) -> str:
    """A plain-text table of some columns (floats to 3 decimals)."""
    show = df[[c for c in columns if c in df]].copy()
    for c in show.columns:
        if show[c].dtype.kind == "f":
            show[c] = show[c].map(lambda v: "n/a" if v != v else f"{v:.3f}")
    return show.to_string(index=False)


def _cmd_annotate(args) -> int:
    from . import io

    _check_annotate_flags(args)
    markers = _marker_sets(args.markers) if args.markers is not None else None
    adata = io.read(args.input)
    if args.groupby is not None and args.groupby not in adata.obs:
        raise ValueError(f"--groupby {args.groupby!r} is not in obs of '{args.input}'; columns: "
                         f"{', '.join(map(str, adata.obs.columns[:12])) or 'none'}")
    if markers is not None:
        _annotate_markers(adata, args, markers)
    else:
        _annotate_reference(adata, args, io.read(args.reference))
    io.write(adata, args.out)
    print(f"written to {args.out}")
    return 0


def _annotate_markers(adata, args, markers) -> None:
    from .annotate import UNASSIGNED, apply_names, propose_names

    table = propose_names(adata, args.groupby, markers, min_margin=args.min_margin, scoring=args.scoring)
    key = apply_names(adata, args.groupby, table)
    print(_table(table, ["cluster", "proposed", "score", "second_type", "margin", "n_cells", "supporting_markers"]))
    named = int((table["proposed"] != UNASSIGNED).sum())
    print(f"{markers.source}: {named} of {len(table)} clusters named (the others {UNASSIGNED}: no positive score "
          f"or a margin under {args.min_margin}); obs[{key!r}], obs[{key + '_score'!r}] and the evidence in "
          f"uns[{key!r}]")
    missing = {t: g for t, g in table.attrs.get("missing", {}).items() if g}
    if missing:
        n = sum(len(g) for g in missing.values())
        print(f"note: {n} marker genes are not in the data (e.g. {', '.join(next(iter(missing.values()))[:3])})",
              file=sys.stderr)


def _annotate_reference(adata, args, reference) -> None:
    from .annotate import transfer_labels

    tr = transfer_labels(adata, reference, args.reference_key, method=args.transfer_method)
    adata.obs["transferred_type"] = _categorical(tr.labels)
    adata.obs["transferred_type_confidence"] = tr.confidence.to_numpy(dtype=float)
    info = {"reference": Path(args.reference).name, "reference_key": args.reference_key,
            "method": args.transfer_method, "n_shared_genes": int(tr.n_shared_genes), "notes": list(tr.notes),
            "reference_types_unused": list(tr.reference_types_unused)}
    if args.groupby is not None:
        per = tr.per_cluster(adata.obs[args.groupby])
        print(_table(per, ["cluster", "majority", "purity", "mean_confidence", "n_cells"]))
        info["per_cluster"] = {c: per[c].to_numpy(dtype=object).astype(str) if per[c].dtype == object
                               else per[c].to_numpy() for c in per.columns}
    adata.uns["transferred_type"] = {k: v for k, v in info.items() if v != []}
    counts = tr.labels.value_counts()
    print(f"{adata.n_obs:,} cells labelled from obs[{args.reference_key!r}] of '{Path(args.reference).name}' "
          f"({args.transfer_method}; {tr.n_shared_genes:,} shared genes): "
          f"{', '.join(f'{t} {n:,}' for t, n in counts.items() if n)}; obs['transferred_type'] and "
          "obs['transferred_type_confidence']")
    if tr.reference_types_unused:
        print(f"note: reference types given to no cell: {', '.join(tr.reference_types_unused)}", file=sys.stderr)


def _categorical(labels):
    """Labels as a plain categorical array (the transfer's index is the query's obs names)."""
    import pandas as pd

    return pd.Categorical(labels.astype(str).to_numpy())


def _annotate_parser(sub) -> None:
    from .annotate import DEFAULT_MIN_MARGIN

    a = sub.add_parser("annotate", help="name clusters from marker sets, or label cells from a labelled reference")
    a.add_argument("input", help="a .h5ad (or any format `cluster` reads) holding the cells to name")
    a.add_argument("--groupby", default=None, help="obs column of the clusters to name (needed with --markers; "
                                                   "with --reference it adds a per-cluster table)")
    a.add_argument("--markers", default=None, metavar="FILE.csv|FILE.gmt|bundled:NAME",
                   help="marker sets: CSV cell_type,gene[,weight], GMT, or a bundled set (bundled:human_immune, "
                        "bundled:mouse_pancreas, …)")
    a.add_argument("--min-margin", type=float, default=DEFAULT_MIN_MARGIN,
                   help="a cluster is named only when its best type beats the second by this much (else unassigned)")
    a.add_argument("--scoring", default="zscore", choices=("zscore", "score_genes"))
    a.add_argument("--reference", default=None, help="a labelled .h5ad of the same species")
    a.add_argument("--reference-key", default=None, help="obs column of the reference's cell types")
    a.add_argument("--transfer-method", default="knn_pca", choices=("knn_pca", "ingest"),
                   help="knn_pca (default: weighted vote of the nearest reference cells, with a confidence) or "
                        "scanpy's ingest (no confidence)")
    a.add_argument("--out", required=True, help="output .h5ad")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m scclust_core", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log INFO messages")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("methods", help="list registered methods")

    c = sub.add_parser("cluster", help="cluster one file (or several samples together) and write a labelled .h5ad")
    c.add_argument("input", nargs="+", help=".h5ad, 10x .h5, 10x mtx folder/.zip/.tar.gz, or CSV/TSV counts; "
                                            "several files are joined, each file's name in obs['sample']")
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
    _samples_args(c)
    c.add_argument("--out", required=True, help="output .h5ad")

    b = sub.add_parser("bench", help="benchmark methods on labelled .h5ad files")
    b.add_argument("--data", required=True, help="a .h5ad file or a folder of them")
    b.add_argument("--methods", required=True, help="comma-separated method names")
    b.add_argument("--seeds", type=_int_between("--seeds", 1), default=1, help="runs per method (at least 1)")
    b.add_argument("--preset", default=None, help="preset for methods that have it (others use their default)")
    b.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field where it exists")
    b.add_argument("--label-key", default="cell_type")
    b.add_argument("--batch-key", default=None, help="obs column of each cell's sample/batch: batch mixing "
                                                     "(batch ASW, iLISI, same-batch share) joins the rows")
    b.add_argument("--integrate", default=None, choices=_INTEGRATIONS,
                   help="with --batch-key: how to integrate the batches (default harmony)")
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
    _annotate_parser(sub)
    return p


_INTEGRATIONS = ("none", "harmony", "combat", "bbknn")


def _samples_args(c: argparse.ArgumentParser) -> None:
    """``cluster``'s options for several samples, doublets and subclustering."""
    c.add_argument("--batch-key", default=None, help="obs column of each cell's sample/batch (default: 'sample' "
                                                     "when several inputs are given)")
    c.add_argument("--integrate", default=None, choices=_INTEGRATIONS,
                   help="how to integrate the batches (default: harmony when there is a batch key)")
    c.add_argument("--join", default=None, choices=("inner", "outer"),
                   help="several inputs: the genes every file has (inner, default) or all genes, zeros where "
                        "missing (outer)")
    c.add_argument("--doublets", default="off", choices=("flag", "remove", "off"),
                   help="Scrublet per sample: flag (obs['doublet_score'], obs['predicted_doublet']), remove "
                        "(drop them before clustering) or off (default)")
    c.add_argument("--subset", default=None, type=_subset_arg, metavar="KEY=LABEL[,LABEL...]",
                   help="subcluster these clusters of obs[KEY] (the input must hold KEY); every other cell keeps "
                        "its label; the result goes to obs[KEY + '_sub'] unless --key is given")
    c.add_argument("--subset-mode", default=None, choices=("recompute", "reuse"),
                   help="recompute (default: the method's own preprocessing on the subset) or reuse (cluster the "
                        "parent run's embedding obsm['X_' + KEY]; classic methods and recommend)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return {"methods": _cmd_methods, "cluster": _cmd_cluster, "bench": _cmd_bench,
                "scale": _cmd_scale, "profile": _cmd_profile, "annotate": _cmd_annotate}[args.command](args)
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
