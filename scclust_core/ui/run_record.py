"""The training record of a run: curves, snapshot grid and player, run summaries and the runs table.

The panel of a job still training is in :mod:`.live_panel`; it shares the curves and headings defined here.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from .. import plots
from . import recommend_ui, state
from .common import md_text


def fmt_time(s: float | None) -> str:
    """Seconds as ``m:ss`` (``h:mm:ss`` from an hour), a dash when unknown."""
    if s is None or not np.isfinite(s):
        return "–"
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def clock(t: float | str | None) -> str:
    """A wall-clock time (UTC, as the run records store it): ``14:03:12 UTC``, with the date when not today."""
    from datetime import datetime, timezone

    if t is None or t == "":
        return "–"
    try:
        dt = datetime.fromtimestamp(t, timezone.utc) if isinstance(t, (int, float)) else datetime.fromisoformat(str(t))
    except (ValueError, OSError, OverflowError):
        return "–"
    dt = dt.astimezone(timezone.utc)
    today = datetime.now(timezone.utc).date()
    return dt.strftime("%H:%M:%S UTC") if dt.date() == today else dt.strftime("%Y-%m-%d %H:%M UTC")


def save_estimate(run_id: str, est: dict) -> None:
    """Keep the estimate shown before Start next to the run (workspace cache), to compare with the actual time."""
    state.workspace().write_cache(f"{run_id}_estimate.json", est)


def load_estimate(run_id: str) -> dict | None:
    got = state.workspace().read_cache(f"{run_id}_estimate.json", "json")  # None when absent or damaged
    return got if isinstance(got, dict) else None


def reference_for(snapshot_index, label_key: str | None):
    """The reference annotation of the snapshot cells (None without one, or when the index does not fit)."""
    ad = state.adata()
    if label_key is None or ad is None or label_key not in ad.obs or snapshot_index is None:
        return None
    idx = np.asarray(snapshot_index)
    if len(idx) == 0 or idx.max() >= ad.n_obs:
        return None
    return ad.obs[label_key].iloc[idx].reset_index(drop=True)


_NO_PICK = ("Labels are never used to pick the epoch: the result is the last epoch, as in the paper; "
            "the best epoch is marked for information only.")


def _loss_line(history) -> str:
    """The latest value of every plotted loss curve, named as in its legend, with its epoch."""
    last = history[-1]
    multi = len({h.phase for h in history}) > 1
    parts = [f"{k}{f' ({last.phase})' if multi else ''} {v:.4g}" for k, v in last.losses.items() if np.isfinite(v)]
    return f"Loss at epoch {last.epoch} ({last.phase}): " + (" · ".join(parts) or "not finite")


def _metric_cards(history, label_key: str | None) -> None:
    """One card per plotted score: its value at the latest scored epoch, the epoch in the label."""
    names = [("ari", "ARI"), ("nmi", "NMI"), ("silhouette", "Silhouette")]
    scored = {n: [h for h in history if np.isfinite(h.metrics.get(n, np.nan))] for n, _ in names}
    shown = [(n, lab) for n, lab in names if scored[n]]
    if not shown:
        return
    cols = st.columns(len(shown))
    for col, (name, label) in zip(cols, shown):
        pts = scored[name]
        cur = pts[-1].metrics[name]
        delta = f"{cur - pts[-2].metrics[name]:+.3f}" if len(pts) > 1 else None
        ref = f" vs {md_text(label_key)}" if label_key and name != "silhouette" else ""
        col.metric(f"{label}{ref} · epoch {pts[-1].epoch}", f"{cur:.3f}", delta,
                   help=f"the last point of the {label} curve below" + (
                       f"; the change is from epoch {pts[-2].epoch}" if len(pts) > 1 else ""))


def _best_final_line(history) -> str | None:
    for name, label in (("ari", "ARI"), ("nmi", "NMI"), ("silhouette", "silhouette")):
        bf = plots.best_and_final(history, name)
        if bf:
            (fe, fv), (be, bv) = bf["final"], bf["best"]
            best = f" · ★ best: epoch {be}, {label} {bv:.3f}" if be != fe else " (also the best epoch)"
            return f"◆ final: epoch {fe}, {label} {fv:.3f}{best}. {_NO_PICK}"
    return None


def snapshot_heading(n_taken: int, epochs_drawn: list[int], *, live: bool, finishing: bool) -> str:
    """What the grid shows, in numbers that match its panels."""
    n = len(epochs_drawn)
    text = f"**Embedding snapshots** — {n} panel{'s' if n != 1 else ''} (epoch{'s' if n != 1 else ''} " \
           f"{', '.join(map(str, epochs_drawn))})"
    if n < n_taken:
        text += f"; {n_taken} snapshots taken, all of them in the Player " + ("when the run ends" if live else "tab")
    if finishing:
        text += "; the final snapshot (final clusters) is being computed"
    elif live:
        text += "; more appear as training goes on"
    return text


def curve_figures(history, label_key: str | None) -> dict:
    """The loss and score figures of ``history`` (built once, shown by :func:`show_curves`)."""
    if not history:
        return {}
    figs = {"loss": plots.loss_curves(history)}
    if any(np.isfinite(h.metrics.get(k, np.nan)) for h in history for k in ("ari", "nmi", "silhouette", "ca")):
        figs["metrics"] = plots.metric_curves(history, title=metrics_title(label_key))
    return figs


def show_curves(history, figs: dict, *, label_key: str | None, key: str) -> None:
    """Metric cards, loss curves and score curves."""
    if not history:
        st.info("The loss and score curves appear after the first epoch.")
        return
    _metric_cards(history, label_key)
    c1, c2 = st.columns(2)
    c1.plotly_chart(figs["loss"], key=f"{key}_loss")
    c1.caption(_loss_line(history))
    if "metrics" in figs:
        c2.plotly_chart(figs["metrics"], key=f"{key}_metrics")
        line = _best_final_line(history)
        if line:
            c2.caption(line)
    else:
        c2.info("The score curve appears at the first scored epoch.")


#: The caption of the live curves image (the e2e test finds the image by it).
CURVES_CAPTION = "Loss and score curves during training (interactive when the run ends)"


def show_curves_image(history, png: bytes | None, *, label_key: str | None) -> None:
    """The live view's curves: the same metric cards and lines as :func:`show_curves`, the charts as one image
    (:mod:`scclust_core.curves_png`; the interactive charts open when the run ends)."""
    if not history or png is None:
        st.info("The loss and score curves appear after the first epoch.")
        return
    _metric_cards(history, label_key)
    st.image(png, caption=CURVES_CAPTION)
    lines = [_loss_line(history), _best_final_line(history)]
    st.caption("  \n".join(line for line in lines if line))


def metrics_title(label_key: str | None) -> str:
    """The title of the score chart: agreement with the reference, or the silhouette without one."""
    return f"ARI / NMI vs {label_key}" if label_key else "Silhouette of the current clusters"


def grid_legend(label_key: str | None, with_reference: bool) -> str:
    """What the rows of the snapshot grid are coloured by, for its heading."""
    return (f" — top: clusters at that epoch (colours matched across epochs); bottom: {md_text(label_key)}"
            if with_reference
            else " — clusters at that epoch (colours matched across epochs)")


def training_view(history, snapshots, snapshot_index, *, label_key: str | None, key: str) -> None:
    """Metrics, loss curves, score curves, and the snapshot grid and player of a finished run (interactive)."""
    show_curves(history, curve_figures(history, label_key), label_key=label_key, key=key)
    if not snapshots:
        return
    ref = reference_for(snapshot_index, label_key)
    drawn = [snapshots[i].epoch for i in plots.pick_snapshot_indices(len(snapshots))]
    st.markdown(snapshot_heading(len(snapshots), drawn, live=False, finishing=False)
                + grid_legend(label_key, ref is not None))
    t1, t2 = st.tabs(["Grid", f"Player ({len(snapshots)} snapshots, slider / play)"])
    with t1:
        st.plotly_chart(plots.snapshot_grid(snapshots, ref, reference_name=label_key or "reference"),
                        key=f"{key}_grid")
    with t2:
        color = "clusters"
        if ref is not None:
            color = st.radio("Colour by", ["clusters", label_key], horizontal=True, key=f"{key}_pcol",
                             format_func=md_text)  # radio options render Markdown
        st.plotly_chart(plots.snapshot_player(snapshots, ref, color_by=color, reference_name=label_key or ""),
                        key=f"{key}_player")


def run_summary(rec) -> None:
    """A finished (or failed/interrupted) run: status message, metrics, curves, snapshots."""
    m = rec.meta
    status = rec.status
    if status == "failed":
        st.error(f"Run {rec.run_id} failed: {md_text(m.get('error') or 'unknown error')}")
        return
    if status == "interrupted":
        st.warning(f"Run {rec.run_id} was interrupted (the server stopped while it was training); "
                   "start it again if you need it.")
        return
    if not rec.has_result:
        st.info(f"Run {rec.run_id}: {status}, no result stored.")
        return
    res = state.result(rec.run_id)
    msg = {"completed": st.success, "cancelled": st.warning}.get(status, st.info)
    mets = res.metrics
    parts = [f"{res.n_clusters} cluster{'' if res.n_clusters == 1 else 's'}", f"{res.seconds:.1f} s on {res.device}"]
    for k, lab in (("ari", "ARI"), ("nmi", "NMI"), ("ca", "accuracy"), ("silhouette", "silhouette")):
        if k in mets and mets[k] == mets[k]:
            parts.append(f"{lab} {mets[k]:.3f}")
    msg(f"**{res.method}** {'finished' if status == 'completed' else status}: " + " · ".join(parts))
    est = load_estimate(rec.run_id)
    if est and est.get("seconds"):
        ratio = res.seconds / est["seconds"] if est["seconds"] > 0 else float("nan")
        st.caption(f"Time: estimated {est['text'].split(' · ')[0]} before Start, took {fmt_time(res.seconds)} "
                   f"({ratio:.1f}× the estimate)" + (f"; peak memory estimate was {est['mib']:.0f} MiB" if est.get("mib") else ""))
    if res.extras.get("note"):
        st.caption(str(res.extras["note"]))
    for w in res.extras.get("warnings", []):
        st.warning(str(w))
    recommend_ui.consensus_report(res, key=f"rec_{rec.run_id}")  # only for consensus runs
    if res.history or res.snapshots:
        training_view(res.history, res.snapshots, res.snapshot_index, label_key=res.label_key, key=f"done_{rec.run_id}")
    else:
        st.caption("This method does not train for epochs, so there are no curves or snapshots; "
                   "see Explore for its clusters.")


def run_details(recs) -> None:
    """The latest run's summary, with a picker to look at any earlier run of this dataset."""
    by_id = {r.run_id: r for r in recs}
    rid = recs[0].run_id
    if len(recs) > 1:  # the key changes with each new run, so the newest is shown after a run
        rid = st.selectbox("Show the training record of", list(by_id), format_func=lambda i: state.run_label(by_id[i]),
                           key=f"cluster_show_{len(recs)}_{recs[0].run_id}")
    run_summary(by_id[rid])
    delete_run_button(by_id[rid])


#: batch-mixing columns of the runs table (shown when a run has a sample key) → their metric names
MIXING_COLUMNS = {"batch ASW": "batch_asw", "iLISI (scaled)": "ilisi_scaled", "same-sample share": "same_batch_share"}


def runs_table(recs, *, numeric: bool = False) -> pd.DataFrame:
    """One row per run. ``numeric``: scores as numbers (NaN when unknown, for sorting); otherwise text with a
    dash for what is not known yet and "training… epoch 12/40" for a run still training."""
    live = state.jobs()
    rows = []
    for r in recs:
        m = r.meta
        met = m.get("metrics") or {}
        job = live.get(r.run_id)
        snap = job.snapshot() if job is not None and job.running else None
        status = r.status
        if snap is not None:
            status = ("queued" if snap.status == "queued" else
                      f"training… epoch {snap.epoch}/{snap.total_epochs or '–'}" if snap.epoch else "preparing data…")
        secs = m.get("seconds")
        elapsed = snap.elapsed if snap is not None else (None if secs is None else float(secs))
        row = {"run": r.run_id, "method": m.get("method"), "preset": m.get("preset") or "", "status": status,
               "K": m.get("n_clusters"), "ARI": met.get("ari"), "NMI": met.get("nmi"), "CA": met.get("ca"),
               "silhouette": met.get("silhouette"), "time (s)": None if elapsed is None else round(elapsed, 1),
               "reference": m.get("label_key") or "", "started": clock(m.get("started_at"))}
        row.update({col: met.get(name) for col, name in MIXING_COLUMNS.items()})
        row["integration"] = f"{m.get('integration') or 'harmony'} by {m['batch_key']}" if m.get("batch_key") else ""
        rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty and df[list(MIXING_COLUMNS)].isna().all().all():  # no run on several samples: no such columns
        df = df.drop(columns=[*MIXING_COLUMNS, "integration"])
    if numeric or df.empty:
        for c in ("ARI", "NMI", "CA", "silhouette", "time (s)", "K", *MIXING_COLUMNS):
            if c in df:
                df[c] = pd.to_numeric(df[c], errors="coerce")
        return df
    return as_text(df)


def as_text(df: pd.DataFrame) -> pd.DataFrame:
    """Scores as 3-decimal text, K and time as whole/1-decimal text, a dash for unknown values."""
    out = df.copy()
    fmt = {"ARI": "{:.3f}", "NMI": "{:.3f}", "CA": "{:.3f}", "silhouette": "{:.3f}", "K": "{:.0f}", "time (s)": "{:.1f}",
           **{c: "{:.3f}" for c in MIXING_COLUMNS}}
    for c, f in fmt.items():
        if c in out:
            v = pd.to_numeric(out[c], errors="coerce")
            out[c] = [f.format(x) if np.isfinite(x) else "–" for x in v.to_numpy(dtype=float)]
    return out.fillna("–").replace("", "–")


def delete_run_button(rec) -> None:
    """"Delete run" with a confirmation step (a popover), for finished, failed or interrupted runs."""
    if rec.status in ("running", "queued"):
        return
    with st.popover("Delete this run", icon=":material/delete:"):
        st.markdown(f"Delete run `{rec.run_id}` ({rec.method}) with its labels, curves, renames and cached views? "
                    "This cannot be undone.")
        if st.button("Delete permanently", type="primary", key=f"delete_{rec.run_id}"):
            try:
                state.delete_run(rec.run_id)
            except ValueError as exc:
                st.error(str(exc))
                return
            st.toast(f"Deleted run {rec.run_id}")
            st.rerun()
