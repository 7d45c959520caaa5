"""Markers page sections: Wilcoxon markers per cluster, table + CSV, dot plot / heatmap / violin."""
from __future__ import annotations

import hashlib
import json

import pandas as pd
import streamlit as st

from .. import markers, plots
from ..csv_safe import safe_csv
from . import state
from .common import md_text, show_table


def marker_table(run_id: str) -> pd.DataFrame:
    """Markers of the run's (renamed/merged) clusters, cached on disk per set of names."""
    ws = state.workspace()
    tag = hashlib.sha1(json.dumps(ws.edits(run_id), sort_keys=True).encode()).hexdigest()[:8]
    name = f"{run_id}_markers_{tag}.csv"
    cached = ws.read_cache(name, "csv", dtype={"cluster": str})  # None when absent or damaged (recomputed)
    if cached is not None:
        return cached
    labels = state.labels(run_id)
    with st.status(f"Testing every gene in each of {labels.cat.categories.size} clusters (Wilcoxon, one vs rest)…") as s:
        ln = state.lognorm()
        df = markers.rank_markers(state.adata(), labels, n_genes=100, lognorm=ln)
        ws.write_cache(name, df)  # csv-safe: not offered, a cache read back verbatim
        s.update(label="Markers ready", state="complete")
    return df


def table_section(run_id: str, df: pd.DataFrame) -> None:
    cats = list(dict.fromkeys(df["cluster"]))
    c1, c2 = st.columns([2, 1])
    which = c1.selectbox("Cluster", ["all clusters"] + cats, key="mk_cluster")
    n = c2.slider("Genes per cluster", 5, 100, 20, key="mk_n")
    show = df[df["rank"] <= n]
    if which != "all clusters":
        show = show[show["cluster"] == which]
    show_table(show, hide_index=True, height=380, column_config={
        "logfoldchange": st.column_config.NumberColumn("log2 fold change", format="%.2f"),
        "pval_adj": st.column_config.NumberColumn("adj. p-value", format="%.2e"),
        "pval": st.column_config.NumberColumn("p-value", format="%.2e"),
        "score": st.column_config.NumberColumn(format="%.2f"),
        "pct_in": st.column_config.NumberColumn("fraction in", format="%.2f"),
        "pct_out": st.column_config.NumberColumn("fraction out", format="%.2f"),
    })
    st.download_button("Download markers (CSV)", safe_csv(df), f"markers_{run_id}.csv", mime="text/csv",
                       key="mk_dl")


def plots_section(run_id: str, df: pd.DataFrame) -> None:
    top = markers.top_genes(df, n=2)[:30]
    genes = st.multiselect("Genes to plot (defaults: top 2 markers per cluster; type to add any gene)",
                           list(state.adata().var_names), default=top, key=f"mk_genes_{run_id}")
    if not genes:
        st.info("Pick at least one gene.")
        return
    labels = state.labels(run_id)
    ln = state.lognorm()
    mean, frac = markers.expression_summary(ln, labels, genes)
    t1, t2, t3 = st.tabs(["Dot plot", "Heatmap", "Violin"])
    with t1:
        fig = plots.dotplot(mean, frac)
        st.plotly_chart(fig, key="mk_dot")
        from .common import figure_downloads

        figure_downloads(fig, f"dotplot_{run_id}", key=f"dl_dot_{run_id}_{abs(hash(tuple(genes)))}")
    with t2:
        st.plotly_chart(plots.heatmap(mean), key="mk_heat")
    with t3:
        vg = genes[:6]
        if len(genes) > 6:
            st.caption(f"Violins for the first 6 genes: {', '.join(md_text(g) for g in vg)}")
        st.plotly_chart(plots.violin(markers.expression_long(ln, labels, vg)), key="mk_violin")
