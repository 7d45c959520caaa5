"""Views of a consensus run (a method of kind ``consensus``): candidate progress, agreement heatmap, K evidence,
confidence.

Figure builders (``agreement_heatmap``, ``k_evidence_figure``) take the consensus summary (the method's
``summary_key`` in ``extras``, :func:`~scclust_core.methods.consensus_summary`) and return
plotly figures without calling Streamlit, so they are testable on their own.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from ..methods import consensus_summary
from .common import show_table
from . import state

__all__ = ["agreement_heatmap", "k_evidence_figure", "candidate_table", "selection_table", "candidate_progress",
           "consensus_report", "confidence_values", "low_confidence_cells"]


def _info(res) -> dict | None:
    return consensus_summary(res) if res is not None else None


def agreement_heatmap(info: dict) -> go.Figure:
    """Candidate × candidate ARI: blocks of candidates that agree show as bright squares."""
    names = list(info["candidates"])
    z = np.asarray(info["agreement_ari"], dtype=float)
    fig = go.Figure(go.Heatmap(z=z, x=names, y=names, zmin=0, zmax=1, colorscale="Viridis",
                               colorbar_title="ARI", hovertemplate="%{y}<br>%{x}<br>ARI %{z:.3f}<extra></extra>"))
    fig.update_layout(title="Agreement between candidate clusterings (ARI)", height=520,
                      xaxis_showticklabels=False, yaxis_showticklabels=False, yaxis_autorange="reversed",
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig


def k_evidence_figure(info: dict) -> go.Figure:
    """Dendrogram lifetime per K (the K with the longest lifetime is the estimate)."""
    ev = info.get("k_evidence") or {}
    ks, life = list(ev.get("k", [])), list(ev.get("lifetime", []))
    fig = go.Figure(go.Scatter(x=ks, y=life, mode="lines+markers", name="lifetime"))
    if ks:
        best = ks[int(np.argmax(life))]
        fig.add_vline(x=best, line_dash="dash", annotation_text=f"K = {best}")
    fig.update_layout(title="K evidence: how long each K survives in the consensus dendrogram",
                      xaxis_title="K (number of clusters)", yaxis_title="lifetime (co-association)", height=340)
    return fig


def candidate_table(info: dict) -> pd.DataFrame:
    """One row per candidate: its agreement with the others and with the consensus, best first."""
    df = pd.DataFrame({"candidate": info["candidates"], "mean ARI with the others": info["mean_agreement"],
                       "ARI with the consensus": info["ari_with_consensus"]})
    return df.sort_values("mean ARI with the others", ascending=False, ignore_index=True)


def selection_table(info: dict) -> pd.DataFrame:
    """Rule ``select``: each proposal (consensus variants, candidates with K clusters) and its mean ARI with all
    candidates; the highest is the result. Empty for the other rules and when K was estimated."""
    sel = info.get("selection") or {}
    df = pd.DataFrame({"proposal": list(sel), "mean ARI with the candidates": list(sel.values())})
    df["kept"] = df["proposal"] == info.get("chosen")
    return df.sort_values("mean ARI with the candidates", ascending=False, ignore_index=True)


def candidate_progress(snap) -> None:
    """Which candidate runs and how many are left (the live panel shows the bar and ETA)."""
    from ..methods.recommend import RecommendConfig, candidate_names

    info = snap.info or {}
    try:
        cfg = RecommendConfig.from_dict(info.get("config") or {})
        names = candidate_names(cfg, int(info["n_cells"]), int(info["n_genes"]))
    except (KeyError, TypeError, ValueError):
        return
    done = int(snap.epoch)
    if done < len(names):
        st.caption(f"Candidate {done + 1} of {len(names)} running: **{names[done]}** · "
                   f"{len(names) - done - 1} left after it, then the consensus.")
    else:
        st.caption(f"All {len(names)} candidates done: forming the consensus…")


def consensus_report(res, *, key: str) -> None:
    """K (given or estimated), confidence, the candidates that agreed most, heatmap and K-evidence curve."""
    info = _info(res)
    if info is None:
        return
    how = "estimated (longest dendrogram lifetime)" if info.get("k_estimated") else "given"
    st.markdown(f"**Consensus of {len(info['candidates'])} candidate clusterings** · K = {info['n_clusters']} "
                f"({how}) · mean per-cell confidence {info['mean_confidence']:.2f} · rule: {info['rule']}")
    st.caption("Most agreeing candidates: " + "; ".join(info.get("most_agreeing", [])) +
               ". Explore can colour the cells by confidence and select the low-confidence ones.")
    if info.get("selection"):
        with st.expander(f"Why this partition: kept **{info.get('chosen')}**, the proposal that agrees most with "
                         "all candidates"):
            show_table(selection_table(info), hide_index=True,
                         column_config={"mean ARI with the candidates": st.column_config.NumberColumn(format="%.3f")})
    if info.get("k_estimated"):
        st.plotly_chart(k_evidence_figure(info), key=f"{key}_kev")
    c1, c2 = st.columns([3, 2])
    c1.plotly_chart(agreement_heatmap(info), key=f"{key}_heat")
    c2.dataframe(candidate_table(info), hide_index=True, height=480,
                 column_config={c: st.column_config.NumberColumn(format="%.3f")
                                for c in ("mean ARI with the others", "ARI with the consensus")})


def confidence_values(run_id: str) -> pd.Series | None:
    """Per-cell confidence of a consensus run for every cell of the dataset (NaN for cells it dropped)."""
    res = state.result(run_id)
    info = _info(res)
    if info is None:
        return None
    full = np.full(res.n_input_cells, np.nan)
    full[res.cell_index] = np.asarray(info["confidence"], dtype=float)
    return pd.Series(full)


def low_confidence_cells(run_id: str) -> np.ndarray:
    """A threshold slider; returns the rows of the cells below it when the user asks for them, else empty."""
    conf = confidence_values(run_id)
    if conf is None:
        return np.zeros(0, dtype=int)
    c1, c2 = st.columns([1, 2])
    on = c1.checkbox("Select low-confidence cells", key=f"lowconf_on_{run_id}",
                     help="Cells whose consensus cluster the candidate clusterings disagree on")
    thr = c2.slider("Confidence below", 0.0, 1.0, 0.5, 0.05, key=f"lowconf_thr_{run_id}", disabled=not on)
    if not on:
        return np.zeros(0, dtype=int)
    return np.flatnonzero(conf.to_numpy() < thr)
