import json
import os

import numpy as np
import pandas as pd

from scclust_core.workspace import Workspace, apply_edits, valid_workspace_id


def test_open_creates_or_reuses(ws_root):
    ws = Workspace.open(None)
    assert valid_workspace_id(ws.id) and ws.runs_dir.is_dir()
    again = Workspace.open(ws.id)
    assert again.dir == ws.dir
    assert Workspace.open("../../etc").id != "../../etc"  # a bad id from the URL never escapes the root


def test_dataset_state_and_filter_undo(ws_root, tiny):
    ws = Workspace.open("abcdef123456")
    state = ws.set_dataset(tiny, "tiny.h5ad")
    assert state["n_cells"] == 150 and ws.fingerprint
    ws.set_reference("cell_type")
    assert Workspace.open("abcdef123456").reference() == "cell_type"  # a new session sees it
    sub = tiny[:100].copy()
    ws.set_dataset(sub, "tiny.h5ad", filtered_from_original=True, filter_params={"min_genes": 1})
    assert ws.load_dataset().n_obs == 100 and ws.reference() == "cell_type"
    assert ws.undo_filter() and ws.load_dataset().n_obs == 150
    ws.set_dataset(tiny, "other.h5ad")  # a new upload clears the reference
    assert ws.reference() is None


def test_edits_rename_and_merge(ws_root):
    ws = Workspace.open("abcdef123456")
    ws.set_edits("run1", {"0": "T cells", "1": "T cells", "2": "2"})
    assert ws.edits("run1") == {"0": "T cells", "1": "T cells"}
    lab = pd.Series(pd.Categorical(["0", "1", "2", None], categories=["0", "1", "2"]))
    out = apply_edits(lab, ws.edits("run1"))
    assert list(out.cat.categories) == ["T cells", "2"]
    assert out.tolist()[:3] == ["T cells", "T cells", "2"] and pd.isna(out.iloc[3])


def test_runs_listed_and_interrupted(finished_ws):
    ws, run_id = finished_ws
    recs = ws.list_runs()
    assert [r.run_id for r in recs] == [run_id] and recs[0].status == "completed"
    labels = ws.run_labels(run_id, 150)
    assert labels.notna().all() and labels.cat.categories.size == 3
    # a run left "running" by a process that is gone shows as interrupted, not running forever
    d = ws.runs_dir / "20000101-000000_kmeans_s0_dead00"
    d.mkdir()
    meta = json.loads((ws.run_dir(run_id) / "run.json").read_text())
    meta.update(run_id=d.name, status="running", pid=os.getpid())
    (d / "run.json").write_text(json.dumps(meta))
    statuses = {r.run_id: r.status for r in ws.list_runs(active_ids=set())}
    assert statuses[d.name] == "interrupted"
    ws.delete_run(d.name)
    assert len(ws.list_runs()) == 1
