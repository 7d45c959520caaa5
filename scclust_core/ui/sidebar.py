"""The sidebar card shown on every page: current data, reference annotation, training status, workspace."""
from __future__ import annotations

import streamlit as st

from . import state


def card() -> None:
    ws = state.workspace()
    info = ws.load_state()
    with st.sidebar:
        st.markdown("### :material/biotech: scclust")
        if ws.has_dataset():
            st.markdown(f"**Data:** {info.get('dataset_name', 'dataset')}  \n"
                        f"{info.get('n_cells', 0):,} cells × {info.get('n_genes', 0):,} genes")
            ref = info.get("reference")
            st.caption(f"Reference annotation: {ref or 'none'}")
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
