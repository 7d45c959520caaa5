"""The loss and score curves as one PNG image, for the live training view.

Why an image: the live view redraws its curves whenever a new epoch arrives. Two interactive Plotly charts cost
the browser about 0.7–1 CPU-second per redraw, measured on 2 cores with the app and Chromium on the same machine
(CDP ``Performance.getMetrics``, CICL on 1,000 cells: 19 browser CPU-seconds in a 95-second run); that stole a
core from the training it showed. An image is drawn once here (about 0.4 s of the server's CPU for 25 epochs,
outside the training process; the live panel spaces its rebuilds by 20× their cost) and costs the browser only
its decoding. The finished run shows the interactive Plotly curves (:func:`scclust_core.plots.loss_curves`,
:func:`scclust_core.plots.metric_curves`), built from the same series.
"""
from __future__ import annotations

import io
from typing import Iterable

from . import plots

__all__ = ["curves_png"]


def curves_png(history: Iterable, *, metrics_title: str = "Agreement per epoch", dpi: int = 80) -> bytes | None:
    """PNG of the loss curves and, when any epoch was scored, the score curves beside them (the final and the best
    epoch of the first score marked, as in :func:`plots.metric_curves`). None before the first epoch."""
    from matplotlib.figure import Figure

    history = list(history)
    losses, scores = plots.loss_series(history), plots.metric_series(history)
    if not losses and not scores:
        return None
    fig = Figure(figsize=(12.0, 3.6), dpi=dpi)
    ax_loss, ax_score = fig.subplots(1, 2)
    _draw(ax_loss, losses, history, title="Loss per component", ylabel="loss", colour_offset=0)
    if scores:
        _draw(ax_score, scores, history, title=metrics_title, ylabel="score", colour_offset=3)
        _mark_best_final(ax_score, history, scores[0][0])
    else:
        ax_score.set_axis_off()
        ax_score.text(0.5, 0.5, "No scored epoch yet", ha="center", va="center", color="#666666")
    # fixed margins with room for the legends (tight_layout measured every text: 0.57 s a build instead of 0.40)
    fig.subplots_adjust(left=0.06, right=0.86, wspace=0.45, bottom=0.15, top=0.9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _draw(ax, series, history: list, *, title: str, ylabel: str, colour_offset: int) -> None:
    """Lines with markers, phases shaded and named, whole-number epoch ticks, legend outside on the right."""
    from matplotlib.ticker import MaxNLocator

    for j, (phase, lo, hi) in enumerate(plots.phase_spans(history)):
        ax.axvspan(lo, hi, color=plots.series_colour(j), alpha=0.06, linewidth=0)
        ax.text(lo, 1.0, f" {phase}", transform=ax.get_xaxis_transform(), va="top", fontsize=7, color="#555555")
    for i, (name, x, y) in enumerate(series):
        ax.plot(x, y, marker="o", markersize=3, linewidth=1.2, color=plots.series_colour(i + colour_offset), label=name)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(title=title, xlabel="epoch", ylabel=ylabel)
    ax.title.set_fontsize(10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _mark_best_final(ax, history: list, score_name: str) -> None:
    bf = plots.best_and_final(history, plots.METRIC_KEYS[score_name])
    if bf is None:
        return
    (fe, fv), (be, bv) = bf["final"], bf["best"]
    ax.plot([fe], [fv], marker="D", markersize=7, color="black", linestyle="")
    ax.annotate(f"final {fv:.3f}", (fe, fv), textcoords="offset points", xytext=(-4, -12), ha="right", fontsize=7)
    if be != fe:
        ax.plot([be], [bv], marker="*", markersize=10, color="goldenrod", linestyle="")
        ax.annotate(f"best {bv:.3f}", (be, bv), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
