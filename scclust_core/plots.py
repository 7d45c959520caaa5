"""Plotly figure builders for the app and notebooks (no Streamlit here).

Every function takes plain arrays/DataFrames and returns a :class:`plotly.graph_objects.Figure`.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import plotly.colors as pc
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = [
    "palette", "qc_histograms", "loss_curves", "metric_curves", "loss_series", "metric_series", "phase_spans",
    "METRIC_KEYS", "series_colour", "snapshot_grid", "snapshot_player",
    "embedding_scatter", "cluster_sizes", "composition_bar", "sample_composition", "dotplot", "heatmap", "violin", "sankey",
    "contingency_heatmap", "pick_snapshots", "pick_snapshot_indices", "best_and_final", "stable_snapshot_labels",
    "match_clusters", "short_label", "categories", "cluster_colours", "MISSING_COLOUR", "label_strings",
]

_PALETTE = pc.qualitative.Plotly + pc.qualitative.D3 + pc.qualitative.Dark24 + pc.qualitative.Light24
MISSING_COLOUR = "#cccccc"
_LAYOUT = dict(template="plotly_white", margin=dict(l=40, r=20, t=50, b=40))


def palette(categories: Sequence) -> dict[str, str]:
    """A stable colour per category (cycled when there are more categories than colours)."""
    return {str(c): _PALETTE[i % len(_PALETTE)] for i, c in enumerate(categories)}


def series_colour(i: int) -> str:
    """The colour of the ``i``-th line of a chart (the palette cycled)."""
    return _PALETTE[i % len(_PALETTE)]


def label_strings(values: Sequence) -> pd.Series:
    """Labels as text, missing values as ``"n/a"`` (so they get a legend entry and a grey colour)."""
    v = pd.Series(values)
    return v.astype(object).where(pd.notna(v), "n/a").astype(str)


def categories(values: pd.Series) -> list[str]:
    """The categories present in ``values``, in category order, else numerically then alphabetically sorted."""
    s = pd.Series(values)
    if isinstance(s.dtype, pd.CategoricalDtype):
        return [str(c) for c in s.cat.categories if (s == c).any()]
    uniq = [str(v) for v in pd.unique(s.dropna())]
    try:
        return sorted(uniq, key=lambda v: (0, float(v), "") if _isnum(v) else (1, 0.0, v))
    except ValueError:  # pragma: no cover
        return sorted(uniq)


def _isnum(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


# --------------------------------------------------------------------------- data / QC
def qc_histograms(qc: pd.DataFrame, *, thresholds: dict[str, tuple[float | None, float | None]] | None = None,
                  groups: Sequence | None = None) -> go.Figure:
    """Histograms of counts per cell, genes per cell and (when present) % mitochondrial counts.

    ``thresholds``: ``{column: (low, high)}`` drawn as dashed lines (the current filter settings). ``groups``: the
    sample of each cell: one overlaid histogram per sample (its colour as in the Sankey), so a sample of poorer
    quality stands out.
    """
    cols = [c for c in ("total_counts", "n_genes", "pct_mito") if c in qc]
    titles = {"total_counts": "Counts per cell", "n_genes": "Genes detected per cell", "pct_mito": "% mitochondrial counts"}
    fig = make_subplots(rows=1, cols=len(cols), subplot_titles=[titles[c] for c in cols])
    for i, c in enumerate(cols, start=1):
        if groups is None:
            fig.add_trace(go.Histogram(x=qc[c], nbinsx=60, marker_color=_PALETTE[i - 1], showlegend=False,
                                       name=titles[c]), row=1, col=i)
        else:
            _sample_histograms(fig, qc[c].to_numpy(), groups, col=i)
        for v in (thresholds or {}).get(c, (None, None)):
            if v is not None:
                fig.add_vline(x=v, line_dash="dash", line_color="crimson", row=1, col=i)
        fig.update_xaxes(title_text=_QC_AXES[c], row=1, col=i)
        fig.update_yaxes(title_text="number of cells" if i == 1 else None, row=1, col=i)
    fig.update_layout(height=320 if groups is None else 360, barmode="overlay", **_LAYOUT)
    return fig


def _sample_histograms(fig: go.Figure, values: np.ndarray, groups: Sequence, *, col: int) -> None:
    """One translucent histogram per sample in subplot ``col`` (the legend is shown once, on the first)."""
    g = label_strings(groups).to_numpy()
    cats = categories(pd.Series(groups))
    cols = palette(cats)
    for name in cats:
        fig.add_trace(go.Histogram(x=values[g == name], nbinsx=60, marker_color=cols[name], opacity=0.55,
                                   name=short_label(name), legendgroup=name, showlegend=col == 1),
                      row=1, col=col)


_QC_AXES = {"total_counts": "total counts per cell (UMIs / reads)", "n_genes": "genes with ≥ 1 count",
            "pct_mito": "% of the cell's counts from MT- genes"}


# --------------------------------------------------------------------------- training curves
def _history_frame(history: Iterable) -> pd.DataFrame:
    rows = []
    for h in history:
        r = h.to_row() if hasattr(h, "to_row") else dict(h)
        rows.append(r)
    return pd.DataFrame(rows)


_METRIC_NAMES = {"metric_ari": "ARI", "metric_nmi": "NMI", "metric_silhouette": "silhouette", "metric_ca": "accuracy"}
METRIC_KEYS = {name: col[len("metric_"):] for col, name in _METRIC_NAMES.items()}


def loss_series(history: Iterable) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, epochs, values)`` per (phase, loss component) with a value, named as in the legends; shared by
    :func:`loss_curves` and the live view's image (:mod:`scclust_core.curves_png`)."""
    df = _history_frame(history)
    if df.empty:
        return []
    multi = df["phase"].nunique() > 1
    loss_cols = [c for c in df.columns if c.startswith("loss_")]
    return [(f"{c[5:]} ({phase})" if multi else c[5:], sub["epoch"].to_numpy(), sub[c].to_numpy(dtype=float))
            for phase, sub in df.groupby("phase", sort=False) for c in loss_cols if sub[c].notna().any()]


def metric_series(history: Iterable) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, epochs, values)`` per score (ARI, NMI, silhouette, accuracy), scored epochs only."""
    df = _history_frame(history)
    mcols = [c for c in _METRIC_NAMES if c in df.columns and df[c].notna().any()] if not df.empty else []
    scored = {c: df[df[c].notna()] for c in mcols}
    return [(_METRIC_NAMES[c], sub["epoch"].to_numpy(), sub[c].to_numpy(dtype=float)) for c, sub in scored.items()]


def phase_spans(history: Iterable) -> list[tuple[str, float, float]]:
    """``(phase, first epoch - 0.5, last epoch + 0.5)`` per training phase, when there are two or more."""
    df = _history_frame(history)
    if df.empty or df["phase"].nunique() < 2:
        return []
    return [(str(phase), sub["epoch"].min() - 0.5, sub["epoch"].max() + 0.5)
            for phase, sub in df.groupby("phase", sort=False)]


def loss_curves(history: Iterable, *, title: str = "Loss per component") -> go.Figure:
    """One line per (phase, loss component) against the epoch; phases are shaded."""
    history = list(history)
    fig = go.Figure()
    series = loss_series(history)
    if not series:
        fig.update_layout(title=title, height=320, **_LAYOUT)
        fig.add_annotation(text="No epochs yet (this method does not train for epochs)",
                           showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
        return fig
    for i, (name, x, y) in enumerate(series):
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", marker_size=4, name=name, line_color=series_colour(i)))
    _shade_phases(fig, history)
    _epoch_ticks(fig, max(x.max() for _, x, _ in series))
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_title="loss", height=340, legend_title_text="component",
                      **_LAYOUT)
    return fig


def _epoch_ticks(fig: go.Figure, last_epoch: int) -> None:
    """Whole-number epoch ticks (no 1.5 epochs on short runs)."""
    if last_epoch <= 20:
        fig.update_xaxes(dtick=1)
    else:
        fig.update_xaxes(tickformat="d")


def _shade_phases(fig: go.Figure, history: list) -> None:
    for j, (phase, lo, hi) in enumerate(phase_spans(history)):
        fig.add_vrect(x0=lo, x1=hi, fillcolor=series_colour(j), opacity=0.06, line_width=0, annotation_text=phase,
                      annotation_position="top left")


def best_and_final(history: Iterable, metric: str) -> dict[str, tuple[int, float]] | None:
    """``{"final": (epoch, value), "best": (epoch, value)}`` of a per-epoch score, or None when never scored.

    Display only: the result of a run is always its last epoch; labels never pick an epoch.
    """
    df = _history_frame(history)
    col = f"metric_{metric}"
    if df.empty or col not in df.columns or not df[col].notna().any():
        return None
    sub = df[df[col].notna()]
    last = sub.iloc[-1]
    best = sub.loc[sub[col].idxmax()]
    return {"final": (int(last["epoch"]), float(last[col])), "best": (int(best["epoch"]), float(best[col]))}


def metric_curves(history: Iterable, *, title: str = "Agreement per epoch") -> go.Figure:
    """ARI/NMI against the reference annotation (or silhouette without one) per epoch, with the final and the
    best epoch of the first score marked (the result is the final epoch; the best one is shown, never chosen)."""
    history = list(history)
    fig = go.Figure()
    series = metric_series(history)
    for i, (name, x, y) in enumerate(series):  # methods score only some epochs: connect the scored ones
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", marker_size=5, name=name,
                                 line_color=series_colour(i + 3)))
    if series:
        _mark_best_final(fig, history, METRIC_KEYS[series[0][0]])
        _shade_phases(fig, history)
        _epoch_ticks(fig, max(x.max() for _, x, _ in series))
    else:
        fig.add_annotation(text="No scored epoch yet", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_title="score", height=340, **_LAYOUT)
    return fig


def _mark_best_final(fig: go.Figure, history: Iterable, metric: str) -> None:
    bf = best_and_final(history, metric)
    if bf is None:
        return
    name = _METRIC_NAMES[f"metric_{metric}"]
    (fe, fv), (be, bv) = bf["final"], bf["best"]
    fig.add_trace(go.Scatter(x=[fe], y=[fv], mode="markers+text", name=f"final epoch {fe}: {name} {fv:.3f}",
                             marker=dict(symbol="diamond", size=13, color="black"), text=[f"final {fv:.3f}"],
                             textposition="bottom left"))
    if be != fe:
        fig.add_trace(go.Scatter(x=[be], y=[bv], mode="markers+text", name=f"best epoch {be}: {name} {bv:.3f}",
                                 marker=dict(symbol="star", size=14, color="goldenrod"), text=[f"best {bv:.3f}"],
                                 textposition="top center"))


# --------------------------------------------------------------------------- snapshots (CICL Fig. 3 style)
def match_clusters(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
    """``current`` relabelled so each cluster takes the id of the ``previous`` cluster it overlaps most.

    Both arrays label the same cells. The matching is one-to-one and maximises the total overlap (Hungarian
    algorithm on the contingency table); clusters left without a partner get the smallest ids unused by both.
    """
    from scipy.optimize import linear_sum_assignment

    prev, cur = np.asarray(previous), np.asarray(current)
    if prev.shape != cur.shape:
        raise ValueError(f"match_clusters needs labels of the same cells: got {prev.shape} and {cur.shape}")
    pu, pinv = np.unique(prev, return_inverse=True)
    cu, cinv = np.unique(cur, return_inverse=True)
    overlap = np.zeros((len(cu), len(pu)), dtype=np.int64)
    np.add.at(overlap, (cinv, pinv), 1)
    rows, cols = linear_sum_assignment(-overlap)
    new_id = {int(cu[r]): int(pu[c]) for r, c in zip(rows, cols) if overlap[r, c] > 0}
    used = set(new_id.values()) | {int(v) for v in pu}
    free = (i for i in range(len(cu) + len(pu) + 1) if i not in used)
    for c in cu:
        if int(c) not in new_id:
            new_id[int(c)] = next(free)
    return np.array([new_id[int(c)] for c in cu], dtype=np.int64)[cinv]


def stable_snapshot_labels(snapshots: Sequence) -> list[np.ndarray]:
    """Cluster ids of every snapshot matched to the previous snapshot's (:func:`match_clusters`), so a cluster
    keeps its id, hence its colour, from one epoch to the next; the first snapshot keeps its own ids."""
    out: list[np.ndarray] = []
    for s in snapshots:
        lab = np.asarray(s.labels, dtype=np.int64)
        out.append(lab if not out or out[-1].shape != lab.shape else match_clusters(out[-1], lab))
    return out


def pick_snapshots(snapshots: Sequence, max_cols: int = 6) -> list:
    """At most ``max_cols`` snapshots evenly spread from the first to the last (both kept)."""
    return [snapshots[i] for i in pick_snapshot_indices(len(snapshots), max_cols)]


def pick_snapshot_indices(n: int, max_cols: int = 6) -> list[int]:
    """Indices of the snapshots :func:`snapshot_grid` draws (all when ``n <= max_cols``)."""
    if n <= max_cols:
        return list(range(n))
    return [int(i) for i in np.unique(np.linspace(0, n - 1, max_cols).round().astype(int))]


def cluster_colours(ids: Iterable[np.ndarray]) -> dict[str, str]:
    """Colour per matched cluster id (another palette than the reference's, so cluster 0 and the first cell
    type do not look the same)."""
    alt = pc.qualitative.Dark24 + pc.qualitative.Alphabet
    top = max((int(np.max(a)) for a in ids if len(a)), default=0)
    return {str(i): alt[i % len(alt)] for i in range(top + 1)}


def _scatter_traces(xy: np.ndarray, labels: Sequence, colors: dict[str, str], *, size: float = 4,
                    showlegend: bool = False, legendgroup_prefix: str = "", hover: Sequence | None = None,
                    name_prefix: str = "", legend: str = "legend") -> list:
    s = label_strings(labels)
    traces = []
    order = list(colors) + [c for c in pd.unique(s) if c not in colors]
    for cat in order:
        m = (s == cat).to_numpy()
        if not m.any():
            continue
        traces.append(go.Scattergl(
            x=xy[m, 0], y=xy[m, 1], mode="markers", name=f"{name_prefix}{cat}", legendgroup=f"{legendgroup_prefix}{cat}",
            customdata=np.flatnonzero(m).tolist(),  # the snapshot cell each point is (same cells in every panel)
            showlegend=showlegend, marker=dict(size=size, color=colors.get(cat, MISSING_COLOUR), line_width=0), legend=legend,
            hovertext=None if hover is None else np.asarray(hover)[m], hoverinfo="text+name" if hover is not None else "name",
        ))
    return traces


def snapshot_grid(snapshots: Sequence, reference: Sequence | None = None, *, max_cols: int = 6,
                  reference_name: str = "reference") -> go.Figure:
    """Grid of embedding snapshots: one column per drawn epoch (:func:`pick_snapshot_indices`); top row coloured
    by the clusters at that epoch (ids matched across epochs, so colours are stable), bottom row by the reference
    annotation (when given; ``reference[i]`` belongs to snapshot cell ``i``). Two legends: clusters, reference."""
    snaps = list(snapshots)
    rows = 2 if reference is not None else 1
    if not snaps:
        fig = go.Figure()
        fig.update_layout(title="No snapshots yet", height=200, **_LAYOUT)
        return fig
    ids = stable_snapshot_labels(snaps)
    picked = pick_snapshot_indices(len(snaps), max_cols)
    titles = [f"epoch {snaps[k].epoch}" + (f" · {snaps[k].phase}" if snaps[k].phase not in ("train",) else "")
              for k in picked]
    fig = make_subplots(rows=rows, cols=len(picked), subplot_titles=titles + [""] * len(picked) * (rows - 1),
                        horizontal_spacing=0.01, vertical_spacing=0.04)
    ccols = cluster_colours(ids[k] for k in picked)
    if reference is not None:
        ref = pd.Series(reference)
        rcols = palette(categories(ref))
    shown: set[str] = set()
    for j, k in enumerate(picked, start=1):
        s, lab = snaps[k], [str(v) for v in ids[k]]
        for t in _scatter_traces(s.xy, lab, ccols, size=3, legendgroup_prefix="c", name_prefix="cluster "):
            t.showlegend = t.name not in shown
            shown.add(t.name)
            fig.add_trace(t, row=1, col=j)
        if reference is not None:
            for t in _scatter_traces(s.xy, ref.to_numpy(), rcols, size=3, showlegend=(j == 1), legendgroup_prefix="r",
                                     legend="legend2"):
                fig.add_trace(t, row=2, col=j)
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(title_text="clusters", row=1, col=1)
    if reference is not None:
        fig.update_yaxes(title_text=reference_name, row=2, col=1)
    fig.update_layout(height=220 * rows + 60, title="Embedding snapshots during training (PCA of the latent space)",
                      legend=dict(title="clusters (matched across epochs)", itemsizing="constant", y=1, yanchor="top"),
                      legend2=dict(title=reference_name, itemsizing="constant", y=0.45, yanchor="top"), **_LAYOUT)
    return fig


def snapshot_player(snapshots: Sequence, reference: Sequence | None = None, *, color_by: str = "clusters",
                    reference_name: str = "reference") -> go.Figure:
    """One scatter with a slider and a play button over every snapshot (colour: clusters, matched across epochs
    so each keeps its colour, or the reference annotation)."""
    snaps = list(snapshots)
    fig = go.Figure()
    if not snaps:
        fig.update_layout(title="No snapshots yet", height=200, **_LAYOUT)
        return fig
    use_ref = color_by != "clusters" and reference is not None
    ids = stable_snapshot_labels(snaps)
    if use_ref:
        ref = pd.Series(reference)
        cols = palette(categories(ref))
    else:
        cols = cluster_colours(ids)
    cats = list(cols)

    def traces(k):
        lab = pd.Series(reference).to_numpy() if use_ref else np.array([str(v) for v in ids[k]])
        lab = label_strings(lab).to_numpy()
        out = []
        for c in cats:  # same trace list in every frame (empty traces keep the animation stable)
            m = lab == c
            out.append(go.Scattergl(x=snaps[k].xy[m, 0], y=snaps[k].xy[m, 1], mode="markers",
                                    name=c if use_ref else f"cluster {c}", marker=dict(size=5, color=cols[c], line_width=0)))
        return out

    all_xy = np.concatenate([s.xy for s in snaps])
    pad = 0.05 * (all_xy.max(0) - all_xy.min(0) + 1e-9)
    for t in traces(len(snaps) - 1):
        fig.add_trace(t)
    fig.frames = [go.Frame(data=traces(k), name=str(k)) for k in range(len(snaps))]
    steps = [dict(method="animate", label=f"{s.epoch}", args=[[str(k)], dict(mode="immediate", frame=dict(duration=0, redraw=True),
                                                                             transition=dict(duration=0))])
             for k, s in enumerate(snaps)]
    fig.update_layout(
        height=480, title=f"Snapshots (colour: {reference_name if use_ref else 'clusters, matched across epochs'})",
        xaxis=dict(range=[all_xy[:, 0].min() - pad[0], all_xy[:, 0].max() + pad[0]], showticklabels=False, title="PC 1"),
        yaxis=dict(range=[all_xy[:, 1].min() - pad[1], all_xy[:, 1].max() + pad[1]], showticklabels=False, title="PC 2"),
        sliders=[dict(active=len(snaps) - 1, steps=steps, currentvalue=dict(prefix="epoch "), pad=dict(t=40))],
        updatemenus=[dict(type="buttons", showactive=False, x=0, y=-0.08, xanchor="left", buttons=[
            dict(label="▶ Play", method="animate",
                 args=[None, dict(frame=dict(duration=500, redraw=True), fromcurrent=False, transition=dict(duration=0))]),
            dict(label="❚❚ Pause", method="animate", args=[[None], dict(mode="immediate", frame=dict(duration=0, redraw=False))]),
        ])],
        legend=dict(itemsizing="constant", title=reference_name if use_ref else "cluster"), **_LAYOUT,
    )
    return fig


# --------------------------------------------------------------------------- explore
def embedding_scatter(xy: np.ndarray, color: Sequence | None = None, *, title: str = "", color_name: str = "",
                      continuous: bool | None = None, hover: Sequence | None = None, axis_prefix: str = "UMAP",
                      point_size: float | None = None) -> go.Figure:
    """Scatter of a 2-D embedding coloured by a categorical or a continuous value (box/lasso select enabled)."""
    xy = np.asarray(xy, dtype=float)
    n = len(xy)
    size = point_size or (6 if n < 2000 else 4 if n < 20000 else 2)
    fig = go.Figure()
    if color is None:
        fig.add_trace(go.Scattergl(x=xy[:, 0], y=xy[:, 1], mode="markers", marker=dict(size=size, color="#4c78a8"),
                                   hovertext=hover, hoverinfo="text" if hover is not None else "x+y"))
    else:
        s = pd.Series(color)
        if continuous is None:
            continuous = pd.api.types.is_numeric_dtype(s) and not isinstance(s.dtype, pd.CategoricalDtype) and s.nunique() > 30
        if continuous:
            v = s.to_numpy(dtype=float)
            order = np.argsort(np.nan_to_num(v, nan=-np.inf))  # high values drawn on top
            fig.add_trace(go.Scattergl(
                x=xy[order, 0], y=xy[order, 1], mode="markers", customdata=order,
                marker=dict(size=size, color=v[order], colorscale="Viridis", showscale=True,
                            colorbar=dict(title=color_name)),
                hovertext=None if hover is None else np.asarray(hover)[order], name=color_name,
            ))
        else:
            cols = palette(categories(s))
            lab = label_strings(s)
            for cat in list(cols) + (["n/a"] if (lab == "n/a").any() else []):
                m = (lab == cat).to_numpy()
                if not m.any():
                    continue
                idx = np.flatnonzero(m)
                fig.add_trace(go.Scattergl(
                    x=xy[m, 0], y=xy[m, 1], mode="markers", name=f"{cat} ({m.sum()})", customdata=idx,
                    marker=dict(size=size, color=cols.get(cat, MISSING_COLOUR), line_width=0),
                    hovertext=None if hover is None else np.asarray(hover)[m],
                ))
    fig.update_layout(title=title, height=560, dragmode="lasso", legend=dict(title=color_name, itemsizing="constant"),
                      xaxis=dict(title=f"{axis_prefix} 1", showticklabels=False, zeroline=False),
                      yaxis=dict(title=f"{axis_prefix} 2", showticklabels=False, zeroline=False), **_LAYOUT)
    return fig


def cluster_sizes(labels: Sequence, *, title: str = "Cluster sizes") -> go.Figure:
    s = pd.Series(labels)
    cats = categories(s)
    counts = s.astype(object).astype(str).value_counts()
    y = [int(counts.get(c, 0)) for c in cats]
    cols = palette(cats)
    fig = go.Figure(go.Bar(x=cats, y=y, marker_color=[cols[c] for c in cats], text=y, textposition="outside"))
    fig.update_layout(title=title, xaxis_title="cluster", yaxis_title="cells", height=320, **_LAYOUT)
    fig.update_xaxes(type="category")
    return fig


def composition_bar(selected: Sequence, *, title: str = "Composition of the selected cells") -> go.Figure:
    s = label_strings(selected)
    counts = s.value_counts()
    frac = counts / counts.sum() * 100
    cols = palette(counts.index)
    fig = go.Figure(go.Bar(y=counts.index, x=frac.values, orientation="h", marker_color=[cols[c] for c in counts.index],
                           text=[f"{n} ({p:.0f}%)" for n, p in zip(counts.values, frac.values)], textposition="auto"))
    fig.update_layout(title=title, xaxis_title="% of selected cells", height=max(250, 30 * len(counts) + 100),
                      yaxis=dict(autorange="reversed", type="category"), **_LAYOUT)
    return fig


def sample_composition(labels: Sequence, samples: Sequence, *, sample_name: str = "sample",
                       title: str | None = None) -> go.Figure:
    """Per cluster, the share of its cells from each sample (stacked horizontal bars, one colour per sample as in
    the Sankey); a square in the cluster's colour (as on every other page) starts each row. Cells missing in
    either are left out."""
    sa, sb = pd.Series(labels).reset_index(drop=True), pd.Series(samples).reset_index(drop=True)
    ok = (sa.notna() & sb.notna()).to_numpy()
    ca, cb = categories(sa[ok]), categories(sb[ok])
    tab = pd.crosstab(sa[ok].astype(str), sb[ok].astype(str)).reindex(index=ca, columns=cb, fill_value=0)
    share = tab.div(tab.sum(axis=1).replace(0, 1), axis=0) * 100
    cl_cols, s_cols = palette(ca), palette(cb)
    fig = go.Figure()
    for s_name in cb:
        fig.add_trace(go.Bar(y=ca, x=share[s_name], orientation="h", name=short_label(s_name),
                             marker_color=s_cols[s_name],
                             customdata=np.array([[int(n), s_name] for n in tab[s_name]], dtype=object),
                             hovertemplate="cluster %{y}: %{x:.0f}% from %{customdata[1]} "
                                           "(%{customdata[0]} cells)<extra></extra>"))
    fig.add_trace(go.Scatter(y=ca, x=[-4] * len(ca), mode="markers", showlegend=False, hoverinfo="skip",
                             marker=dict(symbol="square", size=14, color=[cl_cols[c] for c in ca])))
    fig.update_layout(barmode="stack", title=title or f"{sample_name.capitalize()} composition of each cluster",
                      xaxis=dict(title="% of the cluster's cells", range=[-7, 100]),
                      legend=dict(title_text=sample_name, traceorder="normal"),
                      yaxis=dict(title="cluster", type="category", autorange="reversed"),
                      height=max(300, 28 * len(ca) + 140), **_LAYOUT)
    return fig


# --------------------------------------------------------------------------- markers
def dotplot(mean_expr: pd.DataFrame, frac_expr: pd.DataFrame, *, title: str = "Marker genes") -> go.Figure:
    """Dot plot: rows = clusters, columns = genes; dot size = fraction expressing, colour = mean expression."""
    genes = list(mean_expr.columns)
    clusters = [str(c) for c in mean_expr.index]
    gx, cy = np.meshgrid(np.arange(len(genes)), np.arange(len(clusters)))
    frac = frac_expr.loc[mean_expr.index, genes].to_numpy(dtype=float)
    mean = mean_expr.to_numpy(dtype=float)
    fig = go.Figure(go.Scatter(
        x=np.array(genes)[gx.ravel()], y=np.array(clusters)[cy.ravel()], mode="markers",
        marker=dict(size=4 + 22 * np.sqrt(frac.ravel()), color=mean.ravel(), colorscale="Reds", showscale=True,
                    colorbar=dict(title="mean expr."), line=dict(width=0.5, color="#666")),
        hovertext=[f"{g} in {c}: {100 * f:.0f}% expressing, mean {m:.2f}"
                   for g, c, f, m in zip(np.array(genes)[gx.ravel()], np.array(clusters)[cy.ravel()], frac.ravel(), mean.ravel())],
        hoverinfo="text",
    ))
    fig.update_layout(title=title + " (dot size = fraction of cells expressing)", height=max(320, 28 * len(clusters) + 160),
                      xaxis=dict(tickangle=-60, type="category"), yaxis=dict(title="cluster", type="category", autorange="reversed"),
                      **_LAYOUT)
    return fig


def heatmap(mean_expr: pd.DataFrame, *, title: str = "Mean expression (z-score per gene)", zscore: bool = True) -> go.Figure:
    m = mean_expr.astype(float)
    if zscore:
        sd = m.std(axis=0).replace(0, 1)
        m = (m - m.mean(axis=0)) / sd
    fig = go.Figure(go.Heatmap(z=m.to_numpy(), x=list(m.columns), y=[str(c) for c in m.index], colorscale="RdBu_r",
                               zmid=0 if zscore else None, colorbar=dict(title="z" if zscore else "mean")))
    fig.update_layout(title=title, height=max(320, 26 * len(m.index) + 160),
                      xaxis=dict(tickangle=-60, type="category"), yaxis=dict(title="cluster", type="category", autorange="reversed"),
                      **_LAYOUT)
    return fig


def violin(values: pd.DataFrame, *, title: str = "Expression per cluster") -> go.Figure:
    """``values``: long table with columns cluster, gene, expression."""
    genes = list(pd.unique(values["gene"]))
    fig = make_subplots(rows=len(genes), cols=1, shared_xaxes=True, subplot_titles=genes, vertical_spacing=0.04)
    cats = categories(values["cluster"])
    cols = palette(cats)
    for i, g in enumerate(genes, start=1):
        sub = values[values["gene"] == g]
        for c in cats:
            v = sub.loc[sub["cluster"].astype(str) == c, "expression"]
            fig.add_trace(go.Violin(x=[c] * len(v), y=v, name=c, line_color=cols[c], showlegend=False, points=False,
                                    spanmode="hard", scalemode="width", width=0.8), row=i, col=1)
    fig.update_xaxes(type="category")
    fig.update_layout(title=title, height=170 * len(genes) + 100, **_LAYOUT)
    return fig


# --------------------------------------------------------------------------- compare
def sankey(a: Sequence, b: Sequence, *, a_name: str = "clusters", b_name: str = "reference", min_cells: int = 1) -> go.Figure:
    """Flows from the categories of ``a`` (left) to those of ``b`` (right); cells missing in either are left out."""
    sa, sb = pd.Series(a).reset_index(drop=True), pd.Series(b).reset_index(drop=True)
    ok = sa.notna() & sb.notna()
    sa, sb = sa[ok].astype(str), sb[ok].astype(str)
    ca, cb = categories(pd.Series(a)[ok.values]), categories(pd.Series(b)[ok.values])
    ca = [c for c in ca if (sa == c).any()]
    cb = [c for c in cb if (sb == c).any()]
    tab = pd.crosstab(sa, sb).reindex(index=ca, columns=cb, fill_value=0)
    colors_a, colors_b = palette(ca), palette(cb)
    labels = list(ca) + list(cb)  # left column = a, right column = b (named in the title)
    src, dst, val, lcol = [], [], [], []
    for i, c in enumerate(ca):
        for j, d in enumerate(cb):
            v = int(tab.iat[i, j])
            if v >= min_cells:
                src.append(i)
                dst.append(len(ca) + j)
                val.append(v)
                lcol.append(_rgba(colors_a[c], 0.45))
    fig = go.Figure(go.Sankey(
        arrangement="snap",
        node=dict(label=[short_label(v) for v in labels], customdata=labels, pad=12, thickness=14,
                  hovertemplate="%{customdata}<br>%{value} cells<extra></extra>",
                  color=[colors_a[c] for c in ca] + [colors_b[c] for c in cb]),
        link=dict(source=src, target=dst, value=val, color=lcol),
    ))
    fig.update_layout(title=f"{a_name} (left) → {b_name} (right)", height=max(420, 22 * max(len(ca), len(cb)) + 120),
                      template="plotly_white", margin=dict(l=10, r=10, t=50, b=10), font=dict(size=13))
    return fig


def short_label(name: str, max_len: int = 22) -> str:
    """``name`` cut to ``max_len`` characters with an ellipsis (the full name goes in the hover text)."""
    name = str(name)
    return name if len(name) <= max_len else name[: max_len - 1].rstrip() + "…"


def _rgba(color: str, alpha: float) -> str:
    if color.startswith("#"):
        r, g, b = pc.hex_to_rgb(color)
    elif color.startswith("rgb"):
        r, g, b = [int(float(v)) for v in color[color.index("(") + 1:color.index(")")].split(",")[:3]]
    else:  # pragma: no cover
        return color
    return f"rgba({r},{g},{b},{alpha})"


def contingency_heatmap(a: Sequence, b: Sequence, *, a_name: str = "clusters", b_name: str = "reference",
                        normalize: bool = True) -> go.Figure:
    """Cells per (a, b) pair; with ``normalize`` each row of ``a`` is shown as fractions (the counts on hover)."""
    sa, sb = pd.Series(a).reset_index(drop=True), pd.Series(b).reset_index(drop=True)
    ok = sa.notna() & sb.notna()
    ca, cb = categories(pd.Series(a)[ok.values]), categories(pd.Series(b)[ok.values])
    tab = pd.crosstab(sa[ok].astype(str), sb[ok].astype(str)).reindex(index=ca, columns=cb, fill_value=0)
    z = tab.div(tab.sum(axis=1).replace(0, 1), axis=0) if normalize else tab
    fig = go.Figure(go.Heatmap(z=z.to_numpy(), x=cb, y=ca, colorscale="Blues", text=tab.to_numpy(),
                               texttemplate="%{text}", hovertemplate=f"{a_name} %{{y}} · {b_name} %{{x}}: %{{text}} cells<extra></extra>",
                               colorbar=dict(title="fraction of row" if normalize else "cells")))
    fig.update_layout(title=f"Contingency: {a_name} × {b_name}", height=max(360, 26 * len(ca) + 180),
                      xaxis=dict(title=b_name, type="category", tickangle=-45),
                      yaxis=dict(title=a_name, type="category", autorange="reversed"), **_LAYOUT)
    return fig
