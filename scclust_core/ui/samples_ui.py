"""Data page sections for experiments with several samples: files joined as samples, the sample/batch key the
user confirms, QC per sample and doublets per sample (Scrublet). Nothing here changes the data silently: joining,
setting the key, flagging and removing doublets are each a button."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from .. import io as scio
from ..integrate import MIN_BATCH_CELLS, batch_key_candidates, check_batches
from ..samples import SAMPLE_KEY, UNS_KEY, drop_doublets, flag_doublets, read_many, sample_name
from . import state
from .common import guard, md_text, show_table

K_SAMPLES = "_samples_pending"  # [{"id", "name", "data"}] of files uploaded together, waiting to be joined
K_UPLOAD_ERROR = "_upload_error"
NO_KEY = "(one sample: none)"


# --------------------------------------------------------------------------- several files → one dataset
def park_files(ups: list) -> None:
    """Several files uploaded together wait for the user to name the samples and join them."""
    st.session_state[K_SAMPLES] = [{"id": u.file_id, "name": u.name, "data": u.getvalue()} for u in ups]


def join_form(transpose: bool | None, header: bool | None) -> None:
    """Editable sample names (one per file), the gene-join option and the Join button."""
    files = st.session_state[K_SAMPLES]
    with st.container(border=True):
        st.markdown(f"**{len(files)} files: join them into one dataset, one sample per file.** Each cell keeps "
                    f"its file's sample name in `obs['{SAMPLE_KEY}']` (the sample key of the Cluster and Compare "
                    "pages). Edit the names before joining.")
        cols = st.columns(min(len(files), 4))
        names = []
        for i, f in enumerate(files):
            default = sample_name(f["name"])
            typed = cols[i % len(cols)].text_input(f"Sample name of {md_text(f['name'])}", value=default,
                                                   key=f"sample_name_{f['id']}")
            names.append(typed.strip() or default)
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            st.caption("Names used twice get a number: " + ", ".join(md_text(n) for n in twice) + " → "
                       + ", ".join(f"{md_text(n)}\\_2" for n in twice) + ".")
        outer = st.checkbox("Keep every gene (zeros where a file lacks it)", value=False, key="join_outer",
                            help="Off: only the genes every file has are kept (the page then says how many each "
                                 "file lost). On: the union of the genes, a file's missing genes counted as 0.")
        if st.button(f"Join the {len(files)} files", type="primary", key="join_go"):
            if _join(files, names, "outer" if outer else "inner", transpose, header):
                st.rerun()


def _join(files: list[dict], names: list[str], join: str, transpose: bool | None, header: bool | None) -> bool:
    """Read and join the files; the previous dataset stays when any file cannot be read or they share no gene."""
    with st.status(f"Reading and joining {len(files)} files…", expanded=False) as s:
        try:
            ad = read_many([f["data"] for f in files], filenames=[f["name"] for f in files], names=names,
                           join=join, transpose=transpose, header=header)
        except Exception as exc:  # noqa: BLE001 - shown to the user, the app keeps its previous data
            s.update(label="Could not join the files", state="error")
            hint = (" Say whether the rows are cells or genes under *Table options*, then join again."
                    if isinstance(exc.__cause__, scio.OrientationUnclearError) else "")
            st.session_state[K_UPLOAD_ERROR] = f"Could not join the files: {md_text(exc)}.{hint}"
            return False
        s.update(label="Saving to your workspace…")
        with guard("Saving the joined dataset"):
            labels = list(ad.obs[SAMPLE_KEY].cat.categories)
            title = f"{len(labels)} samples ({', '.join(labels)})"
            state.set_adata(ad, title if len(title) <= 80 else f"{len(labels)} samples")
            state.workspace().set_batch_key(SAMPLE_KEY)
            st.session_state.pop(K_SAMPLES, None)
            st.session_state.pop(K_UPLOAD_ERROR, None)
            s.update(label=f"Joined {len(labels)} samples: {ad.n_obs:,} cells × {ad.n_vars:,} genes",
                     state="complete")
            return True
    return False


def joined_note(ad) -> None:
    """How the files were joined and how many genes each lost (from ``uns['scclust_samples']``)."""
    info = ad.uns.get(UNS_KEY)
    if not isinstance(info, dict) or "samples" not in info:
        return
    samples = [str(s) for s in info["samples"]]
    lost = info.get("genes_not_in_every_file") or {}
    inner = info.get("join", "inner") == "inner"
    col = "genes lost (not in every file)" if inner else "genes not in every file (zeros in the others)"
    table = pd.DataFrame({"sample": samples, "cells in the file": [int(n) for n in info.get("n_cells", [])] or None,
                          col: [int(lost.get(s, 0)) for s in samples]})
    how = ("only the genes every file has were kept" if inner else
           "every gene was kept, zeros where a file lacks one")
    st.caption(f"Joined from {len(samples)} files: {how} — {int(info.get('n_genes', ad.n_vars)):,} genes.")
    show_table(table, hide_index=True, key="joined_genes")


# --------------------------------------------------------------------------- the sample / batch key
def key_problem(ad, key: str) -> tuple[str | None, str | None]:
    """``(error, warning)`` about ``key`` as the sample key: an error blocks it (missing values, one value), a
    warning says which samples are too small to integrate."""
    try:
        b = check_batches(ad, key, integration="none")
    except ValueError as exc:
        return str(exc), None
    counts = pd.Series(np.bincount(b.codes, minlength=b.n), index=b.names)
    small = counts[counts < MIN_BATCH_CELLS]
    if not len(small):
        return None, None
    listed = ", ".join(f"'{k}' ({v} cells)" for k, v in small.items())
    return None, (f"Sample {listed} is too small to integrate (Harmony and ComBat need at least {MIN_BATCH_CELLS} "
                  "cells per sample): filter it out, merge it with another, or cluster with integration 'none'.")


def key_section() -> None:
    """Pick an obs column as the sample/batch key; nothing is applied until the user confirms it."""
    ad = state.adata()
    ws = state.workspace()
    ref = state.reference()
    stored = ws.batch_key
    if stored is not None and stored == ref:
        st.warning(f"'{md_text(stored)}' is the reference annotation, so it is not used as the sample key too: "
                   "choose another column below, or another reference.")
    current = state.batch_key()
    cands = batch_key_candidates(ad, exclude=(ref,) if ref else ())
    if current is not None and current not in cands:
        cands.insert(0, current)
    if not cands:
        st.caption("One sample: no annotation column looks like a sample or batch. To work with several "
                   "samples, upload their files together (they are joined here), or upload data with such a column.")
        return
    options = [NO_KEY] + cands
    index = options.index(current) if current in options else 0
    if current is None:
        st.caption("Columns that may hold each cell's sample: " + ", ".join(md_text(c) for c in cands[:8])
                   + ". Pick one below and confirm it to integrate the samples.")
    pick = st.selectbox("Sample / batch column (which sample each cell comes from; never the reference annotation)",
                        options, index=index, key="batch_pick",
                        help="Used to integrate the samples on the Cluster page and to show how each cluster "
                             "splits across samples on Compare.")
    chosen = None if pick == NO_KEY else pick
    if chosen != current:
        _confirm_key(ad, chosen, current)
    elif current is not None:
        _key_status(ad, current)


def _confirm_key(ad, chosen: str | None, current: str | None) -> None:
    what = f"'{md_text(chosen)}'" if chosen else "no sample key (one sample)"
    now = f"'{md_text(current)}'" if current else "none"
    st.info(f"Not applied yet: confirm to use {what} (now: {now}).")
    label = "Use this column as the sample key" if chosen else "Clear the sample key"
    if st.button(label, key="batch_confirm"):
        error = key_problem(ad, chosen)[0] if chosen else None
        if error:
            st.error(f"'{md_text(chosen)}' cannot be the sample key: {md_text(error)}  \nNothing was changed.")
            return
        state.workspace().set_batch_key(chosen)
        st.rerun()


def _key_status(ad, key: str) -> None:
    error, warning = key_problem(ad, key)
    if error:
        st.warning(f"The sample key '{md_text(key)}' cannot be used now: {md_text(error)}")
        return
    counts = ad.obs[key].astype(str).value_counts(sort=False)
    st.caption(f"Sample key **{md_text(key)}**: {len(counts)} samples — "
               + ", ".join(f"{md_text(k)} ({v:,})" for k, v in counts.head(20).items())
               + (" …" if len(counts) > 20 else ""))
    if warning:
        st.warning(md_text(warning))


# --------------------------------------------------------------------------- QC per sample
def qc_table(qc: pd.DataFrame, samples: pd.Series, keep: pd.Series) -> pd.DataFrame:
    """Per sample: cells, median counts / genes / % mito, and the cells the current thresholds would remove."""
    g = pd.Series(samples.astype(str).to_numpy(), index=qc.index, name="sample")
    out = qc.groupby(g, sort=False).median(numeric_only=True).round(1)
    out = out.rename(columns={"total_counts": "median counts", "n_genes": "median genes",
                              "pct_mito": "median % mito"})
    out.insert(0, "cells", g.value_counts(sort=False))
    out["removed by the thresholds"] = (~keep.astype(bool)).groupby(g, sort=False).sum().astype(int)
    return out.reset_index()


def removed_per_sample(ad, out, key: str | None) -> dict[str, int]:
    """Cells a filter removed, per sample (empty without a sample key)."""
    if key is None or key not in ad.obs:
        return {}
    before = ad.obs[key].astype(str).value_counts()
    after = out.obs[key].astype(str).value_counts() if key in out.obs else pd.Series(dtype=int)
    return {str(s): int(n - after.get(s, 0)) for s, n in before.items()}


def removed_note(f: dict[str, Any]) -> None:
    removed = f.get("removed_per_sample") or {}
    if removed:
        st.caption("Cells removed per sample: " + ", ".join(f"{md_text(k)} {v:,}" for k, v in removed.items()))


# --------------------------------------------------------------------------- doublets
def doublet_table(ad, key: str | None) -> pd.DataFrame:
    groups = ad.obs[key].astype(str) if key else pd.Series("all cells", index=ad.obs_names)
    flag = pd.Series(ad.obs["predicted_doublet"].to_numpy(dtype=bool), index=ad.obs_names)
    t = flag.groupby(groups.to_numpy(), sort=False).agg(cells="size", doublets="sum")
    t["% doublets"] = (100 * t["doublets"] / t["cells"]).round(1)
    return t.rename_axis("sample" if key else "").reset_index()


def doublet_section() -> None:
    """Flag doublets per sample (written back to the dataset), show them per sample, remove them on request."""
    ad = state.adata()
    key = state.batch_key()
    st.subheader("Doublets")
    st.caption("Scrublet simulates doublets from each sample's counts and scores every cell against them. Cells are "
               "only flagged (obs['predicted_doublet'], obs['doublet_score']); nothing is removed unless you ask.")
    if st.button("Find doublets (Scrublet, per sample)" if key else "Find doublets (Scrublet)", key="find_doublets"):
        work = ad.copy()
        try:
            with st.spinner("Scrublet: simulating doublets…"):
                flag_doublets(work, batch_key=key)
        except ValueError as exc:
            st.error(f"Could not find doublets: {md_text(exc)}  \nNothing was changed.")
            return
        with guard("Saving the doublet flags"):
            state.update_adata(work)
            st.rerun()
    if "predicted_doublet" not in ad.obs:
        return
    show_table(doublet_table(ad, key), hide_index=True, key="doublet_table")
    n = int(ad.obs["predicted_doublet"].to_numpy(dtype=bool).sum())
    st.caption(f"{n:,} predicted doublets are flagged and stay in the data: leave them out of a run on the "
               "Cluster page, or remove them from the data here (undo with *Undo filtering*).")
    if n and st.button(f"Remove the {n:,} predicted doublets from the data", key="drop_doublets"):
        with guard("Removing the doublets"):
            out = drop_doublets(ad)
            params = {"doublets_removed": n, "removed_per_sample": removed_per_sample(ad, out, key)}
            state.set_adata(out, state.dataset_state().get("dataset_name", "dataset"), filtered_from_original=True,
                            filter_params=params)
            st.rerun()
