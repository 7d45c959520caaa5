"""Registry and method contract, run for EVERY registered method (timm's pattern), plus the classic baselines.

A new method gets the whole contract tested without writing a test: it only needs a ``tiny`` preset (seconds on
~150 synthetic cells; the default preset is used when it has none). Items that do not apply to a method that does
not train for epochs (``deep = False``) are skipped for it.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import synthetic_counts
from scclust_core.methods import (Callback, NonFiniteLossError, describe_methods, get_method, list_methods,
                                  register_method, run_method)
from scclust_core.methods.classic import Leiden

METHODS = list_methods()


@pytest.fixture(scope="module")
def tiny_data():
    return synthetic_counts(n_cells=150, n_genes=60, k=3, seed=0, strength=6.0)


def _tiny(name: str, **overrides):
    m = get_method(name)
    preset = "tiny" if "tiny" in m.Config.preset_names() else None
    kw = {"n_clusters": 3, "device": "cpu", "torch_threads": 1}
    kw.update(overrides)
    return m, m.default_config(preset, **kw)


class _Rec(Callback):
    """Counts every callback; stops after ``stop_after`` epochs."""

    def __init__(self, stop_after: int | None = None):
        self.info: dict | None = None
        self.logs: list = []
        self.snaps: list = []
        self.extra: list = []
        self.ended = None
        self.stop_after = stop_after

    def on_train_begin(self, info):
        self.info = info

    def on_epoch_end(self, log, snapshot):
        self.logs.append(log)
        if snapshot is not None:
            self.snaps.append(snapshot)

    def on_snapshot(self, snapshot):
        self.extra.append(snapshot)

    def on_train_end(self, result):
        self.ended = result

    def should_stop(self):
        return self.stop_after is not None and len(self.logs) >= self.stop_after


@pytest.mark.parametrize("name", list_methods())
def test_method_declares_contract(name):
    m = get_method(name)
    assert m.name == name and m.summary and m.citation and m.fidelity
    from typing import get_args

    from scclust_core.config import MethodConfig
    declared = [a for b in type(m).__orig_bases__ for a in get_args(b)]
    assert m.Config is not MethodConfig and declared == [m.Config]  # Config is the class's type argument
    cfg = m.default_config()
    cfg.validate()
    for spec in m.Config.field_specs():
        assert spec.help, f"{name}.{spec.name} has no help text"
        if spec.kind in ("int", "float"):
            assert spec.min is not None and spec.max is not None, f"{name}.{spec.name} has no range"
    for preset in m.Config.preset_names():
        m.Config.from_preset(preset).validate()
        assert m.Config.PRESET_NOTES.get(preset), f"{name} preset {preset!r} has no note"
    assert m.Config.from_dict(cfg.to_dict()) == cfg
    assert "tiny" in m.Config.preset_names(), f"{name} has no 'tiny' preset for the contract tests"


@pytest.mark.parametrize("name", list_methods())
def test_fit_contract(name, tiny_data):
    """Shapes and dtypes, one callback per epoch, consecutive global epochs, finite losses, snapshots."""
    m, cfg = _tiny(name)
    rec = _Rec()
    res = m.fit(tiny_data, cfg, callback=rec, label_key="cell_type")
    n = len(res.cell_index)
    assert res.embedding.ndim == 2 and res.embedding.shape[0] == n and res.embedding.dtype == np.float32
    assert np.isfinite(res.embedding).all()
    assert res.labels.shape == (n,) and res.labels.dtype == np.int64 and res.labels.min() == 0
    assert res.status == "completed" and rec.ended is res and np.isfinite(res.metrics["ari"])
    assert rec.info is not None and rec.info["n_cells"] == n and rec.info["threads"]["n"] >= 1
    np.testing.assert_array_equal(rec.info["snapshot_index"], res.snapshot_index)
    assert res.snapshot_index.dtype == np.int64 and set(res.snapshot_index) <= set(res.cell_index)
    if not m.deep:
        assert res.history == [] and res.snapshots == [] and rec.logs == []
        return
    assert len(res.history) == len(rec.logs) >= 1
    assert [h.epoch for h in res.history] == list(range(1, len(res.history) + 1))
    assert rec.info["total_epochs"] >= 1
    assert all(h.losses and all(np.isfinite(v) for v in h.losses.values()) for h in res.history)
    assert res.snapshots and res.snapshots[0].epoch == 0
    for s in res.snapshots:
        assert s.xy.shape == (len(res.snapshot_index), 2) and s.labels.shape == (len(res.snapshot_index),)
    np.testing.assert_array_equal(res.snapshots[-1].labels, res.full_labels()[res.snapshot_index])


@pytest.mark.parametrize("name", list_methods())
def test_same_seed_same_result_and_snapshots_change_nothing(name, tiny_data):
    m, cfg = _tiny(name, seed=1, snapshot_every=1)
    a, b = m.fit(tiny_data, cfg), m.fit(tiny_data, cfg)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-6)
    if m.deep:  # no live views at all must give the same labels
        c = m.fit(tiny_data, cfg.replace(snapshot_every=0))
        np.testing.assert_array_equal(a.labels, c.labels)
        np.testing.assert_allclose(a.embedding, c.embedding, atol=1e-6)
        assert len(c.snapshots) < len(a.snapshots) or len(a.history) <= 1


@pytest.mark.parametrize("name", list_methods())
def test_cancel_keeps_a_result(name, tiny_data):
    m, cfg = _tiny(name)
    if not m.deep:
        pytest.skip("trains no epochs: nothing to cancel")
    rec = _Rec(stop_after=1)
    res = m.fit(tiny_data, cfg, callback=rec)
    assert res.status == "cancelled" and len(res.history) == len(rec.logs) == 1
    assert res.labels.shape == (len(res.cell_index),) and res.embedding.shape[0] == len(res.cell_index)


@pytest.mark.parametrize("name", list_methods())
def test_non_finite_loss_is_a_clear_error(name, tiny_data):
    """Every optimizer step poisons the parameters with NaN: the next loss is NaN and the fit must stop with a
    ``NonFiniteLossError`` (a ``ValueError``) naming the epoch, not run on or crash elsewhere."""
    m, cfg = _tiny(name, snapshot_every=0)
    if not (m.deep and m.trains_network):
        pytest.skip("no network loss to diverge")
    from torch.optim.optimizer import register_optimizer_step_post_hook

    def poison(optimizer, args, kwargs):
        with torch.no_grad():
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.fill_(float("nan"))

    handle = register_optimizer_step_post_hook(poison)
    try:
        with pytest.raises(NonFiniteLossError, match="epoch"):
            m.fit(tiny_data, cfg)
    finally:
        handle.remove()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", list_methods())
def test_tiny_preset_runs_on_cuda(name, tiny_data):
    m, cfg = _tiny(name, device="cuda")
    if not m.trains_network:
        pytest.skip("no network to put on the GPU")
    res = m.fit(tiny_data, cfg, label_key="cell_type")
    assert res.device.startswith("cuda") and res.status == "completed"
    assert np.isfinite(res.embedding).all() and res.labels.shape == (len(res.cell_index),)
    if "amp" in cfg.to_dict():
        res = m.fit(tiny_data, cfg.replace(amp=True))
        assert np.isfinite(res.embedding).all()


#: settings of the slow quality check where a method's cpu preset is sized for thousands of cells (the ones the
#: per-method test files used before); a method not listed runs its cpu preset (else its default) unchanged
QUALITY_SETTINGS = {
    "leiden": {"n_top_genes": 100, "n_pcs": 10, "resolution": 0.3},
    "kmeans": {"n_top_genes": 100, "n_pcs": 10},
    "contrastive_sc": {"n_hvg": 100},
    "cicl": {"n_hvg": 100, "epochs": 5},
    "scsamac": {"pretrain_epochs": 15, "cluster_epochs": 15, "batch_size": 128, "lr": 1e-3},
    "scamac": {"epochs": 4, "hidden1": 256, "hidden2": 64},
    "scgpcl": {"batch_size": 256, "num_samples": [512, 256]},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list_methods())
def test_quality_on_separated_data(name):
    """Three well-separated synthetic clusters are found (ARI ≥ 0.85), K given (Leiden finds it)."""
    m = get_method(name)
    ad = synthetic_counts(n_cells=300, n_genes=120, k=3, seed=5, strength=6.0)
    preset = "cpu" if "cpu" in m.Config.preset_names() else None
    kw = {"n_clusters": 3, "snapshot_every": 0, "torch_threads": 1, **QUALITY_SETTINGS.get(name, {})}
    res = m.fit(ad, m.default_config(preset, **kw), label_key="cell_type")
    assert res.metrics["ari"] >= 0.85, res.metrics


def test_registry_names_and_errors():
    assert list_methods()[:3] == ["recommend", "leiden", "kmeans"]  # the consensus heads the list
    assert set(list_methods()) >= {"contrastive_sc", "cicl", "scsamac", "scgpcl", "scamac"}
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
