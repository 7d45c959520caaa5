"""AppTest of the workspace/job hooks: Delete a run (with confirmation), a queued training shown as queued."""
from __future__ import annotations

import threading
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

import scclust_core.jobs.worker as jobs_worker
from scclust_core.jobs import TrainingJob, register_job
from scclust_core.methods import get_method
from scclust_core.workspace import Workspace

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def _cluster_page(ws_id: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["ws"] = ws_id
    at.switch_page("pages/2_cluster.py").run()
    assert not at.exception
    return at


def test_delete_run_asks_first_then_deletes(finished_ws):
    ws, run_id = finished_ws
    at = _cluster_page(ws.id)
    confirm = at.button(key=f"delete_{run_id}")  # inside the "Delete this run" popover: a second, explicit click
    assert confirm.label == "Delete permanently"
    assert ws.run_dir(run_id).exists()  # showing the popover deletes nothing
    confirm.click().run()
    assert not at.exception and not at.error
    assert not ws.run_dir(run_id).exists() and ws.list_runs() == []


class _Blocking:
    """Stands in for a method: reports the start, then waits for the test (thread isolation)."""

    name = "kmeans"

    def __init__(self, gate: threading.Event):
        self.gate = gate

    def fit(self, adata, config, *, callback=None, label_key=None):
        callback.on_train_begin({"device": "cpu", "n_cells": adata.n_obs, "n_genes": adata.n_vars})
        self.gate.wait(60)
        raise ValueError("stopped by the test")


def test_queued_training_is_shown_as_queued(finished_ws, tiny, ws_root, monkeypatch):
    """Another user's training holds the only slot: this workspace's job waits, and its live view says so."""
    monkeypatch.delenv("SCCLUST_MAX_TRAININGS", raising=False)
    gate = threading.Event()
    monkeypatch.setattr(jobs_worker, "get_method", lambda name: _Blocking(gate))
    ws, _ = finished_ws
    other = Workspace.create()
    other.set_dataset(tiny, "other user's data")
    cfg = get_method("kmeans").Config.from_preset(None, n_clusters=3)
    busy = register_job(TrainingJob(tiny, "kmeans", cfg, runs_root=other.runs_dir, workspace=other.id,
                                    isolation="thread")).start()
    mine = register_job(TrainingJob(ws.load_dataset(), "kmeans", cfg, runs_root=ws.runs_dir, workspace=ws.id,
                                    isolation="thread")).start()
    try:
        deadline = time.time() + 30
        while mine.snapshot().queue_position != 1:
            assert time.time() < deadline
            time.sleep(0.05)
        at = _cluster_page(ws.id)
        texts = " ".join(str(p.proto.text) for p in at.get("progress"))
        assert "queued: 1 training ahead" in texts.lower(), texts
        assert any("queued" in m.value for m in at.markdown)
    finally:
        gate.set()
        busy.join(30)
        mine.join(30)


def test_reupload_brings_back_the_reference_on_the_data_page(finished_ws, tiny):
    """Issue 17.10 in the app: A (reference cell_type) → B → A again: the Data page shows cell_type again."""
    ws, run_id = finished_ws
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["ws"] = ws.id
    at.run()
    assert at.selectbox(key="ref_pick").value == "cell_type"
    other = tiny.copy()
    other.X = other.X * 2
    other.obs["batch"] = "b1"
    ws.set_dataset(other, "b.h5ad")
    at.run()
    assert not at.exception and at.selectbox(key="ref_pick").value == "(none)"
    ws.set_dataset(tiny, "a.h5ad")
    at.run()
    assert not at.exception and at.selectbox(key="ref_pick").value == "cell_type"
    assert [r.run_id for r in ws.list_runs()] == [run_id]  # its runs are back too


def test_quota_blocks_a_new_run_with_a_message(finished_ws, monkeypatch):
    ws, _ = finished_ws
    monkeypatch.setenv("SCCLUST_WORKSPACE_QUOTA_MB", str(ws.usage_bytes() / 2**20 / 2))
    at = _cluster_page(ws.id)
    at.selectbox(key="method_pick").set_value("kmeans").run()
    at.button(key="start").click().run()
    assert not at.exception
    assert any("over its quota" in e.value for e in at.error)
    assert len(ws.list_runs()) == 1
