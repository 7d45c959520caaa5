import numpy as np
import pytest
import pandas as pd
import plotly.graph_objects as go

from scclust_core import plots
from scclust_core.methods._base import EpochLog, Snapshot


def _history():
    return [EpochLog(e, "pretrain" if e <= 2 else "cluster", {"recon": 1 / e, "kl": 0.1 * e},
                     {"ari": 0.1 * e, "nmi": 0.2}, 0.1, 0.1 * e, 4) for e in range(1, 5)]


def _snaps(n=30, k=8):
    rng = np.random.default_rng(0)
    return [Snapshot(e, "train", rng.normal(size=(n, 2)).astype(np.float32), rng.integers(0, 3, n)) for e in range(k)]


def test_curves():
    fig = plots.loss_curves(_history())
    assert isinstance(fig, go.Figure) and len(fig.data) == 4  # 2 components × 2 phases
    assert {t.name for t in plots.metric_curves(_history()).data} == {"ARI", "NMI", "final epoch 4: ARI 0.400"}
    assert len(plots.loss_curves([]).data) == 0


def test_snapshot_grid_and_player():
    snaps = _snaps()
    ref = pd.Series(["a", "b", "c"] * 10)
    grid = plots.snapshot_grid(snaps, ref, max_cols=4)
    assert len(plots.pick_snapshots(snaps, 4)) == 4
    axes = {t.xaxis for t in grid.data}
    assert len(axes) == 8  # 2 rows × 4 columns
    player = plots.snapshot_player(snaps, ref, color_by="ref")
    assert len(player.frames) == len(snaps) and player.layout.sliders


def test_explore_and_marker_plots():
    xy = np.random.default_rng(0).normal(size=(50, 2))
    lab = pd.Series(pd.Categorical(["x", "y"] * 25))
    fig = plots.embedding_scatter(xy, lab, color_name="cluster")
    assert len(fig.data) == 2 and fig.layout.dragmode == "lasso"
    assert plots.embedding_scatter(xy, np.arange(50.0), continuous=True).data[0].marker.showscale
    assert plots.cluster_sizes(lab).data[0].y == (25, 25)
    assert len(plots.composition_bar(lab[:10]).data) == 1
    mean = pd.DataFrame([[1.0, 0.0], [0.0, 2.0]], index=["x", "y"], columns=["g1", "g2"])
    assert len(plots.dotplot(mean, mean.clip(0, 1)).data[0].x) == 4
    assert plots.heatmap(mean).data[0].z.shape == (2, 2)
    long = pd.DataFrame({"cluster": ["x", "y"] * 5, "gene": "g1", "expression": np.arange(10.0)})
    assert len(plots.violin(long).data) == 2
    qc = pd.DataFrame({"total_counts": [1, 2, 3], "n_genes": [1, 1, 2], "pct_mito": [0, 1, 2.0]})
    assert len(plots.qc_histograms(qc, thresholds={"n_genes": (1, None)}).data) == 3


def test_sankey_and_contingency():
    a = pd.Series(["0", "0", "1", "1", None])
    b = pd.Series(["T", "T", "B", "T", "B"])
    s = plots.sankey(a, b).data[0]
    assert sum(s.link.value) == 4 and len(s.node.label) == 4
    z = plots.contingency_heatmap(a, b).data[0].z
    assert np.allclose(np.asarray(z).sum(axis=1), 1.0)


def test_match_clusters_keeps_ids_of_overlapping_clusters():
    prev = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    cur = np.array([7, 7, 7, 3, 3, 3, 5, 5])  # same partition, other numbers
    assert list(plots.match_clusters(prev, cur)) == list(prev)
    split = np.array([1, 1, 4, 0, 0, 0, 2, 2])  # cluster 0 split in two: the bigger part keeps id 0
    out = plots.match_clusters(prev, split)
    assert list(out[:2]) == [0, 0] and out[2] not in (0, 1, 2) and list(out[3:]) == [1, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="same cells"):
        plots.match_clusters(prev, cur[:3])


def test_snapshot_colours_stable_across_epochs():
    """A cluster whose cells stay together keeps its colour in the grid and the player, whatever its number."""
    xy = np.random.default_rng(0).normal(size=(9, 2)).astype(np.float32)
    a = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    snaps = [Snapshot(0, "train", xy, a), Snapshot(1, "train", xy, (a + 1) % 3), Snapshot(2, "train", xy, 2 - a)]
    ids = plots.stable_snapshot_labels(snaps)
    assert all(list(i) == list(a) for i in ids)

    def colour_of_cell0(fig, col_axis):
        for t in fig.data:
            if t.xaxis == col_axis and len(t.x) and np.isclose(t.x, xy[0, 0]).any():
                return t.marker.color
    grid = plots.snapshot_grid(snaps)
    assert len({colour_of_cell0(grid, ax) for ax in ("x", "x2", "x3")}) == 1
    assert sum(bool(t.showlegend) for t in grid.data) == 3  # one legend entry per cluster
    player = plots.snapshot_player(snaps)
    first = [tr.marker.color for fr in player.frames for tr in fr.data if len(tr.x) and np.isclose(tr.x, xy[0, 0]).any()]
    assert len(first) == 3 and len(set(first)) == 1


def test_grid_panels_match_picked_indices():
    snaps = _snaps(k=7)
    idx = plots.pick_snapshot_indices(len(snaps), 6)
    titles = [a.text for a in plots.snapshot_grid(snaps).layout.annotations if a.text.startswith("epoch")]
    assert len(titles) == len(idx) == 6 and titles == [f"epoch {snaps[i].epoch}" for i in idx]
    assert plots.pick_snapshot_indices(4, 6) == [0, 1, 2, 3]


def test_best_and_final_marked_on_metric_curve():
    hist = [EpochLog(e, "train", {"l": 1.0}, {"ari": v}, 0.1, 0.1 * e, 4) for e, v in enumerate([0.2, 0.88, 0.5, 0.73], 1)]
    bf = plots.best_and_final(hist, "ari")
    assert bf == {"final": (4, 0.73), "best": (2, 0.88)}
    names = [t.name for t in plots.metric_curves(hist).data]
    assert any(n.startswith("final epoch 4") for n in names) and any(n.startswith("best epoch 2") for n in names)
    assert plots.best_and_final(hist, "nmi") is None
    empty = plots.metric_curves([])
    assert not empty.data and "No scored epoch yet" in empty.layout.annotations[0].text


def test_qc_axes_and_sankey_labels():
    qc = pd.DataFrame({"total_counts": [1, 2, 3], "n_genes": [1, 1, 2], "pct_mito": [0, 1, 2.0]})
    fig = plots.qc_histograms(qc)
    xt = [fig.layout[f"xaxis{i if i > 1 else ''}"].title.text for i in (1, 2, 3)]
    assert all(xt) and "counts" in xt[0] and "%" in xt[2]
    long = "CD14+ classical monocytes, inflammatory"
    s = plots.sankey(pd.Series(["0", "1"]), pd.Series([long, "B"])).data[0]
    assert max(len(x) for x in s.node.label) <= 22 and long in s.node.customdata


def _png_rgb(png: bytes) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def test_live_snapshot_grid_image_shows_the_matched_cluster_colours():
    """The live view's PNG grid: a row of panels per colouring, in the colours of the interactive grid."""
    from scclust_core.snapshot_png import snapshot_grid_png

    rng = np.random.default_rng(1)
    a = np.repeat([0, 1, 2], 200)
    xy = (rng.normal(size=(600, 2)) + np.repeat([[0, 0], [6, 0], [0, 6]], 200, axis=0)).astype(np.float32)
    snaps = [Snapshot(e, "train", xy, (a + e) % 3) for e in range(8)]  # same clusters, ids shuffled each epoch
    ref = pd.Series(np.where(a == 0, "T cell", "B cell"))
    rgb = _png_rgb(snapshot_grid_png(snaps, ref, reference_name="cell_type"))
    h, w, _ = rgb.shape
    assert w > 2.5 * h  # 6 panels side by side, 2 rows
    colours = list(plots.cluster_colours(plots.stable_snapshot_labels(snaps)).values())[:3]
    colours += list(plots.palette(plots.categories(ref)).values())
    for hexcol in colours:
        target = np.array([int(hexcol[i:i + 2], 16) for i in (1, 3, 5)])
        near = (np.abs(rgb - target).sum(axis=2) < 40).sum()
        assert near > 50, f"colour {hexcol} is (almost) absent from the grid image"
    one = _png_rgb(snapshot_grid_png(snaps[:1], None))  # one panel, no reference row, no reference legend
    assert one.shape[1] < w and one.shape[0] < h
    many = [Snapshot(0, "pretrain", xy, np.arange(600) % 40)]  # more clusters than legend rows: "+N more"
    assert _png_rgb(snapshot_grid_png(many, pd.Series([None] * 600))).size
    with pytest.raises(ValueError, match="at least one snapshot"):
        snapshot_grid_png([])


def test_live_curves_image_draws_every_series_in_the_interactive_colours():
    """The live view's PNG curves: the loss and score lines of the interactive charts, in their colours."""
    from scclust_core.curves_png import curves_png

    hist = _history()
    rgb = _png_rgb(curves_png(hist, metrics_title="ARI / NMI vs cell_type"))
    assert rgb.shape[1] > 2.5 * rgb.shape[0]  # loss and scores side by side
    names = [n for n, _, _ in plots.loss_series(hist)] + [n for n, _, _ in plots.metric_series(hist)]
    assert names == ["recon (pretrain)", "kl (pretrain)", "recon (cluster)", "kl (cluster)", "ARI", "NMI"]
    for i in range(5):  # loss lines take colours 0-3, score lines 3 and 4
        target = np.array([int(plots.series_colour(i)[j:j + 2], 16) for j in (1, 3, 5)])
        assert (np.abs(rgb - target).sum(axis=2) < 40).sum() > 20, f"line colour {i} is absent from the image"
    assert curves_png([]) is None
    for h in hist:
        h.metrics = {}
    assert _png_rgb(curves_png(hist)).size  # loss only: "No scored epoch yet" beside it


def test_live_views_are_rebuilt_only_when_new_and_not_too_often():
    from scclust_core.ui.live_panel import FAST_TICKS_FOR_S, SLOW_TICK_S, SLOW_VIEWS_INTERVAL_S, TICK_S, \
        VIEWS_COST_FACTOR, VIEWS_MIN_INTERVAL_S, tick_s, views_due

    drawn = {"version": (3, 1, "running"), "t": 100.0, "cost": 0.1}
    assert views_due(None, (0, 0, "running"), 0.0)  # nothing drawn yet
    assert not views_due(drawn, (3, 1, "running"), 1e9)  # nothing new: shown again, never rebuilt
    assert not views_due(drawn, (4, 1, "running"), 100.0 + VIEWS_MIN_INTERVAL_S - 0.1)
    assert views_due(drawn, (4, 1, "running"), 100.0 + VIEWS_MIN_INTERVAL_S)
    slow = {**drawn, "cost": 1.0}  # a build that took 1 s waits VIEWS_COST_FACTOR s
    assert not views_due(slow, (4, 1, "running"), 100.0 + VIEWS_COST_FACTOR - 0.1)
    assert views_due(slow, (4, 1, "running"), 100.0 + VIEWS_COST_FACTOR)
    late = FAST_TICKS_FOR_S + 1  # a long run: progress and views both slow down after the first seconds
    assert tick_s(0.0) == TICK_S < tick_s(late) == SLOW_TICK_S
    assert not views_due(drawn, (4, 1, "running"), 100.0 + VIEWS_MIN_INTERVAL_S, elapsed=late)
    assert views_due(drawn, (4, 1, "running"), 100.0 + SLOW_VIEWS_INTERVAL_S, elapsed=late)
