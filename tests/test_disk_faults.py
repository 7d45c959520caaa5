"""Disk faults: files cut short are never served, a full disk is a clear error, and h5py failing cannot crash us.

A full disk is simulated with ``RLIMIT_FSIZE`` (SIGXFSZ ignored, so writes fail with EFBIG) in a child Python, or
with ``/dev/full`` (ENOSPC). After h5py fails a write in-process, Python segfaults (then or at exit): these tests
check the process that asked for the write exits normally.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scclust_core import _atomic
from scclust_core.results import MethodResult
from scclust_core.runs import RunFileError, RunRecorder, list_runs, load_result, load_run
from scclust_core.workspace import Workspace

WS_ID = "d15cfa0175d15cfa0175d15cfa0175aa"
ROOT = Path(__file__).resolve().parents[1]


def _result(n: int = 600, k: int = 6) -> MethodResult:
    rng = np.random.default_rng(0)
    return MethodResult(method="kmeans", embedding=rng.normal(size=(n, 8)).astype(np.float32),
                        labels=(np.arange(n) % k).astype(np.int64), cell_index=np.arange(n, dtype=np.int64),
                        n_input_cells=n, history=[], snapshots=[], snapshot_index=np.zeros(0, np.int64),
                        config={"seed": 0}, metrics={"ari": 0.9})


def _finished_run(root: Path) -> Path:
    rec = RunRecorder(root, method="kmeans", seed=0)
    rec.on_train_end(_result())
    return rec.dir


def _cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ------------------------------------------------------------------------------------------------ run files
def test_run_files_are_recorded_with_length_and_checksum(tmp_path):
    d = _finished_run(tmp_path)
    files = json.loads((d / "run.json").read_text())["files"]
    assert set(files) == {"labels.csv", "embedding.npy"}  # no snapshots/history in this result
    assert files["labels.csv"] == _atomic.file_digest(d / "labels.csv")
    res = load_result(d)
    assert res.n_clusters == 6 and (res.full_labels() >= 0).all()


def test_truncated_labels_csv_is_reported_never_shown(tmp_path):
    d = _finished_run(tmp_path)
    _cut_in_half(d / "labels.csv")
    rec = load_run(d)
    assert rec.status == "failed" and not rec.has_result  # never offered as a result
    assert "labels.csv" in rec.meta["error"] and "Delete the run" in rec.meta["error"]
    with pytest.raises(RunFileError, match=r"labels\.csv is damaged .*train it again"):
        load_result(d)
    assert [r.status for r in list_runs(tmp_path)] == ["failed"]


def test_damaged_run_written_before_checksums_is_caught_too(tmp_path):
    d = _finished_run(tmp_path)
    for name in ("run.json", "result.json"):  # as an older version wrote them: no list of files
        meta = json.loads((d / name).read_text())
        meta.pop("files")
        (d / name).write_text(json.dumps(meta))
    _cut_in_half(d / "labels.csv")
    assert load_run(d).has_result  # nothing recorded to compare with: only reading finds it
    with pytest.raises(RunFileError, match=r"labels\.csv is damaged"):
        load_result(d)


def test_changed_file_of_same_length_fails_the_checksum(tmp_path):
    d = _finished_run(tmp_path)
    data = bytearray((d / "embedding.npy").read_bytes())
    data[-1] ^= 0xFF
    (d / "embedding.npy").write_bytes(bytes(data))
    with pytest.raises(RunFileError, match=r"embedding\.npy is damaged \(its content changed"):
        load_result(d)


def test_workspace_reports_a_damaged_run(tmp_path):
    ws = Workspace(WS_ID, tmp_path)
    d = _finished_run(ws.runs_dir)
    _cut_in_half(d / "labels.csv")
    (rec,) = ws.list_runs(this_dataset=False)
    assert rec.status == "failed" and "labels.csv" in rec.meta["error"] and not rec.has_result
    with pytest.raises(RunFileError, match=r"labels\.csv"):
        ws.run_labels(d.name, 600)


# ------------------------------------------------------------------------------------------------ caches
def _markers(n_clusters: int = 6, per: int = 100) -> pd.DataFrame:
    rows = [{"cluster": f"0{c}", "rank": r + 1, "gene": f"G{r}", "score": 1.0 / (r + 1)}
            for c in range(n_clusters) for r in range(per)]
    return pd.DataFrame(rows)


def test_cache_round_trip_and_names(tmp_path):
    ws = Workspace(WS_ID, tmp_path)
    ws.write_cache("r1_markers_ab.csv", _markers())
    got = ws.read_cache("r1_markers_ab.csv", "csv", dtype={"cluster": str})
    assert got.shape == (600, 4) and got["cluster"].iloc[0] == "00"  # "00" stays a string
    ws.write_cache("r1_umap.npy", np.ones((5, 2), np.float32))
    assert ws.read_cache("r1_umap.npy", "npy").shape == (5, 2)
    ws.write_cache("k_estimate.json", {"k": 4})
    assert ws.read_cache("k_estimate.json", "json") == {"k": 4} and ws.read_cache("none.json", "json") is None
    for bad in ("../x", "a/b", ".hidden", "", "x.npy.check.json"):
        with pytest.raises(ValueError, match="Invalid cache name"):
            ws.cache_file(bad)
    ws.delete_run("r1")  # a run's caches (and their sidecars) go with it
    assert sorted(p.name for p in ws.cache_dir.iterdir()) == ["k_estimate.json", "k_estimate.json.check.json"]


def test_truncated_markers_cache_is_dropped_and_recomputed(tmp_path, caplog):
    ws = Workspace(WS_ID, tmp_path)
    path = ws.write_cache("r1_markers_ab.csv", _markers())
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:160]))  # what a full disk left of a non-atomic write: 159 rows, 2 clusters
    with caplog.at_level(logging.WARNING, "scclust_core.workspace"):
        assert ws.read_cache("r1_markers_ab.csv", "csv") is None  # never served
    assert "Dropped the cache r1_markers_ab.csv" in caplog.text and not path.exists()
    ws.write_cache("r1_markers_ab.csv", _markers())  # the caller recomputes it
    got = ws.read_cache("r1_markers_ab.csv", "csv", dtype={"cluster": str})
    assert len(got) == 600 and got["cluster"].nunique() == 6


def test_cache_without_sidecar_or_unparsable_is_dropped(tmp_path):
    ws = Workspace(WS_ID, tmp_path)
    ws.cache_dir.mkdir(parents=True)
    np.save(ws.cache_file("r1_umap.npy"), np.ones((5, 2)))  # written by an older version: no check file
    assert ws.read_cache("r1_umap.npy", "npy") is None and not ws.cache_file("r1_umap.npy").exists()
    ws.write_cache("r2.json", "not json {")  # intact bytes, but not what the reader asks for
    assert ws.read_cache("r2.json", "json") is None and not ws.cache_file("r2.json").exists()


def test_cache_write_on_a_full_disk_keeps_nothing_and_does_not_raise(tmp_path, monkeypatch, caplog):
    ws = Workspace(WS_ID, tmp_path)

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("scclust_core.workspace.atomic_write_bytes", full)
    with caplog.at_level(logging.WARNING, "scclust_core.workspace"):
        assert ws.write_cache("r1_markers_ab.csv", _markers()) is None
    assert "Could not keep the cache" in caplog.text and not any(ws.cache_dir.iterdir())


# ------------------------------------------------------------------------------------------------ state.json
def test_damaged_state_is_reported_and_kept(tmp_path):
    ws = Workspace(WS_ID, tmp_path)
    ws.set_reference("cell_type")
    ws.set_edits("r1", {"0": "T cells"})
    assert ws.problems == [] and ws.state_warning is None
    ws.state_path.write_text('{"reference": "cell_type", "edi')  # cut short
    assert ws.reference() is None and ws.edits("r1") == {}
    (msg,) = ws.problems
    assert "state.json" in msg and "reference annotation and cluster renames" in msg
    ws.set_reference("batch")  # the next change starts afresh; the damaged file is kept
    (kept,) = ws.dir.glob("state.unreadable-*.json")
    assert kept.read_text() == '{"reference": "cell_type", "edi'
    (msg,) = ws.problems
    assert kept.name in msg and "started afresh" in msg and ws.reference() == "batch"
    ws.dismiss_state_warning()
    assert ws.problems == [] and ws.reference() == "batch" and kept.exists()


# ------------------------------------------------------------------------------------------------ full disk
def test_disk_full_error_is_a_clear_value_error(tmp_path):
    err = _atomic.disk_full_error(tmp_path / "x.h5ad", 50 * 2**20, OSError(errno.ENOSPC, "No space"))
    assert isinstance(err, ValueError) and isinstance(err, OSError) and err.errno == errno.ENOSPC
    assert "the disk is full (" in str(err) and "MB free, 50 MB needed): free space or choose another folder" in str(err)
    with pytest.raises(ValueError, match="the disk is full"):
        _atomic.check_free_space(tmp_path / "x.h5ad", 2**62)
    with pytest.raises(ValueError, match="the disk is full"), _atomic.atomic_path(tmp_path / "y") as tmp:
        raise OSError(errno.EFBIG, "File too large", str(tmp))
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone


def test_writer_child_failures_become_clear_errors(tmp_path):
    from scclust_core.io.write import _child_failure

    err = _child_failure(tmp_path / "d.h5ad", 2**20, 1, "SCCLUST-WRITE-ERROR errno=28 OSError: Unable to write")
    assert isinstance(err, ValueError) and "the disk is full" in str(err)
    err = _child_failure(tmp_path / "d.h5ad", 2**20, -11, "")
    assert isinstance(err, OSError) and "killed by signal 11" in str(err)
    err = _child_failure(tmp_path / "d.h5ad", 0, 1, "SCCLUST-WRITE-ERROR errno=None TypeError: can't store x")
    assert isinstance(err, ValueError) and "can't store x" in str(err)


_FULL_DISK_SCRIPT = """
import resource, signal, sys
sys.path.insert(0, {tests!r})
import numpy as np
from anndata import AnnData
from helpers import synthetic_counts
from scclust_core import _atomic, export, workspace
from scclust_core.runs import save_result

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of killing us
ws = workspace.Workspace({ws_id!r}, {root!r})
ws.set_dataset(synthetic_counts(150, 60), "small")
before = ws.dataset_path.read_bytes()
big = synthetic_counts(150, 60)
big.obsm["noise"] = np.random.default_rng(0).normal(size=(150, 4000)).astype(np.float32)  # 2.4 MB, incompressible
resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

def attempt(what, fn):
    try:
        fn()
        print(what, "NO ERROR")
    except ValueError as exc:
        print(what, "ValueError:", exc)

attempt("upload-precheck", lambda: ws.set_dataset(big, "big"))
attempt("export-precheck", lambda: export.h5ad_bytes(big))
# blind the free-space checks: now h5py itself hits the limit, in the writer child
_atomic.check_free_space = workspace.check_free_space = lambda path, needed: None
attempt("upload-h5py", lambda: ws.set_dataset(big, "big"))
attempt("export-h5py", lambda: export.h5ad_bytes(big))
{extra}
assert ws.dataset_path.read_bytes() == before, "the previous dataset changed"
print("ALIVE")
"""

_RESULT_EXTRA = """
from scclust_core.results import MethodResult
res = MethodResult(method="kmeans", embedding=np.ones((40000, 16), np.float32), labels=np.zeros(40000, np.int64),
                   cell_index=np.arange(40000), n_input_cells=40000, history=[], snapshots=[],
                   snapshot_index=np.zeros(0, np.int64), config={{}}, metrics={{}})
attempt("result", lambda: save_result(res, {root!r} + "/result"))
"""


def test_full_disk_upload_export_and_result_stay_alive(tmp_path):
    """RLIMIT_FSIZE (1 MB) in a child Python: every write is a clear ValueError and the process exits normally."""
    root = str(tmp_path / "ws")
    script = _FULL_DISK_SCRIPT.format(tests=str(ROOT / "tests"), ws_id=WS_ID, root=root,
                                      extra=_RESULT_EXTRA.format(root=root))
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                         timeout=300, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, f"rc={out.returncode}\n{out.stdout}\n{out.stderr[-3000:]}"  # no segfault
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    for what in ("upload-precheck", "export-precheck", "upload-h5py", "export-h5py", "result"):
        assert lines[what].startswith("ValueError:"), (what, out.stdout)
        assert "the disk is full (" in lines[what] and "free space or choose another folder" in lines[what]
    assert "MB needed" in lines["upload-precheck"] and "File too large" in lines["upload-h5py"]
    assert out.stdout.rstrip().endswith("ALIVE")
    assert not [p for p in (tmp_path / "ws").rglob("*.tmp")]  # no temporary file left behind


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_io_write_to_dev_full_is_a_clear_error():
    from helpers import synthetic_counts

    from scclust_core import io as scio

    with pytest.raises(ValueError, match=r"the disk is full \(.*free space or choose another folder"):
        scio.write(synthetic_counts(150, 60), "/dev/full")
    assert Path("/dev/full").exists() and not Path("/dev/full").is_file()  # written in place, never replaced


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_cli_cluster_out_dev_full_fails_after_training_with_the_message(tmp_path, counts_adata, capsys):
    """``--out /dev/full``, named ``full.h5ad`` by a link (the CLI refuses an output not ending in .h5ad)."""
    from scclust_core.cli import main

    src = tmp_path / "toy.h5ad"
    counts_adata.write_h5ad(src)
    out = tmp_path / "full.h5ad"
    out.symlink_to("/dev/full")
    code = main(["cluster", str(src), "--method", "kmeans", "--n-clusters", "3", "--set", "n_top_genes=100",
                 "--set", "n_pcs=10", "--runs-dir", str(tmp_path / "runs"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code != 0 and "error:" in err and "the disk is full (" in err and "choose another folder" in err
    (run,) = (tmp_path / "runs").iterdir()  # the failure came after training, which was recorded
    assert load_run(run).status == "completed"
