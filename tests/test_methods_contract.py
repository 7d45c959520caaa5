"""Registry and method contract, for every registered method (timm pattern), plus the classic baselines."""
from __future__ import annotations

import numpy as np
import pytest

from scclust_core.methods import (Callback, describe_methods, get_method, list_methods, planned_methods,
                                  register_method, run_method)
from scclust_core.methods.classic import Leiden


@pytest.mark.parametrize("name", list_methods())
def test_method_declares_contract(name):
    m = get_method(name)
    assert m.name == name and m.summary and m.citation and m.fidelity
    cfg = m.default_config()
    cfg.validate()
    for spec in m.Config.field_specs():
        assert spec.help, f"{name}.{spec.name} has no help text"
        if spec.kind in ("int", "float"):
            assert spec.min is not None and spec.max is not None, f"{name}.{spec.name} has no range"
    for preset in m.Config.preset_names():
        m.Config.from_preset(preset).validate()
    assert m.Config.from_dict(cfg.to_dict()) == cfg


def test_registry_names_and_errors():
    assert list_methods()[:3] == ["recommend", "leiden", "kmeans"]  # the consensus heads the list
    assert set(planned_methods()) | set(list_methods()) >= {"contrastive_sc", "cicl", "scsamac", "scgpcl", "scamac"}
    with pytest.raises(ValueError, match="registered methods"):
        get_method("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_method("leiden")(Leiden)
    assert {r["name"] for r in describe_methods()} == set(list_methods())


def test_kmeans_writes_back_scanpy_way(counts_adata):
    res = run_method(counts_adata, "kmeans", n_clusters=3, label_key="cell_type", n_top_genes=100, n_pcs=10)
    assert counts_adata.obs["kmeans"].dtype.name == "category"
    assert counts_adata.obsm["X_kmeans"].shape == (counts_adata.n_obs, 10)
    u = counts_adata.uns["kmeans"]
    assert u["params"]["n_clusters"] == 3 and u["status"] == "completed" and u["metrics"]["ari"] > 0.95
    assert res.embedding.dtype == np.float32 and res.labels.dtype == np.int64
    assert res.history == [] and res.snapshots == []


def test_leiden_finds_k_without_being_told(counts_adata):
    res = run_method(counts_adata, "leiden", label_key="cell_type", n_top_genes=100, n_pcs=10, resolution=0.3)
    assert res.metrics["ari"] > 0.9 and res.n_clusters == 3


def test_same_seed_same_labels_different_seed_may_differ(counts_adata):
    a = get_method("kmeans").fit(counts_adata, get_method("kmeans").default_config(n_clusters=5, n_init=1, seed=1))
    b = get_method("kmeans").fit(counts_adata, get_method("kmeans").default_config(n_clusters=5, n_init=1, seed=1))
    np.testing.assert_array_equal(a.labels, b.labels)


def test_bad_k_and_missing_k(counts_adata):
    m = get_method("kmeans")
    with pytest.raises(ValueError, match="needs the number of clusters"):
        m.fit(counts_adata, m.default_config())
    with pytest.raises(ValueError, match="smaller than the number of cells"):
        m.fit(counts_adata, m.default_config(n_clusters=300))
    with pytest.raises(ValueError, match="not in obs"):
        m.fit(counts_adata, m.default_config(n_clusters=3), label_key="nope")


def test_labels_are_relabelled_by_size_and_cells_dropped_by_qc_are_nan(counts_adata):
    ad = counts_adata.copy()
    x = ad.X.toarray()
    x[0] = 0
    ad.X = type(ad.X)(x)
    res = run_method(ad, "kmeans", n_clusters=3, n_top_genes=100, n_pcs=10)
    assert 0 not in res.cell_index
    assert ad.obs["kmeans"].isna().iloc[0] and not ad.obs["kmeans"].isna().iloc[1:].any()
    assert np.isnan(ad.obsm["X_kmeans"][0]).all()
    sizes = np.bincount(res.labels)
    assert (np.diff(sizes) <= 0).all()


def test_callback_receives_train_begin_and_end(counts_adata):
    events = []

    class Rec(Callback):
        def on_train_begin(self, info):
            events.append(("begin", info["n_cells"]))

        def on_train_end(self, result):
            events.append(("end", result.status))

    run_method(counts_adata, "kmeans", n_clusters=3, callback=Rec(), n_top_genes=100, n_pcs=10)
    assert events == [("begin", counts_adata.n_obs), ("end", "completed")]


def test_core_does_not_import_streamlit():
    """Only scclust_core.ui may import streamlit: the library must work in notebooks and the CLI."""
    import subprocess
    import sys

    code = "import sys, scclust_core, scclust_core.jobs, scclust_core.plots; assert 'streamlit' not in sys.modules"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_degenerate_clustering_warnings():
    from scclust_core.methods._base import degenerate_clustering_warnings as warn

    balanced = np.arange(300) % 3
    assert warn(balanced, 3) == [] and warn(balanced, None) == []
    collapsed = np.zeros(300, dtype=int)
    collapsed[:5] = 1
    msgs = warn(collapsed, 4)
    assert len(msgs) == 2 and "only 2" in msgs[0] and "98%" in msgs[1]
    assert warn(collapsed, 1) == [] and warn(np.zeros(10, dtype=int), 1) == []  # K = 1 asked: nothing to warn


def test_fit_reports_a_collapsed_result(counts_adata):
    from scclust_core.config import MethodConfig
    from scclust_core.methods._base import ClusteringMethod, Prepared

    class _Collapsing(ClusteringMethod):
        name, deep, needs_counts = "fake_collapse", False, False

        def prepare(self, adata, config):
            return Prepared(adata, np.arange(adata.n_obs))

        def train(self, data, config, ctx):
            n = data.adata.n_obs
            return np.zeros((n, 2), np.float32), np.zeros(n, np.int64), {}

    res = _Collapsing().fit(counts_adata, MethodConfig(n_clusters=3))
    assert len(res.extras["warnings"]) == 2 and "100%" in res.extras["warnings"][1]
