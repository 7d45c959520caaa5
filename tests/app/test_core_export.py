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
    assert back.obsm["emb_kmeans_abc123"].shape == (tiny.n_obs, 5)  # NaN row kept: not an X_ layout
    assert (sp.csr_matrix(back.X) != sp.csr_matrix(before)).nnz == 0  # X untouched
    assert (sp.csr_matrix(tiny.X) != sp.csr_matrix(before)).nnz == 0 and "kmeans_abc123" not in tiny.obs
    rec = back.uns["scclust"]["runs"]["kmeans_abc123"]
    assert rec["method"] == "kmeans" and rec["renames"]["0"] == "B cells"
    assert json.loads(rec["record_json"])["config"]["n_clusters"] == 3
    assert len(back.uns["kmeans_abc123_colors"]) == 3


@pytest.mark.parametrize("fmt", ["csr", "csc", "dense"])
def test_scanpy_round_trip_keeps_x_and_only_2d_layouts(tiny, tmp_path, fmt):
    """Read back with scanpy: same X type, dtype and values, labels, colours as the app's palette, only 2-D
    ``X_*`` layouts, the learned embedding usable with ``use_rep``, counts layer, no lognorm unless asked."""
    import scanpy as sc

    from scclust_core.plots import palette

    ad = tiny.copy()
    ad.X = {"csr": sp.csr_matrix, "csc": sp.csc_matrix, "dense": lambda m: m.toarray()}[fmt](tiny.X).astype(np.int32)
    ad.obsm["X_pca"] = np.random.default_rng(1).normal(size=(ad.n_obs, 30)).astype(np.float32)  # a wide upload
    ad.obsm["X_tsne"] = np.random.default_rng(2).normal(size=(ad.n_obs, 2)).astype(np.float32)
    r = _run(ad)
    out = export.labeled_adata(ad, [r])
    path = tmp_path / "o.h5ad"
    path.write_bytes(export.h5ad_bytes(out))
    back = sc.read_h5ad(path)
    assert type(back.X) is type(ad.X) and back.X.dtype == np.int32
    a = back.X.toarray() if sp.issparse(back.X) else back.X
    assert np.array_equal(a, tiny.X.toarray().astype(np.int32))
    assert all(np.asarray(back.obsm[k]).shape[1] == 2 for k in back.obsm if k.startswith("X_"))
    assert {"X_umap", "X_tsne", "X_kmeans_abc123_umap"} <= set(back.obsm) and "pca" in back.obsm
    assert np.allclose(back.obsm["X_kmeans_abc123_umap"], r.embedding[:, :2])
    assert list(back.obs["kmeans_abc123"].astype(str)) == list(r.labels.astype(str))
    cats = list(back.obs["kmeans_abc123"].cat.categories)
    assert list(back.uns["kmeans_abc123_colors"]) == [palette(cats)[c] for c in cats]
    assert np.allclose(back.obsm["emb_kmeans_abc123"], r.embedding)
    assert "counts" in back.layers and "lognorm" not in back.layers
    keys = export.key_table(back)
    assert "obsm['emb_kmeans_abc123']" in set(keys["key"]) and "obsm['pca']" in set(keys["key"])
    sc.pp.neighbors(back, use_rep="emb_kmeans_abc123", n_neighbors=10, method="gauss", transformer="sklearn")
    assert back.obsp["connectivities"].shape == (ad.n_obs, ad.n_obs)


def test_lognorm_only_on_request_and_no_overwrite(tiny):
    from scclust_core.markers import lognormalized

    ad = tiny.copy()
    ad.obs["kmeans_abc123"] = "mine"  # a column of the upload with the run's key
    out = export.labeled_adata(ad, [_run(ad)], lognorm=lognormalized(ad))
    assert sp.issparse(out.layers["lognorm"]) and out.layers["lognorm"].shape == ad.shape
    assert (out.obs["kmeans_abc123"] == "mine").all() and "kmeans_abc123_scclust" in out.obs
    assert "obs['kmeans_abc123']" in out.uns["scclust"]["moved"]
    with pytest.raises(ValueError, match="cells"):
        export.labeled_adata(ad, [export.RunExport(key="k", labels=pd.Series(["a"] * 3))])
    with pytest.raises(ValueError, match="2-D layout"):
        export.labeled_adata(ad, [export.RunExport(key="k", labels=_run(ad).labels)])


def test_finite_embedding_gets_x_key_and_csv_json(tiny):
    r = _run(tiny)
    out = export.labeled_adata(tiny, [r])
    assert "emb_kmeans_abc123" in out.obsm and "X_kmeans_abc123_umap" in out.obsm
    assert "X_kmeans_abc123" not in out.obsm
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
