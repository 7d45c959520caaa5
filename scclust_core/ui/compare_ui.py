"""Compare page sections: Sankey and contingency of a run vs the reference or another run; leaderboard."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from .. import metrics, plots
from ..csv_safe import safe_csv
from .common import show_table
from . import live, state


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
    st.plotly_chart(plots.sankey(a, b, a_name=a_name, b_name=b_name), key="cmp_sankey")
    st.plotly_chart(plots.contingency_heatmap(a, b, a_name=a_name, b_name=b_name), key="cmp_cont")


def leaderboard() -> None:
    recs = [r for r in state.runs() if r.status in ("completed", "cancelled")]
    df = live.runs_table(recs, numeric=True)
    if df.empty:
        st.info("No finished runs yet.")
        return
    df = df.sort_values("ARI" if df["ARI"].notna().any() else "silhouette", ascending=False, na_position="last")
    show_table(live.as_text(df.drop(columns=["run"]).assign(run=df["run"].str.rsplit("_", n=1).str[-1])),
                 hide_index=True)
    st.caption("ARI/NMI/CA are computed against the reference annotation chosen when each run started "
               "(column 'reference'); silhouette is on each run's own embedding.")
    st.download_button("Download the leaderboard (CSV)", safe_csv(df), "leaderboard.csv", mime="text/csv",
                       key="lb_dl")
