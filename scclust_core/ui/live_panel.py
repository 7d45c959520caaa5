"""The panel of a job still training: progress every couple of seconds, curves and a snapshot grid that are
rebuilt only when something new arrived, so that watching a training does not slow it down."""
from __future__ import annotations

import time

import streamlit as st

from .. import plots
from ..jobs import TrainingJob
from ..methods import kind_of
from . import recommend_ui
from .common import md_text
from .run_record import fmt_time, grid_legend, reference_for, clock, load_estimate, metrics_title, show_curves_image, \
    snapshot_heading

__all__ = ["live_panel", "views_due", "views_version", "build_live_views", "tick_s", "TICK_S", "SLOW_TICK_S",
           "FAST_TICKS_FOR_S", "VIEWS_MIN_INTERVAL_S", "SLOW_VIEWS_INTERVAL_S", "VIEWS_COST_FACTOR"]

#: The live panel reruns every this many seconds (progress, ETA) for the first FAST_TICKS_FOR_S seconds of a run,
#: then every SLOW_TICK_S. Each rerun costs the browser 0.1–0.2 CPU-seconds whatever it shows (measured with CDP
#: on the 2-core machine), a steady 5–10 % of a core at 2 s that a long training on every core pays for; a
#: progress bar of a run of minutes loses nothing by moving every 5 s. (The Cancel button answers at once.)
TICK_S, SLOW_TICK_S, FAST_TICKS_FOR_S = 2.0, 5.0, 30.0
#: Its curves and snapshot grid are rebuilt only when a new epoch or snapshot arrived, at most every this many
#: seconds and at least this many times their own drawing time apart; in between, the last drawing is shown
#: again. Rebuilt every second, as interactive Plotly grids, they took more CPU than the training they showed
#: (measured on 2 cores, app and Chromium on the machine, contrastive-sc on 1,000 cells: browser 25 s + server
#: 11 s of CPU during a 28 s run, 3.2× the direct fit).
VIEWS_MIN_INTERVAL_S = 5.0
#: ... and after FAST_TICKS_FOR_S seconds at most every this many (a rebuild costs the browser 0.2–0.4 CPU-s).
SLOW_VIEWS_INTERVAL_S = 10.0
VIEWS_COST_FACTOR = 20.0


def _slowed(elapsed: float) -> bool:
    """Past a run's first FAST_TICKS_FOR_S seconds: the panel reruns and rebuilds its views less often."""
    return elapsed >= FAST_TICKS_FOR_S


def tick_s(elapsed: float) -> float:
    """Seconds between two reruns of the live panel, ``elapsed`` seconds into the run."""
    return SLOW_TICK_S if _slowed(elapsed) else TICK_S


def views_version(snap) -> tuple:
    """What the curves and snapshots show: they are rebuilt only when this changes."""
    return len(snap.history), len(snap.snapshots), snap.status


def views_due(drawn: dict | None, version: tuple, now: float, *, elapsed: float = 0.0) -> bool:
    """Rebuild the views now? Only when they changed, and not sooner than the interval after the last build
    (longer ``elapsed`` seconds into a run, as the tick is)."""
    if drawn is None:
        return True
    if drawn["version"] == version:
        return False
    interval = SLOW_VIEWS_INTERVAL_S if _slowed(elapsed) else VIEWS_MIN_INTERVAL_S
    return now - drawn["t"] >= max(interval, VIEWS_COST_FACTOR * drawn["cost"])


def build_live_views(snap, label_key: str | None) -> dict:
    """Curves and the snapshot grid as PNGs (:mod:`scclust_core.curves_png`, :mod:`scclust_core.snapshot_png`: an
    image costs the browser little to draw and nothing to show again), with what the heading says about them and
    the time the build took."""
    from ..curves_png import curves_png
    from ..snapshot_png import snapshot_grid_png

    t0 = time.perf_counter()
    out = {"version": views_version(snap), "history": snap.history,
           "curves_png": curves_png(snap.history, metrics_title=metrics_title(label_key)),
           "png": None, "n_taken": len(snap.snapshots), "epochs": [], "with_reference": False}
    if snap.snapshots:
        ref = reference_for(snap.snapshot_index, label_key)
        out["png"] = snapshot_grid_png(snap.snapshots, ref, reference_name=label_key or "reference")
        out["epochs"] = [snap.snapshots[i].epoch for i in plots.pick_snapshot_indices(len(snap.snapshots))]
        out["with_reference"] = ref is not None
    out["t"], out["cost"] = time.time(), time.perf_counter() - t0
    return out


def _show_live_views(views: dict, *, label_key: str | None, finishing: bool) -> None:
    show_curves_image(views["history"], views["curves_png"], label_key=label_key)
    if views["png"] is None:
        return
    st.markdown(snapshot_heading(views["n_taken"], views["epochs"], live=True, finishing=finishing)
                + grid_legend(label_key, views["with_reference"]))
    st.image(views["png"], caption="Embedding snapshots during training (PCA of the latent space)")
    st.caption(f"The interactive curves, grid and player (every snapshot, slider and play button) open when the "
               f"run ends. Curves and snapshots are redrawn when a new epoch arrives, at most every "
               f"{VIEWS_MIN_INTERVAL_S:.0f} s ({SLOW_VIEWS_INTERVAL_S:.0f} s after the first "
               f"{FAST_TICKS_FOR_S:.0f} s), so that drawing them does not slow the training down.")


def _progress_text(snap) -> str:
    started = f"started {clock(snap.started)} · elapsed {fmt_time(snap.elapsed)}"
    if not snap.running:
        return f"{snap.status} · epoch {snap.epoch}/{snap.total_epochs or '–'} · {started}"
    if snap.status == "queued":
        ahead = snap.queue_position or 0
        return (f"queued: {ahead} training{'' if ahead == 1 else 's'} ahead on this server; it starts when "
                f"one ends · {started}")
    if snap.epoch == 0:
        return f"preparing the data (preprocessing recipe)… · {started}"
    if snap.total_epochs and snap.epoch >= snap.total_epochs:
        return f"last epoch done: computing the final clusters and snapshot… · {started}"
    return f"training… epoch {snap.epoch}/{snap.total_epochs or '–'} · {started} · ETA {fmt_time(snap.eta)}"


def _progress(job: TrainingJob, snap) -> None:
    """Title, cancel button, progress bar with ETA, device line and errors of a running job."""
    head = st.columns([4, 1])
    head[0].markdown(f"### Training **{snap.method}** · {snap.status}")
    if snap.running and head[1].button("Cancel", key=f"cancel_{job.run_id}", type="secondary",
                                       help="Stop after the current epoch; the labels so far are kept"):
        job.cancel()
        st.toast("Cancelling after this epoch…")
    frac = min(1.0, snap.epoch / snap.total_epochs) if snap.total_epochs else 0.0
    st.progress(frac, text=_progress_text(snap))
    if snap.running and kind_of(snap.method) == "consensus":
        recommend_ui.candidate_progress(snap)
    info = [f"device: {snap.device}"]
    if snap.gpu_mem_gib is not None:
        info.append(f"GPU memory in use: {snap.gpu_mem_gib:.2f} GiB")
    if snap.info:
        info.append(f"{snap.info.get('n_cells', '?')} cells × {snap.info.get('n_genes', '?')} genes")
    st.caption(" · ".join(info))
    if snap.status == "failed":
        st.error(f"The run failed: {md_text(snap.error)}")
    est = load_estimate(job.run_id)
    if est:
        st.caption(f"Estimated before Start: {est['text']}")


def live_panel(job: TrainingJob) -> None:
    """A running job: progress every :func:`tick_s` seconds; curves and snapshots rebuilt only when due
    (:func:`views_due`) and shown again from the last build in between. When the job ends, or the tick slows
    down, the page reruns (to show the finished run, or to set the fragment's new interval)."""
    views_key = f"_views_{job.run_id}"
    every = tick_s(job.snapshot().elapsed) if job.running else None

    @st.fragment(run_every=every)
    def _panel():
        snap = job.snapshot()
        with st.container(border=True):
            _progress(job, snap)
            views = st.session_state.get(views_key)
            if views_due(views, views_version(snap), time.time(), elapsed=snap.elapsed):
                views = st.session_state[views_key] = build_live_views(snap, job.label_key)
            _show_live_views(views, label_key=job.label_key,
                             finishing=bool(snap.running and snap.total_epochs and snap.epoch >= snap.total_epochs))
        done_key = f"_done_{job.run_id}"
        if not snap.running and not st.session_state.get(done_key):
            st.session_state[done_key] = True
            st.rerun()
        if snap.running and every is not None and tick_s(snap.elapsed) != every:
            st.rerun()  # once per run: the whole page, so that the fragment is declared with the slower tick

    _panel()
