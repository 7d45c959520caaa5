"""Data page sections: upload / demo, summary and reference annotation, QC plots and filtering."""
from __future__ import annotations

import streamlit as st

from .. import io as scio
from .. import metrics, plots
from ..preprocess import filter_cells_genes, qc_metrics
from . import samples_ui, state
from .common import guard, md_text, show_table

UPLOAD_TYPES = ["h5ad", "h5", "zip", "tar", "tgz", "gz", "csv", "tsv", "txt", "mtx"]


def load_section() -> None:
    c1, c2 = st.columns([3, 2])
    with c1:
        ups = st.file_uploader(
            "Upload a count matrix (or several samples at once)", type=UPLOAD_TYPES, key="upload",
            accept_multiple_files=True,
            help="AnnData .h5ad, 10x Genomics .h5, a zipped 10x matrix folder (matrix.mtx, features/genes.tsv, "
                 "barcodes.tsv), or a CSV/TSV table (optionally .gz) with cells or genes as rows. Several files "
                 "(formats may be mixed) are joined into one dataset, one sample per file.") or []
        with st.expander("Table options (CSV/TSV only)"):
            orient = st.radio("Rows of the table are", ["auto", "cells", "genes"], horizontal=True, key="orient",
                              help="auto: decided from the row/column names and totals; when they do not tell, "
                                   "the app shows the table's corner and asks.")
            head = st.radio("The first row", ["auto", "names the columns", "is data"], horizontal=True,
                            key="header_row", help="auto: a header row is recognised by its names; say 'names the "
                                                   "columns' when they are numbers (e.g. Entrez gene ids).")
    with c2:
        st.write("")
        st.write("")
        demo = st.button("Open the PBMC demo (700 cells, annotated)", type="primary", key="demo")
    transpose = {"auto": None, "cells": False, "genes": True}[orient]
    header = {"auto": None, "names the columns": True, "is data": False}[head]
    ids, before = tuple(u.file_id for u in ups), st.session_state.get("_loaded_upload", ())
    if before != ids:  # another set of files (or none any more)
        st.session_state["_loaded_upload"] = ids
        for k in ("_upload_error", K_PENDING, samples_ui.K_SAMPLES):
            st.session_state.pop(k, None)
        if len(ups) == 1 and ids[0] not in before:  # removing files from the uploader never replaces the data
            _read_upload(ups[0].getvalue(), ups[0].name, transpose, header=header)
        elif ups:
            samples_ui.park_files(ups)
    if st.session_state.get(K_PENDING):
        orientation_confirm()
    if st.session_state.get(samples_ui.K_SAMPLES):
        samples_ui.join_form(transpose, header)
    if st.session_state.get("_upload_error"):
        st.error(st.session_state["_upload_error"] + "  \nYour previous data and runs are unchanged.")
    if demo:
        with guard("Loading the demo"), st.status("Loading the PBMC demo…") as s:
            from .. import datasets

            state.set_adata(datasets.demo(), "PBMC demo (700 cells)")
            state.workspace().set_reference("bulk_labels")
            s.update(label="PBMC demo loaded", state="complete")


K_PENDING = "_orient_pending"  # {"name", "data", "message", "preview"} of a table whose orientation is unclear


def _read_upload(data: bytes, name: str, transpose: bool | None, *, header: bool | None = None) -> bool:
    """Read an upload into the workspace; an unclear table orientation is parked for the user to confirm."""
    with st.status(f"Reading {md_text(name)} ({len(data) / 2**20:.1f} MB)…", expanded=False) as s:
        try:
            ad = scio.read(data, filename=name, transpose=transpose, header=header)
        except scio.OrientationUnclearError as exc:
            s.update(label=f"{md_text(name)}: which way round is the table?", state="error")
            st.session_state[K_PENDING] = {"name": name, "data": data, "message": str(exc),
                                           "preview": exc.preview}
            return False
        except Exception as exc:  # noqa: BLE001 - shown to the user, the app keeps its previous data
            s.update(label=f"Could not read {md_text(name)}", state="error")
            st.session_state["_upload_error"] = f"Could not read **{md_text(name)}**: {md_text(exc)}"
            return False
        s.update(label="Saving to your workspace…")
        state.set_adata(ad, name)
        s.update(label=f"Loaded {md_text(name)}", state="complete")
    return True


def orientation_confirm() -> None:
    """Show the table's corner and ask which axis holds cells, then read it with that explicit choice."""
    pending = st.session_state[K_PENDING]
    with st.container(border=True):
        st.warning(f"**{md_text(pending['name'])}: are the rows cells or genes?** The file does not say clearly, "
                   "and reading it the wrong way round would cluster genes instead of cells. Look at the corner of "
                   "the table and choose.")
        if pending.get("preview") is not None:
            show_table(pending["preview"], key="orient_preview")
        with st.expander("Why the app could not tell"):
            st.caption(md_text(pending["message"]))
        choice = st.radio("In this table, each row is", ["a cell (columns are genes)", "a gene (columns are cells)"],
                          index=None, key="orient_choice")
        if st.button("Read the table this way", key="orient_go", disabled=choice is None, type="primary"):
            st.session_state.pop(K_PENDING, None)
            if _read_upload(pending["data"], pending["name"], transpose=choice.startswith("a gene")):
                st.rerun()


def read_notes_section(ad) -> None:
    """What the reader chose on the user's behalf (orientation, names, layer), from ``uns['scclust_read']``."""
    report = scio.read_report(ad)
    if report is None or not report.notes:
        return
    st.info(f"**How {md_text(report.source)} was read** ({md_text(report.format)}):\n"
            + "\n".join(f"- {md_text(n)}" for n in report.notes))


def summary_section() -> None:
    ad = state.adata()
    summ = scio.describe(ad)
    info = state.dataset_state()
    st.subheader(md_text(info.get("dataset_name", "Dataset")))
    cols = st.columns(4)
    cols[0].metric("Cells", f"{summ.n_cells:,}")
    cols[1].metric("Genes", f"{summ.n_genes:,}")
    cols[2].metric("Raw counts", "yes" if summ.counts_location else "no",
                   help=f"Raw integer counts found in {md_text(summ.counts_location)}" if summ.counts_location else
                   "X looks normalised: count-based methods (most deep methods) need raw counts.")
    cols[3].metric("Annotation columns", len(summ.annotation_columns))
    st.caption(md_text(summ.to_text()))
    read_notes_section(ad)
    if summ.counts_location and summ.counts_location != "X":
        st.caption(f"Raw counts for the deep methods and QC are taken from {md_text(summ.counts_location)}.")
    if not summ.counts_location:
        st.warning("No raw counts: the deep methods need raw integer counts; only Leiden/K-means will run.")
    options = ["(none)"] + summ.annotation_columns
    current = state.workspace().reference()
    idx = options.index(current) if current in options else 0
    ref = st.selectbox("Reference annotation (used only to score and compare clusterings, never to train)",
                       options, index=idx, key="ref_pick")
    new = None if ref == "(none)" else ref
    if new != current:
        state.workspace().set_reference(new)
    if new:
        problem = metrics.label_problem(ad.obs[new].to_numpy())
        if problem:
            st.warning(f"'{md_text(new)}' cannot score clusterings: {problem}.")
        counts = ad.obs[new].astype(str).value_counts()
        st.caption(f"{md_text(new)}: {len(counts)} categories — "
                   + ", ".join(f"{md_text(k)} ({v})" for k, v in counts.head(12).items())
                   + (" …" if len(counts) > 12 else ""))


def samples_section() -> None:
    """How joined files became samples, and the sample/batch key (confirmed by the user)."""
    st.subheader("Samples")
    samples_ui.joined_note(state.adata())
    samples_ui.key_section()


def qc_section() -> None:
    ad = state.adata()
    st.subheader("Quality control")
    try:
        qc = qc_metrics(ad)
    except ValueError as exc:
        st.info(f"QC plots need raw counts. {md_text(exc)}")
        return
    with st.form("qc_filter"):
        c = st.columns(5)
        min_genes = c[0].number_input("Min genes per cell", 0, 100000, 0, key="f_min_genes")
        max_genes = c[1].number_input("Max genes per cell (0 = none)", 0, 1000000, 0, key="f_max_genes")
        min_counts = c[2].number_input("Min counts per cell", 0, 10**9, 0, key="f_min_counts")
        max_mito = c[3].number_input("Max % mitochondrial", 0.0, 100.0, 100.0, key="f_max_mito",
                                     disabled="pct_mito" not in qc,
                                     help=None if "pct_mito" in qc else "No MT- genes in the gene names")
        min_cells = c[4].number_input("Min cells per gene", 0, 100000, 0, key="f_min_cells")
        apply = st.form_submit_button("Apply filter")
    thr = {"n_genes": (min_genes or None, max_genes or None), "total_counts": (min_counts or None, None),
           "pct_mito": (None, max_mito if max_mito < 100 else None)}
    key = state.batch_key()
    groups = ad.obs[key].to_numpy() if key else None
    st.plotly_chart(plots.qc_histograms(qc, thresholds=thr, groups=groups), key="qc_hist")
    keep = (qc["n_genes"] >= min_genes) & (qc["total_counts"] >= min_counts)
    if max_genes:
        keep &= qc["n_genes"] <= max_genes
    if "pct_mito" in qc and max_mito < 100:
        keep &= qc["pct_mito"] <= max_mito
    st.caption(f"With these thresholds {int(keep.sum()):,} of {len(qc):,} cells are kept.")
    if key:
        st.markdown(f"**QC per sample** ({md_text(key)})")
        show_table(samples_ui.qc_table(qc, ad.obs[key], keep), hide_index=True, key="qc_per_sample")
    if apply:
        with guard("Filtering"), st.status("Filtering cells and genes…") as s:
            params = dict(min_genes=int(min_genes), max_genes=int(max_genes) or None, min_counts=int(min_counts),
                          max_pct_mito=float(max_mito) if max_mito < 100 else None, min_cells=int(min_cells))
            out = filter_cells_genes(ad, **params)
            removed = samples_ui.removed_per_sample(ad, out, key)
            state.set_adata(out, state.dataset_state().get("dataset_name", "dataset"), filtered_from_original=True,
                            filter_params={**params, "removed_per_sample": removed} if removed else params)
            s.update(label=f"Kept {out.n_obs:,} cells × {out.n_vars:,} genes", state="complete")
            st.rerun()
    if state.workspace().original_path.exists():
        f = state.dataset_state().get("filter") or {}
        st.info("This data is QC-filtered (" + ", ".join(f"{k}={v}" for k, v in f.items()
                                                         if v and k != "removed_per_sample") + ").")
        samples_ui.removed_note(f)
        if st.button("Undo filtering", key="undo_filter"):
            with guard("Undo filtering"):
                state.workspace().undo_filter()
                st.session_state.pop(state.K_ADATA, None)
                st.rerun()
