"""Explore page sections: 2-D views of a run's embedding, colouring, cluster sizes, renames/merges, selections."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from .. import embed, plots
from ..csv_safe import safe_csv
from . import recommend_ui, state


def view_coords(run_id: str, kind: str, *, show_status: bool = True) -> np.ndarray:
    """2-D coordinates of the run's learned embedding (cached on disk in the workspace).

    ``show_status=False`` inside another ``st.status`` (Streamlit does not nest them).
    """
    res = state.result(run_id)
    ws = state.workspace()
    name = f"{run_id}_{kind.replace('-', '').lower()}.npy"
    emb, seed = res.full_embedding(), int(res.config.get("seed", 0) or 0)
    xy = ws.read_cache(name, "npy")  # None when absent or damaged (then recomputed)
    if xy is not None and xy.shape == (len(emb), 2):
        return xy
    if not show_status:
        xy = embed.compute(emb, kind, seed=seed)
    else:
        with st.status(f"Computing the {kind} of the learned embedding ({res.embedding.shape[0]:,} cells × "
                       f"{res.embedding.shape[1]} dims)…") as s:
            xy = embed.compute(emb, kind, seed=seed)
            s.update(label=f"{kind} ready", state="complete")
    ws.write_cache(name, xy)
    return xy


def colour_values(run_id: str) -> tuple[pd.Series | np.ndarray, str, bool | None]:
    ad = state.adata()
    obs_cols = [c for c in ad.obs.columns]
    conf = recommend_ui.confidence_values(run_id)
    options = ["clusters of this run"] + (["consensus confidence"] if conf is not None else []) + obs_cols + ["a gene…"]
    ref = state.reference()
    c1, c2 = st.columns(2)
    choice = c1.selectbox("Colour by", options, key="colour_by",
                          index=0, help="Clusters (with your renames), any cell annotation, or a gene's expression")
    if choice == "clusters of this run":
        return state.labels(run_id), "cluster", False
    if choice == "consensus confidence":
        return conf, "consensus confidence", True
    if choice == "a gene…":
        genes = list(ad.var_names)
        gene = c2.selectbox("Gene (type to search)", genes, key="colour_gene")
        ln = state.lognorm()
        x = ln[:, gene].X
        v = np.asarray(x.toarray() if hasattr(x, "toarray") else x).ravel()
        return pd.Series(v), f"{gene} (log-norm.)", True
    col = ad.obs[choice].reset_index(drop=True)
    cont = pd.api.types.is_numeric_dtype(col) and not isinstance(col.dtype, pd.CategoricalDtype) and col.nunique() > 30
    return col, choice + (" (reference)" if choice == ref else ""), cont


def scatter_with_selection(run_id: str, xy: np.ndarray, color, name: str, continuous, kind: str) -> np.ndarray:
    ok = np.isfinite(xy).all(axis=1)
    rows = np.flatnonzero(ok)
    ad = state.adata()
    c = pd.Series(color).reset_index(drop=True).iloc[rows].reset_index(drop=True)
    hover = np.asarray(ad.obs_names)[rows]
    fig = plots.embedding_scatter(xy[rows], c, color_name=name, continuous=continuous, hover=hover,
                                  axis_prefix=kind, title=f"{kind} of the learned embedding, coloured by {name}")
    if (~ok).any():
        st.caption(f"{int((~ok).sum())} cells were removed by the method's preprocessing and are not shown.")
    event = st.plotly_chart(fig, key=f"scatter_{run_id}_{kind}", on_select="rerun", selection_mode=("box", "lasso"))
    picked: list[int] = []
    try:
        for p in (event.selection.points if event else []) or []:
            cd = p.get("customdata")
            if isinstance(cd, (list, tuple)):
                cd = cd[0]
            if cd is not None:
                picked.append(int(cd))
    except (AttributeError, KeyError, TypeError, ValueError):
        picked = []
    chosen = rows[np.unique(np.asarray(picked, dtype=int))] if picked else np.zeros(0, dtype=int)
    return np.union1d(chosen, recommend_ui.low_confidence_cells(run_id)).astype(int)


def selection_panel(run_id: str, selected: np.ndarray) -> None:
    if len(selected) == 0:
        st.caption("Tip: draw a box or lasso on the plot to select cells and see their composition.")
        return
    st.markdown(f"**{len(selected):,} cells selected**")
    c1, c2 = st.columns(2)
    c1.plotly_chart(plots.composition_bar(state.labels(run_id).iloc[selected], title="Clusters of the selection"),
                    key="sel_clusters")
    ref = state.reference()
    if ref:
        c2.plotly_chart(plots.composition_bar(state.adata().obs[ref].iloc[selected], title=f"{ref} of the selection"),
                        key="sel_ref")
    ids = pd.DataFrame({"cell": np.asarray(state.adata().obs_names)[selected]})
    st.download_button("Download the selected cell ids (CSV)", safe_csv(ids), "selected_cells.csv",
                       mime="text/csv", key="sel_dl")


def rename_merge(run_id: str) -> None:
    ws = state.workspace()
    raw = state.labels(run_id, edited=False)
    edits = ws.edits(run_id)
    counts = raw.value_counts()
    table = pd.DataFrame({"cluster": [str(c) for c in raw.cat.categories],
                          "cells": [int(counts.get(c, 0)) for c in raw.cat.categories]})
    table["name"] = [edits.get(c, c) for c in table["cluster"]]
    st.caption("Type a new name for a cluster; give several clusters the same name to merge them. "
               "Names are used in Markers, Compare and Export.")
    edited = st.data_editor(table, hide_index=True, disabled=["cluster", "cells"], key=f"names_{run_id}",
                            column_config={"name": st.column_config.TextColumn("name (editable)")})
    c1, c2 = st.columns(2)
    if c1.button("Save names", type="primary", key=f"save_names_{run_id}"):
        ws.set_edits(run_id, dict(zip(edited["cluster"], edited["name"].fillna("").astype(str))))
        st.toast("Cluster names saved")
        st.rerun()
    if edits and c2.button("Reset to the original clusters", key=f"reset_names_{run_id}"):
        ws.set_edits(run_id, {})
        st.session_state.pop(f"names_{run_id}", None)
        st.rerun()
