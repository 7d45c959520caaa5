from __future__ import annotations

import json
import os

import numpy as np
import pytest

from scclust_core import runs
from scclust_core.methods import EpochLog, MethodResult, Snapshot, run_method
from scclust_core.results import Callback


def test_run_record_contents_and_reload(counts_adata, runs_root):
    res = run_method(counts_adata, "kmeans", n_clusters=3, label_key="cell_type", record=runs_root,
                     n_top_genes=100, n_pcs=10, seed=3)
    (rec,) = runs.list_runs(runs_root)
    meta = rec.meta
    assert rec.status == "completed" and rec.has_result
    assert meta["seed"] == 3 and meta["config"]["n_clusters"] == 3 and meta["method"] == "kmeans"
    assert {"python", "torch", "numpy", "scanpy", "anndata", "scclust_core"} <= set(meta["versions"])
    assert meta["dataset"]["n_cells"] == counts_adata.n_obs and len(meta["dataset"]["sha256"]) == 64
    assert meta["device"] == "cpu" and meta["started_at"] and meta["finished_at"]
    assert meta["threads"]["n"] >= 1 and meta["threads"]["source"]  # torch CPU threads and why (device.py)
    assert meta["metrics"]["ari"] == pytest.approx(res.metrics["ari"])
    assert counts_adata.uns["kmeans"]["run_id"] == rec.run_id
    back = runs.load_result(rec.path)
    np.testing.assert_array_equal(back.labels, res.labels)
    np.testing.assert_allclose(back.embedding, res.embedding)
    assert back.metrics["ari"] == pytest.approx(res.metrics["ari"])
    assert back.extras["threads"] == res.extras["threads"]


def test_rerun_from_record_is_reproducible(counts_adata, runs_root):
    run_method(counts_adata, "kmeans", n_clusters=4, record=runs_root, n_init=1, seed=7, n_top_genes=100, n_pcs=10)
    (rec,) = runs.list_runs(runs_root)
    first = runs.load_result(rec.path)
    again = run_method(counts_adata.copy(), rec.method,
                       __import__("scclust_core").get_method(rec.method).Config.from_dict(rec.meta["config"]))
    np.testing.assert_array_equal(again.labels, first.labels)


def test_failed_run_is_recorded(counts_adata, runs_root):
    class Boom(Callback):
        def on_train_begin(self, info):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        run_method(counts_adata, "kmeans", n_clusters=3, record=runs_root, callback=Boom())
    (rec,) = runs.list_runs(runs_root)
    assert rec.status == "failed" and "boom" in rec.meta["error"]


def test_running_record_of_dead_process_is_interrupted(tmp_path):
    rec = runs.RunRecorder(tmp_path, method="toy", seed=0)
    meta = json.loads((rec.dir / "run.json").read_text())
    assert meta["status"] == "running"
    assert runs.load_run(rec.dir).status == "running"  # this process is alive
    meta["pid"] = 2**22 + 12345  # no such process
    (rec.dir / "run.json").write_text(json.dumps(meta))
    assert runs.load_run(rec.dir).status == "interrupted"
    assert runs.load_run(rec.dir, live_pids=set()).status == "interrupted"


def test_history_and_snapshots_written_live(tmp_path):
    rec = runs.RunRecorder(tmp_path, method="toy", seed=0)
    rec.on_epoch_end(EpochLog(1, "pretrain", {"recon": 1.0}, {}, 0.1, 0.1, 4), None)
    rec.on_epoch_end(EpochLog(2, "cluster", {"recon": 0.5, "kl": 0.2}, {"ari": 0.5}, 0.1, 0.2, 4), None)
    text = (rec.dir / "history.csv").read_text().splitlines()
    assert text[0].split(",")[:2] == ["epoch", "phase"] and "loss_kl" in text[0] and len(text) == 3
    snaps = [Snapshot(0, "init", np.zeros((4, 2), np.float32), np.arange(4)),
             Snapshot(2, "cluster", np.ones((4, 2), np.float32), np.arange(4))]
    res = MethodResult("toy", np.zeros((4, 3), np.float32), np.arange(4), np.arange(4), 4, [], snaps, np.arange(4),
                       {"seed": 0}, {"n_clusters": 4.0})
    rec.on_train_end(res)
    back = runs.load_result(rec.dir)
    assert [s.epoch for s in back.snapshots] == [0, 2] and back.snapshots[1].xy.shape == (4, 2)
    assert [h.phase for h in back.history] == ["pretrain", "cluster"] and back.history[1].losses["kl"] == 0.2
    assert not any(p.suffix == ".pkl" for p in rec.dir.iterdir())


def test_seed_everything_makes_torch_and_numpy_repeatable():
    import torch

    runs.seed_everything(5)
    a = (np.random.rand(3), torch.rand(3))
    runs.seed_everything(5)
    b = (np.random.rand(3), torch.rand(3))
    np.testing.assert_array_equal(a[0], b[0])
    assert torch.equal(a[1], b[1])


def test_default_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SCCLUST_RUNS_DIR", str(tmp_path))
    assert runs.default_root() == tmp_path
    assert os.fspath(runs.default_root()) == str(tmp_path)
