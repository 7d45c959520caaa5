import json

import pytest

import anndata
import numpy as np
import pandas as pd
import scipy.sparse as sp

from scclust_core import export


def _run(tiny, drop_first=False):
    lab = tiny.obs["cell_type"].astype(str).str.replace("type_", "").to_numpy(dtype=object)
    emb = np.random.default_rng(0).normal(size=(tiny.n_obs, 5)).astype(np.float32)
    if drop_first:
        lab[0] = None
        emb[0] = np.nan
    labels = pd.Series(pd.Categorical(lab, categories=["0", "1", "2"]))
    edited = labels.cat.rename_categories({"0": "B cells"})
    return export.RunExport(key="kmeans_abc123", labels=edited, embedding=emb, umap=emb[:, :2],
                            record={"run_id": "x_kmeans_s0_abc123", "method": "kmeans", "preset": None,
                                    "metrics": {"ari": 0.9, "nmi": float("nan")}, "config": {"n_clusters": 3}},
                            edits={"0": "B cells"}, original_labels=labels)


def test_h5ad_round_trip(tiny, tmp_path):
    before = tiny.X.copy()
    out = export.labeled_adata(tiny, [_run(tiny, drop_first=True)])
    path = tmp_path / "out.h5ad"
    path.write_bytes(export.h5ad_bytes(out))
    back = anndata.read_h5ad(path)
    assert list(back.obs_names) == list(tiny.obs_names) and back.n_vars == tiny.n_vars
    assert isinstance(back.obs["kmeans_abc123"].dtype, pd.CategoricalDtype)
    assert "B cells" in back.obs["kmeans_abc123"].cat.categories
    assert pd.isna(back.obs["kmeans_abc123"].iloc[0])
    assert isinstance(back.obs["kmeans_abc123_original"].dtype, pd.CategoricalDtype)
    assert back.obsm["X_umap"].shape == (tiny.n_obs, 2) and np.isfinite(back.obsm["X_umap"]).all()
    assert "kmeans_abc123_embedding" in back.obsm  # NaN rows: not an X_ key (CELLxGENE needs finite)
    assert (sp.csr_matrix(back.X) != sp.csr_matrix(before)).nnz == 0  # X untouched
    assert (sp.csr_matrix(tiny.X) != sp.csr_matrix(before)).nnz == 0 and "kmeans_abc123" not in tiny.obs
    rec = back.uns["scclust"]["runs"]["kmeans_abc123"]
    assert rec["method"] == "kmeans" and rec["renames"]["0"] == "B cells"
    assert json.loads(rec["record_json"])["config"]["n_clusters"] == 3
    assert len(back.uns["kmeans_abc123_colors"]) == 3


def test_finite_embedding_gets_x_key_and_csv_json(tiny):
    r = _run(tiny)
    out = export.labeled_adata(tiny, [r])
    assert "X_kmeans_abc123" in out.obsm and "X_kmeans_abc123_umap" in out.obsm
    csv = export.labels_csv(tiny.obs_names, [r]).splitlines()
    assert csv[0] == "cell,kmeans_abc123" and len(csv) == tiny.n_obs + 1
    assert json.loads(export.run_json(r.record, r.edits))["renames"] == {"0": "B cells"}
    assert export.run_key("20260101-000000_cicl_s0_a1b2c3", "cicl") == "cicl_a1b2c3"


def test_figure_html_export():
    import plotly.graph_objects as go

    data, mime, ext, note = export.figure_bytes(go.Figure(go.Bar(y=[1, 2])), "html")
    assert ext == "html" and b"plotly" in data and note is None


@pytest.mark.slow
def test_figure_png_or_html_with_reason():
    import plotly.graph_objects as go

    data, mime, ext, note = export.figure_bytes(go.Figure(go.Bar(y=[1, 2])), "png")
    assert (ext == "png" and data[:4] == b"\x89PNG" and note is None) or (ext == "html" and note)
