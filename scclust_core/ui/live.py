"""Live training panel (a ``run_every`` fragment while a job runs) and the view of a finished run."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from .. import plots
from ..jobs import TrainingJob
from . import recommend_ui, state


def _fmt_time(s: float | None) -> str:
    if s is None or not np.isfinite(s):
        return "–"
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _reference_for(snapshot_index, label_key: str | None):
    ad = state.adata()
    if label_key is None or ad is None or label_key not in ad.obs or snapshot_index is None:
        return None
    idx = np.asarray(snapshot_index)
    if len(idx) == 0 or idx.max() >= ad.n_obs:
        return None
    return ad.obs[label_key].iloc[idx].reset_index(drop=True)


def training_view(history, snapshots, snapshot_index, *, label_key: str | None, key: str, live: bool = False) -> None:
    """Metrics, loss curves, metric curves and snapshots (shared by the live panel and finished runs)."""
    last = history[-1] if history else None
    if last is not None:
        cols = st.columns(4)
        for i, (name, label) in enumerate([("ari", "ARI"), ("nmi", "NMI"), ("silhouette", "Silhouette")]):
            scored = [h for h in history if np.isfinite(h.metrics.get(name, np.nan))]  # latest scored epoch
            if scored:
                cur = scored[-1].metrics[name]
                delta = f"{cur - scored[-2].metrics[name]:+.3f}" if len(scored) > 1 else None
                cols[i].metric(label + (" vs " + label_key if label_key and name != "silhouette" else ""),
                               f"{cur:.3f}", delta, help=f"at epoch {scored[-1].epoch}")
        total = sum(v for v in last.losses.values() if np.isfinite(v))
        cols[3].metric(f"Loss ({last.phase})", f"{total:.4g}")
        c1, c2 = st.columns(2)
        c1.plotly_chart(plots.loss_curves(history), key=f"{key}_loss")
        c2.plotly_chart(plots.metric_curves(
            history, title=f"ARI / NMI vs {label_key}" if label_key else "Silhouette of the current clusters"),
            key=f"{key}_metrics")
    if snapshots:
        ref = _reference_for(snapshot_index, label_key)
        st.markdown(f"**Embedding snapshots** ({len(snapshots)}{' so far' if live else ''}) — top: clusters at that epoch"
                    + (f"; bottom: {label_key}" if ref is not None else ""))
        t1, t2 = st.tabs(["Grid", "Player (slider / play)"])
        with t1:
            st.plotly_chart(plots.snapshot_grid(snapshots, ref, reference_name=label_key or "reference"),
                            key=f"{key}_grid")
        with t2:
            color = "clusters"
            if ref is not None:
                color = st.radio("Colour by", ["clusters", label_key], horizontal=True, key=f"{key}_pcol")
            st.plotly_chart(plots.snapshot_player(snapshots, ref, color_by=color, reference_name=label_key or ""),
                            key=f"{key}_player")


def live_panel(job: TrainingJob) -> None:
    """Progress, curves and snapshots of a running job, refreshed every second until it ends."""

    @st.fragment(run_every=1.0 if job.running else None)
    def _panel():
        snap = job.snapshot()
        with st.container(border=True):
            head = st.columns([4, 1])
            head[0].markdown(f"### Training **{snap.method}** · {snap.status}")
            if snap.running and head[1].button("Cancel", key=f"cancel_{job.run_id}", type="secondary",
                                               help="Stop after the current epoch; the labels so far are kept"):
                job.cancel()
                st.toast("Cancelling after this epoch…")
            frac = min(1.0, snap.epoch / snap.total_epochs) if snap.total_epochs else 0.0
            text = (f"Epoch {snap.epoch}/{snap.total_epochs or '?'} · elapsed {_fmt_time(snap.elapsed)} · "
                    f"ETA {_fmt_time(snap.eta)}")
            if snap.status == "queued":
                ahead = snap.queue_position or 0
                text = (f"Queued: {ahead} training{'' if ahead == 1 else 's'} ahead on this server; it starts "
                        f"when one ends · waiting {_fmt_time(snap.elapsed)}")
            elif snap.running and snap.epoch == 0:
                text = f"Preparing data (preprocessing recipe)… elapsed {_fmt_time(snap.elapsed)}"
            st.progress(frac, text=text)
            if snap.method == "recommend" and snap.running:
                recommend_ui.candidate_progress(snap)
            info = [f"device: {snap.device}"]
            if snap.gpu_mem_gib is not None:
                info.append(f"GPU memory in use: {snap.gpu_mem_gib:.2f} GiB")
            if snap.info:
                info.append(f"{snap.info.get('n_cells', '?')} cells × {snap.info.get('n_genes', '?')} genes")
            st.caption(" · ".join(info))
            if snap.status == "failed":
                st.error(f"The run failed: {snap.error}")
            training_view(snap.history, snap.snapshots, snap.snapshot_index, label_key=job.label_key,
                          key=f"live_{job.run_id}", live=snap.running)
        done_key = f"_done_{job.run_id}"
        if not snap.running and not st.session_state.get(done_key):
            st.session_state[done_key] = True
            st.rerun()

    _panel()


def run_summary(rec) -> None:
    """A finished (or failed/interrupted) run: status message, metrics, curves, snapshots."""
    m = rec.meta
    status = rec.status
    if status == "failed":
        st.error(f"Run {rec.run_id} failed: {m.get('error') or 'unknown error'}")
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
    from .cluster_ui import delete_run_button  # a Delete button (with confirmation) under the shown run

    delete_run_button(by_id[rid])


def runs_table(recs) -> pd.DataFrame:
    rows = []
    for r in recs:
        m = r.meta
        met = m.get("metrics") or {}
        rows.append({"run": r.run_id, "method": m.get("method"), "preset": m.get("preset") or "",
                     "status": r.status, "K": m.get("n_clusters"), "ARI": met.get("ari"), "NMI": met.get("nmi"),
                     "CA": met.get("ca"), "silhouette": met.get("silhouette"),
                     "time (s)": None if m.get("seconds") is None else round(float(m["seconds"]), 1),
                     "reference": m.get("label_key") or "", "started": (m.get("started_at") or "").replace("T", " ")[:19]})
    return pd.DataFrame(rows)
