"""Issue 14.4: results never silently replace a user's columns (library warns; the export picks a free key)."""
import warnings

import numpy as np
import pandas as pd
import pytest

from scclust_core.export import RunExport, labeled_adata
from scclust_core.methods import run_method
from scclust_core.methods._run import WRITTEN_KEYS, free_key


def _kmeans(adata, **kw):
    return run_method(adata, "kmeans", n_clusters=3, n_top_genes=60, n_pcs=10, n_init=2, **kw)


def test_write_result_warns_when_replacing_a_user_column(counts_adata):
    ad = counts_adata
    ad.obs["kmeans"] = pd.Categorical(["mine"] * ad.n_obs)  # a user's own labels
    with pytest.warns(UserWarning, match=r"replaces obs data that scclust did not write.*'kmeans_2'"):
        _kmeans(ad)
    assert ad.obs["kmeans"].nunique() == 3  # scanpy's key_added semantics: replaced, but not silently
    assert "kmeans" in list(ad.uns[WRITTEN_KEYS])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # re-running writes over our own result: no warning
        _kmeans(ad)
        _kmeans(ad, key_added="km_b")
    assert set(ad.uns[WRITTEN_KEYS]) == {"kmeans", "km_b"}


def test_free_key_avoids_every_slot(counts_adata):
    ad = counts_adata
    ad.obs["kmeans"] = 1
    ad.obsm["X_kmeans_2"] = np.zeros((ad.n_obs, 2))
    ad.uns["kmeans_3"] = {}
    assert free_key(ad, "kmeans") == "kmeans_4" and free_key(ad, "leiden") == "leiden"


def test_export_never_overwrites_uploaded_columns(counts_adata):
    ad = counts_adata
    ad.obs["kmeans_abc123"] = pd.Categorical(["user"] * ad.n_obs)
    ad.obsm["X_umap"] = np.ones((ad.n_obs, 2), dtype=np.float32)
    labels = pd.Series(pd.Categorical(np.arange(ad.n_obs) % 3))
    umap = np.random.default_rng(0).normal(size=(ad.n_obs, 2)).astype(np.float32)
    out = labeled_adata(ad, [RunExport(key="kmeans_abc123", labels=labels, umap=umap)])
    assert (out.obs["kmeans_abc123"] == "user").all()  # the upload's column is untouched
    assert out.obs["kmeans_abc123_scclust"].nunique() == 3
    assert out.uns["scclust"]["renamed_keys"] == {"kmeans_abc123": "kmeans_abc123_scclust"}
    np.testing.assert_array_equal(out.obsm["X_umap"], 1.0)  # an uploaded layout stays as it was
    np.testing.assert_array_equal(out.obsm["X_kmeans_abc123_scclust_umap"], umap)
