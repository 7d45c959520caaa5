"""The sidebar card shown on every page: current data, reference annotation, training status, workspace."""
from __future__ import annotations

import streamlit as st

from . import state
from .common import md_text


def card() -> None:
    ws = state.workspace()
    info = ws.load_state()
    with st.sidebar:
        st.markdown("### :material/biotech: scclust")
        problems = ws.problems  # e.g. a damaged state.json: the reference and renames are gone, say so
        for problem in problems:
            st.warning(md_text(problem), icon=":material/warning:")
        if problems and st.button("Dismiss", key="ws_problems_ok", help="Start a fresh state (the damaged file "
                                  "is kept) and stop showing this message"):
            ws.dismiss_state_warning()
            st.rerun()
        if ws.has_dataset():
            st.markdown(f"**Data:** {md_text(info.get('dataset_name', 'dataset'))}  \n"
                        f"{info.get('n_cells', 0):,} cells × {info.get('n_genes', 0):,} genes")
            ref = info.get("reference")
            st.caption(f"Reference annotation: {md_text(ref) if ref else 'none'}")
        else:
            st.caption("No data loaded yet.")
        job = state.active_job()
        if job is not None:
            st.markdown(f"**Training:** {job.method} (live view on the Cluster page)")
        n = len(state.runs(finished_only=True)) if ws.has_dataset() else 0
        st.caption(f"{n} finished run(s) on this data")
        st.divider()
        st.caption(f"Workspace `{ws.id}` is kept in this page's address: bookmark it to come back. "
                   "Open the app without `?ws=` for a fresh workspace.")
