"""Export page sections: labeled h5ad (with the table of its keys), labels CSV, run records, figures."""
from __future__ import annotations

import re

import numpy as np
import streamlit as st

from .. import export, plots
from . import state
from .common import figure_downloads, md_text, show_table
from .explore_ui import view_coords


def _runs_to_export(ids: list[str]) -> list[export.RunExport]:
    out = []
    by_id = {r.run_id: r for r in state.runs(finished_only=True)}
    for rid in ids:
        rec = by_id[rid]
        res = state.result(rid)
        edits = state.workspace().edits(rid)
        out.append(export.RunExport(
            key=export.run_key(rid, rec.method), labels=state.labels(rid), embedding=res.full_embedding(),
            umap=view_coords(rid, "UMAP", show_status=False), record=rec.meta, edits=edits,
            original_labels=state.labels(rid, edited=False) if edits else None,
            integration=dict(res.extras.get("integration") or {})))
    return out


def _integer_values(X) -> bool:
    from ..preprocess import is_integer_matrix

    return bool(is_integer_matrix(X))


def _stem() -> str:
    name = state.dataset_state().get("dataset_name", "dataset")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.rsplit(".", 1)[0])[:60] or "dataset"


def data_section() -> None:
    recs = state.runs(finished_only=True)
    ids = [r.run_id for r in recs]
    by_id = {r.run_id: r for r in recs}
    current = st.session_state.get(state.K_RUN)
    ids_default = [current] if current in ids else ids[:1]
    chosen = st.multiselect("Runs to include", ids, default=ids_default, format_func=lambda i: state.run_label(by_id[i]),
                            key="exp_runs")
    if not chosen:
        st.info("Choose at least one run.")
        return
    c1, c2 = st.columns(2)
    with c1:
        st.markdown("**Labeled AnnData (.h5ad)** — for scanpy and CELLxGENE")
        ad = state.adata()
        st.caption(f"`X` is your expression matrix exactly as read ({export.describe_matrix(ad.X)}), plus each "
                   "run's clusters and colours, its UMAP as a 2-D layout and its learned embedding for scanpy, and "
                   "the run records in `uns['scclust']`. The table after building says which key is which.")
        if str(ad.X.dtype) == "float32" and _integer_values(ad.X):
            st.caption("The reader stores counts as float32 (exact for counts up to 16,777,216): the values are "
                       "your counts, the dtype may differ from the file's integers.")
        with_lognorm = st.checkbox("Also include the normalised matrix (layers['lognorm']: normalize_total + log1p, "
                                   "as used for markers)", value=False, key="exp_lognorm",
                                   help="Off by default: it makes the file about twice as large.")
        if st.button("Build the .h5ad", type="primary", key="exp_build"):
            with st.status("Building the labeled .h5ad (computing UMAPs when needed)…") as s:
                runs = _runs_to_export(chosen)
                out = export.labeled_adata(ad, runs, lognorm=state.lognorm() if with_lognorm else None,
                                           batch_key=state.batch_key())
                st.session_state["_export_h5ad"] = (tuple(chosen), with_lognorm, export.h5ad_bytes(out),
                                                    export.key_table(out))
                renamed = out.uns["scclust"].get("renamed_keys") or {}  # uploaded columns are never overwritten
                note = "; ".join(f"{a} was taken by your data, so written as {b}" for a, b in renamed.items())
                s.update(label=f"Ready: {out.n_obs:,} cells, columns {', '.join(out.uns['scclust']['runs'])}"
                         + (f" ({note})" if note else ""), state="complete")
        got = st.session_state.get("_export_h5ad")
        if got and list(got[0]) == chosen and got[1] == with_lognorm:
            st.download_button(f"Download {md_text(_stem() + '_scclust.h5ad')} ({len(got[2]) / 2**20:.1f} MB)", got[2],
                               f"{_stem()}_scclust.h5ad", mime="application/octet-stream", key="exp_h5ad_dl")
            st.markdown("**What is in the file**")
            show_table(got[3], hide_index=True)
            st.caption("CELLxGENE lists every `obsm['X_…']` key as a layout, so only 2-D views have that prefix; "
                       "learned embeddings are under `obsm['emb_…']` (for `sc.pp.neighbors(adata, use_rep=…)`).")
            if state.batch_key():
                st.caption("Several samples: the sample and doublet columns stay in `obs`; an integrated run's "
                           "embedding is the corrected one, and its integration settings are in "
                           "`uns['scclust']['runs'][<run>]['integration']`.")
    with c2:
        st.markdown("**Cluster labels (.csv)** — one row per cell, one column per run")
        runs_light = [export.RunExport(key=export.run_key(r, by_id[r].method), labels=state.labels(r)) for r in chosen]
        st.download_button("Download labels CSV", export.labels_csv(state.adata().obs_names, runs_light),
                           f"{_stem()}_labels.csv", mime="text/csv", key="exp_csv")
        st.markdown("**Run records (.json)** — method, settings, versions, data fingerprint, metrics")
        for rid in chosen:
            rec = by_id[rid]
            st.download_button(f"Run record {export.run_key(rid, rec.method)}.json",
                               export.run_json(rec.meta, state.workspace().edits(rid)), f"{rid}.json",
                               mime="application/json", key=f"exp_json_{rid}")


def figures_section() -> None:
    rec = state.choose_run("Run for the figures", key="exp_fig_run")
    res = state.result(rec.run_id)
    ref = state.reference()
    options = ["UMAP coloured by cluster", "Cluster sizes"]
    if res.snapshots:
        options.append("Snapshot grid")
    if res.history:
        options.append("Loss curves")
    if ref:
        options.append(f"Sankey to {ref}")
    which = st.selectbox("Figure", options, key="exp_fig")
    labels = state.labels(rec.run_id)
    if which.startswith("UMAP"):
        xy = view_coords(rec.run_id, "UMAP")
        ok = np.isfinite(xy).all(axis=1)
        fig = plots.embedding_scatter(xy[ok], labels[ok].reset_index(drop=True), color_name="cluster",
                                      title=f"UMAP of {rec.method} embedding")
    elif which == "Cluster sizes":
        fig = plots.cluster_sizes(labels)
    elif which == "Snapshot grid":
        refv = None
        if ref:
            refv = state.adata().obs[ref].iloc[res.snapshot_index].reset_index(drop=True)
        fig = plots.snapshot_grid(res.snapshots, refv, reference_name=ref or "reference")
    elif which == "Loss curves":
        fig = plots.loss_curves(res.history)
    else:
        fig = plots.sankey(labels, state.adata().obs[ref].reset_index(drop=True), a_name=rec.method, b_name=ref)
    st.plotly_chart(fig, key="exp_fig_preview")
    stem = re.sub(r"\W+", "_", which.lower()) + f"_{rec.run_id.rsplit('_', 1)[-1]}"
    figure_downloads(fig, stem, key=f"exp_figdl_{stem}")
