import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import scclust_core.jobs as jobs_mod
import scclust_core.jobs.registry as jobs_registry
import scclust_core.jobs.worker as jobs_worker
from scclust_core.config import MethodConfig
from scclust_core.jobs import JobState, TrainingJob, active_run_ids, busy_workspaces, jobs_for, register_job
from scclust_core.methods import get_method
from scclust_core.methods._base import ClusteringMethod, Prepared
from scclust_core.runs import load_result, load_run


class _Slow(ClusteringMethod):
    """A fake deep method: 40 short epochs, honours cancel, can be told to fail (thread isolation only)."""

    name = "fake_slow"
    deep = True
    needs_counts = False
    fail_with: Exception | None = None
    sleep = 0.02
    log: list | None = None

    def prepare(self, adata, config):
        return Prepared(adata, np.arange(adata.n_obs))

    def train(self, data, config, ctx):
        if self.log is not None:
            self.log.append(("start", time.time()))
        n = data.adata.n_obs
        rng = np.random.default_rng(0)
        z = rng.normal(size=(n, 4)).astype(np.float32)
        labels = np.arange(n) % config.n_clusters
        ctx.begin(40)
        ctx.initial(z, labels)
        for epoch in range(1, 41):
            if self.fail_with is not None and epoch == 2:
                raise self.fail_with
            time.sleep(self.sleep)
            if ctx.emit(epoch, "train", {"contrastive": 1.0 / epoch}, embedding=z, labels=labels):
                break
        if self.log is not None:
            self.log.append(("end", time.time()))
        return z, labels, {}


def _fake(monkeypatch, fail=None, sleep=0.02, log=None):
    m = _Slow()
    m.fail_with, m.sleep, m.log = fail, sleep, log
    monkeypatch.setattr(jobs_worker, "get_method", lambda name: m)
    return MethodConfig(n_clusters=3, snapshot_every=5)


def _wait(cond, timeout=60.0):
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def test_job_in_worker_process_finishes_records_and_leaves_memory(tiny, tmp_path, kmeans_cfg, monkeypatch):
    job = TrainingJob(tiny, "kmeans", kmeans_cfg(), runs_root=tmp_path, label_key="cell_type", workspace="w1")
    assert job.isolation == "process"
    register_job(job).start()
    assert job.join(300)
    assert job.status == "completed", job.error
    assert job.result.n_clusters == 3 and job.result.metrics["ari"] > 0.5  # read back from the run record
    assert load_run(job.run_dir).status == "completed"
    assert job.run_id in jobs_for("w1") and job.run_id not in active_run_ids("w1") and "w1" not in busy_workspaces()
    assert job.state.get("result") is None and not job.holds_data  # the heavy state is on disk, not in memory
    monkeypatch.setattr(jobs_registry, "KEEP_FINISHED_S", 0.0)
    time.sleep(0.01)
    assert job.run_id not in jobs_for("w1")  # finished jobs leave the registry


def test_live_state_snapshot_and_cancel(tiny, tmp_path, monkeypatch):
    cfg = _fake(monkeypatch)
    job = TrainingJob(tiny, "fake_slow", cfg, runs_root=tmp_path, label_key="cell_type", isolation="thread").start()
    _wait(lambda: job.snapshot().epoch >= 3, 30)
    snap = job.snapshot()
    assert snap.running and snap.history and snap.snapshots  # live logs and the epoch-0 snapshot
    # the snapshot rows come from fit's on_train_begin info (no patching of prepare, no copied rule)
    assert snap.snapshot_index is not None and len(snap.snapshot_index) == tiny.n_obs
    assert snap.run_id == job.run_id and snap.method == "fake_slow" and snap.queue_position is None
    job.cancel()
    assert job.join(30)
    assert job.status == "cancelled"
    assert job.snapshot().epoch < 40
    assert load_run(job.run_dir).status == "cancelled"


def test_state_is_only_read_through_public_methods():
    state = JobState(threading.Event(), run_id="r", method="m")
    state.update(status="running", queue_position=None)
    assert state.get("status") == "running" and state.snapshot().status == "running"
    with pytest.raises(AttributeError):
        state.update(_lock=None)
    src = "".join(p.read_text() for p in Path(jobs_mod.__file__).parent.glob("*.py"))
    assert "state._lock" not in src and ".prepare =" not in src and "_snapshot_rows" not in src


def test_exception_gives_failed_with_message(tiny, tmp_path, monkeypatch):
    cfg = _fake(monkeypatch, fail=ValueError("the data is not what I expected"))
    job = TrainingJob(tiny, "fake_slow", cfg, runs_root=tmp_path, isolation="thread").start()
    assert job.join(30)
    assert job.status == "failed"
    assert "not what I expected" in job.error and "ValueError" in job.snapshot().traceback
    assert load_run(job.run_dir).status == "failed"
    cfg = _fake(monkeypatch, fail=MemoryError())
    job = TrainingJob(tiny, "fake_slow", cfg, runs_root=tmp_path, isolation="thread").start()
    assert job.join(30) and job.status == "failed" and job.error.startswith("Out of memory")


def test_error_in_worker_process_comes_back_clear(tiny, tmp_path, kmeans_cfg):
    job = TrainingJob(tiny, "kmeans", kmeans_cfg(k=200), runs_root=tmp_path).start()
    assert job.join(300) and job.status == "failed"
    assert "smaller than the number of cells" in job.error  # the child's ValueError, as the user should read it
    meta = load_run(job.run_dir).meta
    assert meta["status"] == "failed" and "Traceback in the training process" in meta["traceback"]


def test_queue_limits_concurrent_trainings(tiny, tmp_path, monkeypatch):
    """Default limit 1: a second job waits as 'queued' (with its position), a cancelled queued job never starts,
    and the trainings never overlap."""
    monkeypatch.delenv("SCCLUST_MAX_TRAININGS", raising=False)
    log: list = []
    cfg = _fake(monkeypatch, sleep=0.03, log=log)
    first = TrainingJob(tiny, "fake_slow", cfg, runs_root=tmp_path, isolation="thread").start()
    _wait(lambda: first.snapshot().epoch >= 1)
    second = TrainingJob(tiny, "fake_slow", cfg, runs_root=tmp_path, isolation="thread").start()
    third = TrainingJob(tiny, "fake_slow", cfg, runs_root=tmp_path, isolation="thread").start()
    _wait(lambda: third.snapshot().queue_position == 2)
    snap = second.snapshot()
    assert snap.status == "queued" and snap.running and snap.queue_position == 1
    assert load_run(second.run_dir, live_pids={os.getpid()}).status == "queued"
    assert load_run(first.run_dir, live_pids={os.getpid()}).status == "running"  # the record, not only the job
    third.cancel()
    assert third.join(10) and third.status == "cancelled"
    assert load_run(third.run_dir).meta["error"].startswith("Cancelled while queued")
    assert first.join(60) and second.join(60)
    assert first.status == second.status == "completed"
    starts = [t for k, t in log if k == "start"]
    ends = [t for k, t in log if k == "end"]
    assert len(starts) == 2 and starts[1] >= ends[0]  # one at a time, the cancelled one never ran
    monkeypatch.setenv("SCCLUST_MAX_TRAININGS", "zero")
    with pytest.raises(ValueError, match="SCCLUST_MAX_TRAININGS"):
        jobs_mod.max_trainings()



def test_wrong_setting_fails_the_job_instead_of_queueing_it_for_ever(tiny, tmp_path, monkeypatch):
    """A typo in $SCCLUST_MAX_TRAININGS: the job fails with a message naming the variable and its value."""
    cfg = _fake(monkeypatch)
    monkeypatch.setenv("SCCLUST_MAX_TRAININGS", "two")
    job = TrainingJob(tiny, "fake_slow", cfg, runs_root=tmp_path, workspace="w-conf", isolation="thread")
    register_job(job).start()
    assert job.join(10), "the job hangs (queued for ever)"
    assert job.status == "failed" and not job.running and "w-conf" not in busy_workspaces()
    assert "SCCLUST_MAX_TRAININGS" in job.error and "'two'" in job.error
    rec = load_run(job.run_dir, live_pids={os.getpid()})
    assert rec.status == "failed" and "SCCLUST_MAX_TRAININGS" in rec.meta["error"]
    monkeypatch.setenv("SCCLUST_MAX_TRAININGS", "2")
    job = TrainingJob(tiny, "fake_slow", cfg, runs_root=tmp_path, isolation="thread").start()
    assert job.join(30) and job.status == "completed"  # fixed: trainings run again


def test_check_configuration_names_every_wrong_variable(monkeypatch):
    monkeypatch.delenv("SCCLUST_MAX_TRAININGS", raising=False)
    monkeypatch.delenv("SCCLUST_JOB_ISOLATION", raising=False)
    jobs_mod.check_configuration()  # the defaults are fine
    monkeypatch.setenv("SCCLUST_MAX_TRAININGS", "two")
    monkeypatch.setenv("SCCLUST_JOB_ISOLATION", "procces")
    with pytest.raises(ValueError) as info:
        jobs_mod.check_configuration()
    msg = str(info.value)
    assert "SCCLUST_MAX_TRAININGS" in msg and "'two'" in msg and "SCCLUST_JOB_ISOLATION" in msg and "'procces'" in msg


def _csc_config():
    return get_method("contrastive_sc").Config.from_preset(
        None, n_clusters=3, n_hvg=60, epochs=6, batch_size=50, seed=3, snapshot_every=0, torch_threads=1)


@pytest.mark.slow
def test_overlapping_trainings_give_the_same_labels_as_alone(tiny, tmp_path, monkeypatch):
    """Issue 14.9: two overlapping runs of a deep method with dropout give the labels each gives alone."""
    monkeypatch.setenv("SCCLUST_MAX_TRAININGS", "2")
    monkeypatch.setenv("SCCLUST_THREADS", "1")
    cfg = _csc_config()
    alone = TrainingJob(tiny, "contrastive_sc", cfg, runs_root=tmp_path).start()
    assert alone.join(300) and alone.status == "completed", alone.error
    a = TrainingJob(tiny, "contrastive_sc", cfg, runs_root=tmp_path).start()
    b = TrainingJob(tiny, "contrastive_sc", cfg.replace(seed=4), runs_root=tmp_path).start()
    _wait(lambda: a.status == "running" and b.status == "running", 120)  # both train at once
    assert a.join(300) and b.join(300) and a.status == b.status == "completed"
    ref, got = load_result(alone.run_dir), load_result(a.run_dir)
    np.testing.assert_array_equal(got.labels, ref.labels)
    np.testing.assert_allclose(got.embedding, ref.embedding, rtol=0, atol=1e-6)
    assert [h.losses for h in got.history] == [h.losses for h in ref.history]


@pytest.mark.slow
def test_cancel_and_crash_of_worker_process(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("SCCLUST_MAX_TRAININGS", "2")
    cfg = _csc_config().replace(epochs=2000)
    job = TrainingJob(tiny, "contrastive_sc", cfg, runs_root=tmp_path).start()
    _wait(lambda: job.snapshot().epoch >= 2, 120)
    job.cancel()
    assert job.join(120) and job.status == "cancelled" and job.snapshot().epoch < 2000
    assert load_result(job.run_dir).status == "cancelled"  # the labels so far are kept
    crash = TrainingJob(tiny, "contrastive_sc", cfg, runs_root=tmp_path).start()
    _wait(lambda: crash.snapshot().epoch >= 2, 120)
    os.kill(crash.worker_pid, signal.SIGKILL)  # what the kernel's OOM killer does
    assert crash.join(120) and crash.status == "failed"
    assert "stopped unexpectedly" in crash.error and "out of memory" in crash.error
    assert load_run(crash.run_dir).status == "failed"
