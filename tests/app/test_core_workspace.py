import errno
import json
import multiprocessing
import os
import threading
import time

import numpy as np
import pandas as pd
import pytest

import scclust_core.io as scio
from scclust_core._atomic import atomic_path, atomic_write_text
from scclust_core.runs import RunRecorder, validate_run_id
from scclust_core.workspace import (Workspace, WorkspaceQuotaError, apply_edits, new_workspace_id, sweep_idle,
                                    valid_workspace_id)

WS_A = "a" * 32


def _files(directory):
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file() and p.name != ".lock")


def test_ids_are_unguessable_and_matched_in_full(ws_root):
    ids = {new_workspace_id() for _ in range(50)}
    assert len(ids) == 50 and all(len(i) == 32 and valid_workspace_id(i) for i in ids)  # 128 random bits
    good = new_workspace_id()
    for bad in ("abcdef123456", good + "\n", good + "0", good.upper(), "../" + good[3:], good[:-1] + "/",
                "", None, 42):
        assert not valid_workspace_id(bad), bad
        if isinstance(bad, str):
            with pytest.raises(ValueError, match="Invalid workspace id"):
                Workspace(bad)
    # an id nobody created (typed, guessed, expired) is never adopted: the visitor gets a fresh random one
    chosen = "0" * 32
    ws = Workspace.open(chosen)
    assert ws.id != chosen and valid_workspace_id(ws.id)
    assert Workspace.open("../../etc").id != "../../etc"


def test_workspace_is_created_lazily(ws_root, tiny):
    ws = Workspace.open(None)
    # reading (as a page view does) writes nothing
    assert ws.list_runs() == [] and ws.fingerprint is None and not ws.has_dataset()
    _ = ws.cache_dir
    assert not ws.exists() and not ws_root.exists()
    ws.set_dataset(tiny, "tiny.h5ad")
    assert ws.exists() and Workspace.open(ws.id).id == ws.id  # the first write makes it; a refresh reopens it


def test_dataset_state_and_filter_undo(ws_root, tiny):
    ws = Workspace.create()
    state = ws.set_dataset(tiny, "tiny.h5ad")
    assert state["n_cells"] == 150 and ws.fingerprint
    ws.set_reference("cell_type")
    assert Workspace.open(ws.id).reference() == "cell_type"  # a new session sees it
    sub = tiny[:100].copy()
    ws.set_dataset(sub, "tiny.h5ad", filtered_from_original=True, filter_params={"min_genes": 1})
    assert ws.load_dataset().n_obs == 100 and ws.reference() == "cell_type"
    assert ws.undo_filter() and ws.load_dataset().n_obs == 150 and not ws.original_path.exists()
    other = tiny.copy()
    other.X = other.X * 2
    ws.set_dataset(other, "other.h5ad")  # another file: its own (empty) choices
    assert ws.reference() is None


def test_reupload_restores_the_choices_of_that_data(ws_root, tiny):
    """Issue 17.10: upload A, choose a reference; upload B; re-upload A → A's runs AND its reference are back."""
    ws = Workspace.create()
    ws.set_dataset(tiny, "a.h5ad")
    ws.set_reference("cell_type")
    other = tiny.copy()
    other.X = other.X * 3
    other.obs["batch"] = "b1"
    ws.set_dataset(other, "b.h5ad")
    assert ws.reference() is None
    ws.set_reference("batch")
    ws.set_dataset(tiny.copy(), "a again.h5ad")
    assert ws.reference() == "cell_type" and ws.choices() == {"reference": "cell_type"}
    ws.set_dataset(other.copy(), "b again.h5ad")
    assert ws.reference() == "batch"
    ws.set_reference(None)  # "(none)" is a choice too
    ws.set_dataset(tiny.copy(), "a.h5ad")
    ws.set_dataset(other.copy(), "b.h5ad")
    assert ws.reference() is None


def _failing_write(monkeypatch, after_bytes=2048):
    """io.write that starts writing, then fails as a full disk does (ENOSPC) mid-file."""
    real = scio.write

    def write(adata, path):
        real(adata, path)
        with open(path, "r+b") as fh:
            fh.truncate(after_bytes)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(scio, "write", write)


def test_failed_dataset_write_keeps_previous_data_state_and_runs(finished_ws, tiny, monkeypatch):
    ws, run_id = finished_ws
    ws.set_edits(run_id, {"0": "T cells"})
    before_files = _files(ws.dir)
    before_bytes = ws.dataset_path.read_bytes()
    before_state = ws.load_state()
    other = tiny[:90].copy()
    _failing_write(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        ws.set_dataset(other, "new upload.h5ad")
    with pytest.raises(OSError, match="No space left"):  # QC filtering fails the same way
        ws.set_dataset(other, "tiny", filtered_from_original=True, filter_params={"min_genes": 5})
    assert ws.dataset_path.read_bytes() == before_bytes
    assert ws.load_state() == before_state
    assert _files(ws.dir) == before_files  # no temporary file left behind, no pre-filter copy made
    assert [r.run_id for r in ws.list_runs()] == [run_id]
    assert ws.run_labels(run_id, 150).notna().all() and ws.edits(run_id) == {"0": "T cells"}
    assert ws.load_dataset().n_obs == 150


def test_quota_refuses_with_a_clear_message_and_keeps_data(finished_ws, tiny, monkeypatch):
    ws, run_id = finished_ws
    before = ws.dataset_path.read_bytes()
    big = tiny.copy()
    big.obsm["noise"] = np.random.default_rng(0).normal(size=(big.n_obs, 2000)).astype(np.float32)
    monkeypatch.setenv("SCCLUST_WORKSPACE_QUOTA_MB", str(ws.usage_bytes() / 2**20 + 0.2))
    with pytest.raises(WorkspaceQuotaError, match=r"over its quota of .*Delete runs"):
        ws.set_dataset(big, "big.h5ad")
    assert ws.dataset_path.read_bytes() == before and ws.list_runs()[0].run_id == run_id
    monkeypatch.setenv("SCCLUST_WORKSPACE_QUOTA_MB", "-1")
    with pytest.raises(ValueError, match="SCCLUST_WORKSPACE_QUOTA_MB"):
        ws.check_quota()


def test_unreadable_state_is_never_overwritten(finished_ws):
    ws, run_id = finished_ws
    ws.state_path.write_text('{"dataset_name": "x", ')  # truncated by a crash of an older version
    assert ws.load_state() == {}
    ws.set_reference("cell_type")
    kept = list(ws.dir.glob("state.unreadable-*.json"))
    assert len(kept) == 1 and kept[0].read_text() == '{"dataset_name": "x", '
    assert ws.reference() == "cell_type"


def _edits_worker(root, ws_id, prefix, n):
    os.environ["SCCLUST_WORKSPACES"] = root
    ws = Workspace(ws_id, root)
    for i in range(n):
        ws.set_edits(f"{prefix}{i}", {"0": f"name{i}"})


def test_concurrent_writers_lose_nothing(finished_ws):
    """Threads and processes updating the same workspace: every update survives (per-workspace lock)."""
    ws, _ = finished_ws
    threads = [threading.Thread(target=_edits_worker, args=(str(ws.root), ws.id, f"t{k}_", 15)) for k in range(3)]
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_edits_worker, args=(str(ws.root), ws.id, f"p{k}_", 15)) for k in range(2)]
    for w in threads + procs:
        w.start()
    for w in threads + procs:
        w.join(60)
    assert all(p.exitcode == 0 for p in procs)
    edits = ws.load_state()["edits"]
    assert len([k for k in edits if k[0] in "tp"]) == 5 * 15


def test_atomic_write_failure_leaves_target_untouched(tmp_path):
    target = tmp_path / "f.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_run_ids_are_strictly_validated(finished_ws, tmp_path):
    ws, run_id = finished_ws
    assert ws.run_dir(run_id).is_dir() and validate_run_id(run_id) == run_id
    for bad in ("..", ".", "../x", "a/b", "/etc", "", "x\n", "x\x00", "a.b", "-x", "x" * 129, None):
        with pytest.raises(ValueError, match="Invalid run id"):
            ws.run_dir(bad)
    with pytest.raises(ValueError, match="Invalid run id"):
        RunRecorder(tmp_path, method="kmeans", seed=0, run_id="../escape")
    assert not (tmp_path.parent / "escape").exists()


def test_edits_rename_and_merge(ws_root):
    ws = Workspace.create()
    ws.set_edits("run1", {"0": "T cells", "1": "T cells", "2": "2"})
    assert ws.edits("run1") == {"0": "T cells", "1": "T cells"}
    lab = pd.Series(pd.Categorical(["0", "1", "2", None], categories=["0", "1", "2"]))
    out = apply_edits(lab, ws.edits("run1"))
    assert list(out.cat.categories) == ["T cells", "2"]
    assert out.tolist()[:3] == ["T cells", "T cells", "2"] and pd.isna(out.iloc[3])


def test_runs_listed_interrupted_and_deleted(finished_ws):
    ws, run_id = finished_ws
    recs = ws.list_runs()
    assert [r.run_id for r in recs] == [run_id] and recs[0].status == "completed"
    labels = ws.run_labels(run_id, 150)
    assert labels.notna().all() and labels.cat.categories.size == 3
    # a run left "running" or "queued" by a process that is gone shows as interrupted, not running forever
    for status, name in (("running", "20000101-000000_kmeans_s0_dead00"), ("queued", "20000101-000000_kmeans_s0_dead01")):
        d = ws.runs_dir / name
        d.mkdir()
        meta = json.loads((ws.run_dir(run_id) / "run.json").read_text())
        meta.update(run_id=d.name, status=status, pid=os.getpid())
        (d / "run.json").write_text(json.dumps(meta))
    statuses = {r.run_id: r.status for r in ws.list_runs(active_ids=set())}
    assert statuses["20000101-000000_kmeans_s0_dead00"] == "interrupted"
    assert statuses["20000101-000000_kmeans_s0_dead01"] == "interrupted"
    with pytest.raises(ValueError, match="cancel it before deleting"):
        ws.delete_run("20000101-000000_kmeans_s0_dead00", active_ids={"20000101-000000_kmeans_s0_dead00"})
    ws.set_edits(run_id, {"0": "x"})
    (ws.cache_dir / f"{run_id}_umap.npy").write_bytes(b"x")
    for name in ("20000101-000000_kmeans_s0_dead00", "20000101-000000_kmeans_s0_dead01", run_id):
        ws.delete_run(name)
    assert ws.list_runs() == [] and ws.edits(run_id) == {} and not list(ws.cache_dir.glob(f"{run_id}*"))


def test_idle_workspaces_are_swept(ws_root, tiny):
    old, recent, busy = Workspace.create(), Workspace.create(), Workspace.create()
    for ws in (old, recent, busy):
        ws.set_reference(None)  # a write: the directory exists
    unrelated = ws_root / "notes"  # not workspace-shaped: never touched
    unrelated.mkdir()
    stale = time.time() - 10 * 3600
    for ws in (old, busy):
        for p in [ws.dir, *ws.dir.rglob("*")]:
            os.utime(p, (stale, stale))
    assert sweep_idle(max_idle_s=3600, keep={busy.id}) == [old.id]
    assert not old.exists() and recent.exists() and busy.exists() and unrelated.exists()
    Workspace.open(busy.id)  # opening marks it used
    assert sweep_idle(max_idle_s=3600) == []
    assert Workspace.open(old.id).id != old.id  # its URL now opens a fresh workspace
