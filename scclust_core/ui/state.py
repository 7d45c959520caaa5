"""Session/workspace state for the app: typed getters over ``st.session_state`` backed by the workspace on disk.

The workspace id lives in the URL (``?ws=<id>``): a refresh or a server restart reopens the same workspace (dataset,
edits, runs are reloaded from disk), a browser session without the parameter (or with an id that names no
workspace) gets a new random one. Nothing is written for a page view: the workspace directory appears with the
first upload. Durable things are on disk; ``session_state`` only caches them (the loaded AnnData, loaded results,
2-D views).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pandas as pd
import streamlit as st
from anndata import AnnData

from .. import jobs as _jobs
from ..runs import RunRecord, load_result
from ..workspace import Workspace, sweep_idle

logger = logging.getLogger(__name__)

K_WS = "_scclust_ws"
K_ADATA = "_scclust_adata"  # (fingerprint, AnnData)
K_RESULTS = "_scclust_results"  # run_id -> MethodResult
K_LOGNORM = "_scclust_lognorm"  # (fingerprint, AnnData)
K_RUN = "current_run"  # run id chosen in Explore/Markers/Export (plain key: survives page switches)
DATA_WIDGET_KEYS = ("ref_pick", "batch_pick")  # widgets whose value is a choice stored per dataset in the workspace


def init() -> Workspace:
    """Open this session's workspace (from ``?ws=``, or a new one written into the URL; created on first write)."""
    _check_configuration()
    ws = st.session_state.get(K_WS)
    wanted = st.query_params.get("ws")
    if ws is None or (wanted and wanted != ws.id):
        ws = Workspace.open(wanted)
        st.session_state[K_WS] = ws
        st.session_state.pop(K_ADATA, None)
        st.session_state.pop(K_RESULTS, None)
        st.session_state.pop(K_LOGNORM, None)
        _housekeeping(ws.id)
    if st.query_params.get("ws") != ws.id:
        st.query_params["ws"] = ws.id
    st.session_state.setdefault(K_RESULTS, {})
    return ws


def _check_configuration() -> None:
    """A wrong setting (e.g. ``SCCLUST_MAX_TRAININGS=two``) stops the page with its message, not a traceback."""
    try:
        _jobs.check_configuration()
    except ValueError as exc:
        st.error(str(exc), icon=":material/settings_alert:")
        st.stop()


_SWEEP_EVERY_S = 3600.0
_last_sweep = [0.0]
_sweep_lock = threading.Lock()


def _housekeeping(current: str) -> None:
    """Once an hour per server process (in the background): sweep idle workspaces and warm the training workers."""
    with _sweep_lock:
        if time.time() - _last_sweep[0] < _SWEEP_EVERY_S:
            return
        _last_sweep[0] = time.time()

    def work() -> None:
        try:
            _jobs.prestart_workers()
            sweep_idle(keep=_jobs.busy_workspaces() | {current})
        except Exception:  # noqa: BLE001 - housekeeping must never break a page
            logger.exception("Workspace housekeeping failed")

    threading.Thread(target=work, name="scclust-housekeeping", daemon=True).start()


def workspace() -> Workspace:
    return st.session_state[K_WS] if K_WS in st.session_state else init()


def dataset_state() -> dict[str, Any]:
    return workspace().load_state()


def adata() -> AnnData | None:
    """The current dataset (loaded from the workspace once per session and dataset)."""
    ws = workspace()
    fp = ws.fingerprint
    cached = st.session_state.get(K_ADATA)
    if cached is not None and cached[0] == fp:
        return cached[1]
    if not ws.has_dataset():
        return None
    with st.spinner("Opening the dataset of this workspace…"):
        ad = ws.load_dataset()
    st.session_state[K_ADATA] = (fp, ad)
    _forget_data_widgets()
    return ad


def _forget_data_widgets() -> None:
    """Other data: widgets showing per-dataset choices re-read them from the workspace (a widget's own state
    would otherwise carry the previous dataset's reference over to this one)."""
    for key in DATA_WIDGET_KEYS:
        st.session_state.pop(key, None)


def set_adata(ad: AnnData, name: str, **kw) -> None:
    ws = workspace()
    state = ws.set_dataset(ad, name, **kw)
    st.session_state[K_ADATA] = ((state.get("fingerprint") or {}).get("sha256"), ad)
    _forget_data_widgets()
    st.session_state.pop(K_LOGNORM, None)
    st.session_state.pop(K_RUN, None)


def update_adata(ad: AnnData) -> None:
    """The same dataset with new annotations (doublet flags): written back, the session's copy replaced, the
    runs and choices kept (:meth:`Workspace.update_dataset`)."""
    ws = workspace()
    ws.update_dataset(ad)
    st.session_state[K_ADATA] = (ws.fingerprint, ad)


def lognorm() -> AnnData | None:
    from ..markers import lognormalized

    ad = adata()
    if ad is None:
        return None
    fp = workspace().fingerprint
    cached = st.session_state.get(K_LOGNORM)
    if cached is not None and cached[0] == fp:
        return cached[1]
    ln = lognormalized(ad)
    st.session_state[K_LOGNORM] = (fp, ln)
    return ln


def reference() -> str | None:
    ref = workspace().reference()
    ad = adata()
    return ref if ad is not None and ref in ad.obs else None


def batch_key() -> str | None:
    """The sample/batch key the user confirmed, when the current dataset has that column (and it is not the
    reference annotation, which scores clusterings and must not also steer them)."""
    key = workspace().batch_key
    ad = adata()
    return key if ad is not None and key in ad.obs and key != workspace().reference() else None


def jobs() -> dict[str, _jobs.TrainingJob]:
    return _jobs.jobs_for(workspace().id)


def active_job() -> _jobs.TrainingJob | None:
    running = [j for j in jobs().values() if j.running]
    return running[-1] if running else None


def runs(*, finished_only: bool = False) -> list[RunRecord]:
    recs = workspace().list_runs(active_ids=_jobs.active_run_ids(workspace().id))
    if finished_only:
        recs = [r for r in recs if r.has_result and (r.path / "result.json").exists()]
    return recs


def run_label(rec: RunRecord) -> str:
    m = rec.meta
    k = m.get("n_clusters")
    met = m.get("metrics") or {}
    score = f"ARI {met['ari']:.2f}" if isinstance(met.get("ari"), (int, float)) else (
        f"sil. {met['silhouette']:.2f}" if isinstance(met.get("silhouette"), (int, float)) else "")
    when = f"started {m['started_at'][11:16]} UTC" if len(m.get("started_at") or "") >= 16 else ""  # not a duration
    parts = [m.get("method", "?"), m.get("preset") or "", f"K={k}" if k else "", score, when, rec.status]
    return " · ".join(p for p in parts if p) + f"  [{rec.run_id.rsplit('_', 1)[-1]}]"


def delete_run(run_id: str) -> None:
    """Delete a finished run of this workspace (record, edits, cached views) and forget it in this session."""
    workspace().delete_run(run_id, active_ids=_jobs.active_run_ids(workspace().id))
    st.session_state.get(K_RESULTS, {}).pop(run_id, None)
    if st.session_state.get(K_RUN) == run_id:
        st.session_state.pop(K_RUN, None)


def result(run_id: str):
    cache = st.session_state.setdefault(K_RESULTS, {})
    if run_id not in cache:
        cache[run_id] = load_result(workspace().run_dir(run_id))
    return cache[run_id]


def labels(run_id: str, *, edited: bool = True) -> pd.Series:
    ad = adata()
    return workspace().run_labels(run_id, ad.n_obs, edited=edited)


def choose_run(label: str = "Run", *, key: str = "run_pick", help: str | None = None) -> RunRecord | None:
    """Select box over the finished runs on this dataset; the choice is shared by every page."""
    recs = runs(finished_only=True)
    if not recs:
        return None
    ids = [r.run_id for r in recs]
    current = st.session_state.get(K_RUN)
    index = ids.index(current) if current in ids else 0
    by_id = {r.run_id: r for r in recs}

    def _keep():
        st.session_state[K_RUN] = st.session_state[key]

    chosen = st.selectbox(label, ids, index=index, format_func=lambda i: run_label(by_id[i]), key=key,
                          on_change=_keep, help=help)
    st.session_state[K_RUN] = chosen
    return by_id[chosen]
