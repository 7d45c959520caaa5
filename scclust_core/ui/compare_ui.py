"""Compare page sections: Sankey and contingency of a run vs the reference or another run; leaderboard."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from .. import metrics, plots
from ..csv_safe import safe_csv
from ..integrate import Batches, split_warnings
from .common import md_text, show_table
from . import run_record, state

#: batch-mixing scores of a run with a sample key: (metric, card label, what it means)
MIXING = (("batch_asw", "Batch ASW", "1 = the samples are mixed within each cell group (reference type, else "
                                     "cluster), 0 = separated (scib); n/a when no group holds two samples"),
          ("ilisi", "iLISI", "the effective number of samples among a cell's neighbours (median; 1 = one sample)"),
          ("same_batch_share", "Same-sample neighbours", "share of each cell's 15 nearest neighbours from its own "
                                                         "sample (lower = better mixed)"))


def flows(rec) -> None:
    ad = state.adata()
    a = state.labels(rec.run_id)
    others = [r for r in state.runs(finished_only=True) if r.run_id != rec.run_id]
    options = [f"annotation: {c}" for c in ad.obs.columns if 1 < ad.obs[c].nunique() <= 200]
    ref = state.reference()
    if ref:
        options.remove(f"annotation: {ref}") if f"annotation: {ref}" in options else None
        options.insert(0, f"annotation: {ref}")
    by_label = {f"run: {state.run_label(r)}": r for r in others}
    options += list(by_label)
    if not options:
        st.info("Nothing to compare with: choose a reference annotation on the Data page or make another run.")
        return
    target = st.selectbox("Compare with", options, key="cmp_target")
    if target.startswith("annotation: "):
        col = target[len("annotation: "):]
        b, b_name = ad.obs[col].reset_index(drop=True), col
    else:
        other = by_label[target]
        b, b_name = state.labels(other.run_id), f"{other.method} [{other.run_id.rsplit('_', 1)[-1]}]"
    a_name = f"{rec.method} [{rec.run_id.rsplit('_', 1)[-1]}]"
    ok = a.notna().to_numpy() & pd.Series(b).notna().to_numpy()
    aa, bb = a[ok].astype(str).to_numpy(), pd.Series(b)[ok].astype(str).to_numpy()
    problem = metrics.label_problem(bb)  # one category or < 2 labelled cells: no score, never a fake 1.000
    c = st.columns(3)
    for col, (name, fn) in zip(c, (("ARI", metrics.ari), ("NMI", metrics.nmi), ("Accuracy (best matching)", metrics.ca))):
        col.metric(name, "n/a" if problem else f"{fn(bb, aa):.3f}")
    if problem:
        st.warning(f"No score: {problem}.")
    mixing_cards(rec)
    st.plotly_chart(plots.sankey(a, b, a_name=a_name, b_name=b_name), key="cmp_sankey")
    st.plotly_chart(plots.contingency_heatmap(a, b, a_name=a_name, b_name=b_name), key="cmp_cont")


def _run_batch_key(rec) -> str | None:
    """The sample key a run was made with (its record), when the current data still has that column."""
    integ = state.result(rec.run_id).extras.get("integration") or {}
    key = integ.get("batch_key") or rec.meta.get("batch_key")
    ad = state.adata()
    return key if key and key in ad.obs else None


def mixing_cards(rec) -> None:
    """Batch ASW, iLISI and the same-sample share of the run's embedding, next to ARI/NMI."""
    res = state.result(rec.run_id)
    if "batch_asw" not in res.metrics and "ilisi" not in res.metrics:
        return
    cols = st.columns(len(MIXING))
    for col, (name, label, helps) in zip(cols, MIXING):
        v = res.metrics.get(name)
        shown = "n/a" if v is None or not np.isfinite(v) else f"{v:.3f}"
        if name == "ilisi" and np.isfinite(res.metrics.get("ilisi_scaled", np.nan)):
            shown += f" ({res.metrics['ilisi_scaled']:.2f} scaled)"
        col.metric(label, shown, help=helps)
    integ = res.extras.get("integration") or {}
    st.caption(f"Batch mixing on the embedding the final clustering used; integration: "
               f"**{md_text(integ.get('method', 'none'))}** by {md_text(integ.get('batch_key', '?'))}. "
               + " ".join(md_text(n) + "." for n in integ.get("notes", [])))


def sample_warnings(labels: pd.Series, samples: pd.Series, key: str) -> list[str]:
    """A warning per cluster made (≥ 90 %) of one sample, in the clusters' shown names."""
    lab = pd.Series(pd.Categorical(labels)).reset_index(drop=True)
    smp = pd.Series(samples).reset_index(drop=True)
    ok = (lab.notna() & smp.notna()).to_numpy()
    if not ok.any():
        return []
    cat = pd.Categorical(smp[ok].astype(str))
    batches = Batches(key, np.asarray(cat.codes, dtype=np.int64), [str(c) for c in cat.categories])
    return split_warnings(np.asarray(lab[ok].cat.codes, dtype=np.int64), batches,
                          names=[str(c) for c in lab.cat.categories])


def samples_section(rec) -> None:
    """For a run on several samples: clusters → sample (Sankey), each cluster's sample composition, and a warning
    per cluster that one sample makes up."""
    key = _run_batch_key(rec)
    if key is None:
        return
    st.subheader(f"Clusters and samples ({md_text(key)})")
    labels = state.labels(rec.run_id)
    samples = state.adata().obs[key].reset_index(drop=True)
    warns = sample_warnings(labels, samples, key)
    for w in warns:
        st.warning(md_text(w), icon=":material/call_split:")
    if not warns:
        st.caption(f"No cluster is made (≥ 90 %) of one {md_text(key)}.")
    name = f"{rec.method} [{rec.run_id.rsplit('_', 1)[-1]}]"
    st.plotly_chart(plots.sample_composition(labels, samples, sample_name=key), key="cmp_sample_bar")
    st.plotly_chart(plots.sankey(labels, samples, a_name=name, b_name=key), key="cmp_sample_sankey")


def leaderboard() -> None:
    recs = [r for r in state.runs() if r.status in ("completed", "cancelled")]
    df = run_record.runs_table(recs, numeric=True)
    if df.empty:
        st.info("No finished runs yet.")
        return
    df = df.sort_values("ARI" if df["ARI"].notna().any() else "silhouette", ascending=False, na_position="last")
    show_table(run_record.as_text(df.drop(columns=["run"]).assign(run=df["run"].str.rsplit("_", n=1).str[-1])),
                 hide_index=True)
    st.caption("ARI/NMI/CA are computed against the reference annotation chosen when each run started "
               "(column 'reference'); silhouette is on each run's own embedding.")
    st.download_button("Download the leaderboard (CSV)", safe_csv(df), "leaderboard.csv", mime="text/csv",
                       key="lb_dl")
