import time

import numpy as np
import pytest

import scclust_core.jobs as jobs_mod
from scclust_core.config import MethodConfig
from scclust_core.jobs import TrainingJob, active_run_ids, jobs_for, register_job
from scclust_core.methods._base import ClusteringMethod, Prepared
from scclust_core.runs import load_run


class _Slow(ClusteringMethod):
    """A fake deep method: 40 short epochs, honours cancel, can be told to fail."""

    name = "fake_slow"
    deep = True
    needs_counts = False
    fail_with: Exception | None = None

    def prepare(self, adata, config):
        return Prepared(adata, np.arange(adata.n_obs))

    def train(self, data, config, ctx):
        n = data.adata.n_obs
        rng = np.random.default_rng(0)
        z = rng.normal(size=(n, 4)).astype(np.float32)
        labels = np.arange(n) % config.n_clusters
        ctx.begin(40)
        ctx.initial(z, labels)
        for epoch in range(1, 41):
            if self.fail_with is not None and epoch == 2:
                raise self.fail_with
            time.sleep(0.02)
            if ctx.emit(epoch, "train", {"contrastive": 1.0 / epoch}, embedding=z, labels=labels):
                break
        return z, labels, {}


def _fake(monkeypatch, fail=None):
    m = _Slow()
    m.fail_with = fail
    monkeypatch.setattr(jobs_mod, "get_method", lambda name: m)
    return MethodConfig(n_clusters=3, snapshot_every=5)


def test_job_finishes_and_records(tiny, tmp_path, kmeans_cfg):
    job = TrainingJob(tiny, "kmeans", kmeans_cfg(), runs_root=tmp_path, label_key="cell_type", workspace="w1")
    register_job(job).start()
    assert job.join(120)
    assert job.status == "completed" and job.result.n_clusters == 3
    assert job.result.metrics["ari"] > 0.5
    assert load_run(job.run_dir).status == "completed"
    assert job.run_id in jobs_for("w1") and job.run_id not in active_run_ids("w1")


def test_live_state_and_cancel(tiny, tmp_path, monkeypatch):
    cfg = _fake(monkeypatch)
    job = TrainingJob(tiny, "fake_slow", cfg, runs_root=tmp_path, label_key="cell_type").start()
    deadline = time.time() + 30
    while job.snapshot().epoch < 3 and time.time() < deadline:
        time.sleep(0.02)
    snap = job.snapshot()
    assert snap.running and snap.history and snap.snapshots  # live logs and the epoch-0 snapshot
    assert snap.snapshot_index is not None and len(snap.snapshot_index) == tiny.n_obs
    job.cancel()
    assert job.join(30)
    assert job.status == "cancelled"
    assert job.snapshot().epoch < 40
    assert load_run(job.run_dir).status == "cancelled"


def test_exception_gives_failed_with_message(tiny, tmp_path, monkeypatch):
    cfg = _fake(monkeypatch, fail=ValueError("the data is not what I expected"))
    job = TrainingJob(tiny, "fake_slow", cfg, runs_root=tmp_path).start()
    assert job.join(30)
    assert job.status == "failed"
    assert "not what I expected" in job.error and "ValueError" in job.snapshot().traceback
    assert load_run(job.run_dir).status == "failed"


def test_bad_k_and_out_of_memory_messages(tiny, tmp_path, monkeypatch, kmeans_cfg):
    job = TrainingJob(tiny, "kmeans", kmeans_cfg(k=200), runs_root=tmp_path).start()
    assert job.join(60) and job.status == "failed"
    assert "smaller than the number of cells" in job.error
    cfg = _fake(monkeypatch, fail=MemoryError())
    job = TrainingJob(tiny, "fake_slow", cfg, runs_root=tmp_path).start()
    assert job.join(30) and job.status == "failed" and job.error.startswith("Out of memory")
