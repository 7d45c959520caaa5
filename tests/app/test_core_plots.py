import numpy as np
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
    assert {t.name for t in plots.metric_curves(_history()).data} == {"ARI", "NMI"}
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
