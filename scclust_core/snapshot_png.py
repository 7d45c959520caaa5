"""The snapshot grid as a PNG image, for the live training view.

Why an image: a Plotly grid of 6 epochs × 2 rows × ~1,000 cells is redrawn by the browser on every update of the
page, and the live page updates every second or two. Measured on 2 cores with the app and Chromium on the same
machine, that redrawing took about as much CPU as the training it showed. An image is drawn once here (about
0.2 s) and costs the browser nothing until it changes. The finished run shows the interactive Plotly grid and
player (:func:`scclust_core.plots.snapshot_grid`); both draw the same panels with the same colours.
"""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np

from . import plots

__all__ = ["snapshot_grid_png"]

#: legend entries per column, and columns at most, before "+N more" (the finished run's interactive grid lists all)
LEGEND_ROWS, LEGEND_COLS = 12, 2
LEGEND_COL_IN = 1.75  # inches per legend column (labels are shortened to fit)


def snapshot_grid_png(snapshots: Sequence, reference: Sequence | None = None, *, max_cols: int = 6,
                      reference_name: str = "reference", dpi: int = 80) -> bytes:
    """PNG of the snapshots :func:`plots.pick_snapshot_indices` picks: top row coloured by the clusters at that
    epoch (matched across epochs, :func:`plots.stable_snapshot_labels`), bottom row by ``reference`` when given
    (``reference[i]`` belongs to snapshot cell ``i``)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    snaps = list(snapshots)
    if not snaps:
        raise ValueError("snapshot_grid_png needs at least one snapshot")
    ids = plots.stable_snapshot_labels(snaps)
    picked = plots.pick_snapshot_indices(len(snaps), max_cols)
    rows = [("clusters", [[str(v) for v in ids[k]] for k in picked],
             plots.cluster_colours(ids[k] for k in picked))]
    if reference is not None:
        ref = plots.label_strings(reference)
        rows.append((reference_name, [ref.to_numpy()] * len(picked), plots.palette(plots.categories(ref))))
    present = [set(np.concatenate([np.asarray(v) for v in labels])) for _, labels, _ in rows]
    legend_in = LEGEND_COL_IN * max(_legend_cols(len(p)) for p in present) + 0.2
    width = 1.9 * len(picked) + 0.3 + legend_in
    fig = Figure(figsize=(width, 1.9 * len(rows) + 0.3), dpi=dpi)
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    xy = [_unit_box(np.asarray(snaps[k].xy, dtype=float)) for k in picked]
    for ax, (row_name, labels, colours), shown in zip(axes, rows, present):  # a row of panels in one axes
        ax.scatter(np.concatenate([p[:, 0] + c * _STEP for c, p in enumerate(xy)]),
                   np.concatenate([p[:, 1] for p in xy]), s=3, linewidths=0,
                   c=[colours.get(v, plots.MISSING_COLOUR) for lab in labels for v in lab])
        for c in range(len(picked)):
            ax.add_patch(Rectangle((c * _STEP, 0), 1, 1, fill=False, linewidth=0.6, edgecolor="#888888"))
        ax.set_xlim(-0.02, (len(picked) - 1) * _STEP + 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_axis_off()
        ax.text(-0.04, 0.5, row_name, rotation=90, ha="right", va="center", fontsize=9)
        _legend(ax, row_name, colours, present=shown)
    for c, k in enumerate(picked):
        phase = snaps[k].phase
        axes[0].text(c * _STEP + 0.5, 1.04, f"epoch {snaps[k].epoch}" + (f" · {phase}" if phase != "train" else ""),
                     ha="center", va="bottom", fontsize=9)
    fig.subplots_adjust(left=0.03, right=1 - legend_in / width, top=1 - 0.3 / (1.9 * len(rows) + 0.3), bottom=0.02,
                        hspace=0.05)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


_STEP = 1.08  # panel width 1 plus the gap


def _unit_box(xy: np.ndarray) -> np.ndarray:
    """Coordinates scaled into [0.03, 0.97]² (each panel keeps its own scale, like the interactive grid)."""
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    return 0.03 + 0.94 * (xy - lo) / np.where(hi > lo, hi - lo, 1.0)


def _legend_cols(n: int) -> int:
    return min(LEGEND_COLS, max(1, -(-n // LEGEND_ROWS)))


def _legend(ax, title: str, colours: dict[str, str], *, present: set[str]) -> None:
    from matplotlib.lines import Line2D

    names = [n for n in colours if n in present] + sorted(present - set(colours))
    cols = _legend_cols(len(names))
    shown = names[:LEGEND_ROWS * cols - (len(names) > LEGEND_ROWS * cols)]
    handles = [Line2D([], [], marker="o", linestyle="", markersize=5, color=colours.get(n, plots.MISSING_COLOUR),
                      label=plots.short_label(n, 20)) for n in shown]
    if len(names) > len(shown):
        handles.append(Line2D([], [], linestyle="", label=f"+{len(names) - len(shown)} more"))
    ax.legend(handles=handles, title=title, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7,
              title_fontsize=8, frameon=False, ncol=cols, columnspacing=0.6, handletextpad=0.2, labelspacing=0.25)
