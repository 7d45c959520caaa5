"""Run records: everything needed to trust, reload and repeat a clustering run.

A run directory ``<root>/<YYYYmmdd-HHMMSS>_<method>_s<seed>_<id>/`` holds

- ``run.json``: run id, method, preset, config, seed, package versions, dataset fingerprint, device,
  start/end time, status (``running`` → ``completed`` | ``cancelled`` | ``failed``; a run whose process died
  is reported as ``interrupted``), final metrics, error message;
- ``history.csv``: one row per epoch (named losses, display metrics, seconds), appended live;
- ``labels.csv``, ``embedding.npy``, ``snapshots.npz`` when the run ends.

Files are plain CSV/JSON/NPY (never pickles), so a run directory can be shared and inspected. Each is written
atomically, and the length and sha256 of each data file are recorded (``files`` in ``result.json`` and
``run.json``): a file cut short or changed later (a full disk, a crash, a copy gone wrong) makes the run *damaged*,
reported with the file's name and what to do (:class:`RunFileError`), and never shown as a result. The JSON
records themselves are checked by parsing them (a cut JSON does not parse; annotating one by hand stays possible).
"""
from __future__ import annotations

import csv
import json
import logging
import os
import platform
import random
import re
import secrets
import socket
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import atomic_path, atomic_write_text
from .results import Callback, EpochLog, MethodResult, Snapshot

logger = logging.getLogger(__name__)

__all__ = ["seed_everything", "env_versions", "default_root", "RunRecorder", "RunRecord", "load_run",
           "list_runs", "load_result", "save_result", "new_run_id", "validate_run_id", "RunFileError"]

#: data files of a finished run whose length and sha256 are recorded
RESULT_FILES = ("embedding.npy", "labels.csv", "snapshots.npz", "history.csv")


class RunFileError(ValueError):
    """A file of a run directory is missing, cut short or changed: the message names it and says what to do."""


def _damaged(path: Path, name: str, reason: str) -> RunFileError:
    return RunFileError(
        f"Run {path.name}: its file {name} is damaged ({reason}), so the run cannot be shown. Delete the run "
        f"(Cluster page) and train it again, or restore {name} from a backup of {path}.")

#: a run id is one path component: letters, digits, ``-`` and ``_`` (no dots, no separators), at most 128
RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,127}")


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA) and ask cuDNN for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch

        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
    except ImportError:  # pragma: no cover
        pass


def env_versions() -> dict[str, str]:
    """Versions of Python and the packages a result depends on."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("scclust", "torch", "numpy", "scipy", "scanpy", "anndata", "scikit-learn", "umap-learn",
                "leidenalg", "igraph", "streamlit"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    from . import __version__

    out["scclust_core"] = __version__
    return out


def default_root() -> Path:
    """``$SCCLUST_RUNS_DIR`` if set, else ``./scclust_runs``."""
    return Path(os.environ.get("SCCLUST_RUNS_DIR", "scclust_runs"))


def new_run_id(method: str, seed: int) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return validate_run_id(f"{stamp}_{method}_s{seed}_{secrets.token_hex(3)}")


def validate_run_id(run_id: object) -> str:
    """``run_id`` if it is a safe single path component (see ``RUN_ID_RE``), else a ``ValueError``.

    Run ids reach file paths from URLs and widgets: ``..``, ``/``, NUL or an absolute path must never get through.
    """
    if not isinstance(run_id, str) or not RUN_ID_RE.fullmatch(run_id):
        raise ValueError(f"Invalid run id {run_id!r}: expected letters, digits, '-' or '_' (at most 128)")
    return run_id


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _json_default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if np.isnan(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _clean_nan(obj: Any) -> Any:
    if isinstance(obj, float) and (np.isnan(obj) or np.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {k: _clean_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_nan(v) for v in obj]
    return obj


def _write_json(path: Path, data: dict) -> None:
    # atomic (unique temporary name + os.replace): a reader never sees half a file, two writers never collide
    atomic_write_text(path, json.dumps(_clean_nan(data), indent=2, default=_json_default))


class RunRecorder(Callback):
    """Callback that writes the run directory live (run.json at start, history.csv per epoch, results at end)."""

    def __init__(self, root: str | Path | None = None, *, method: str, seed: int, preset: str | None = None,
                 dataset: dict | None = None, label_key: str | None = None, run_id: str | None = None,
                 extra: dict | None = None):
        self.run_id = validate_run_id(run_id) if run_id is not None else new_run_id(method, seed)
        self.dir = Path(root or default_root()) / self.run_id
        self.dir.mkdir(parents=True, exist_ok=False)
        self.meta: dict[str, Any] = {
            "run_id": self.run_id, "method": method, "preset": preset, "seed": seed, "status": "running",
            "dataset": dataset or {}, "label_key": label_key, "versions": env_versions(), "started_at": _now(),
            "finished_at": None, "pid": os.getpid(), "host": socket.gethostname(), "config": None,
            "device": None, "metrics": {}, "n_epochs_done": 0, "error": None, **(extra or {}),
        }
        _write_json(self.dir / "run.json", self.meta)
        self._history_fields: list[str] | None = None

    def on_train_begin(self, info: dict[str, Any]) -> None:
        self.meta.update(status="running", config=info.get("config"), device=info.get("device"),
                         threads=info.get("threads"), n_cells=info.get("n_cells"), n_genes_used=info.get("n_genes"),
                         total_epochs=info.get("total_epochs"))
        _write_json(self.dir / "run.json", self.meta)

    def on_epoch_end(self, log: EpochLog, snapshot: Snapshot | None) -> None:
        row = log.to_row()
        path = self.dir / "history.csv"
        if self._history_fields is None or not set(row) <= set(self._history_fields):
            # new columns (e.g. a new phase with other losses): rewrite with the union of columns
            rows = _read_csv(path) if path.exists() else []
            self._history_fields = list(dict.fromkeys([*(self._history_fields or []), *row]))
            with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=self._history_fields)
                w.writeheader()
                w.writerows(rows)
        with path.open("a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self._history_fields).writerow(row)
        self.meta["n_epochs_done"] = log.epoch
        self.meta["heartbeat"] = _now()
        _write_json(self.dir / "run.json", self.meta)

    def on_train_end(self, result: MethodResult) -> None:
        from ._atomic import file_digest

        save_result(result, self.dir)
        files = {n: file_digest(self.dir / n) for n in RESULT_FILES if (self.dir / n).exists()}
        self.meta.update(status=result.status, finished_at=_now(), metrics=result.metrics,
                         seconds=result.seconds, n_clusters=result.n_clusters, files=files)
        _write_json(self.dir / "run.json", self.meta)

    def update(self, **fields: Any) -> None:
        """Set fields of ``run.json`` (e.g. ``status="cancelled"`` for a queued run that never started)."""
        self.meta.update(fields)
        _write_json(self.dir / "run.json", self.meta)

    def fail(self, exc: BaseException) -> None:
        """Record a failure (the caller re-raises)."""
        self.meta.update(status="failed", finished_at=_now(), error=f"{type(exc).__name__}: {exc}",
                         traceback="".join(traceback.format_exception(exc)))
        _write_json(self.dir / "run.json", self.meta)


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _result_bytes(result: MethodResult) -> int:
    """About how many bytes :func:`save_result` writes (checked against the free space first)."""
    snaps = sum(s.xy.nbytes + np.asarray(s.labels).nbytes * 2 for s in result.snapshots)
    return int(result.embedding.nbytes * 1.05 + len(result.labels) * 24 + snaps + 2**20)


def save_result(result: MethodResult, directory: str | Path) -> Path:
    """Write labels.csv, embedding.npy, snapshots.npz and result.json of ``result`` into ``directory``.

    ``result.json`` lists the length and sha256 of the other files (``files``), checked by :func:`load_result`.
    A full disk is a :class:`~scclust_core._atomic.DiskFullError` (a ``ValueError``), before anything is written
    when the free space is already short.
    """
    from ._atomic import check_free_space, disk_errors, file_digest

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    with disk_errors(d / "labels.csv", _result_bytes(result)):
        check_free_space(d, _result_bytes(result))
        _save_result_files(result, d)
        _write_json(d / "result.json", {
            "method": result.method, "config": result.config, "metrics": result.metrics, "status": result.status,
            "device": result.device, "seconds": result.seconds, "started_at": result.started_at,
            "finished_at": result.finished_at, "n_input_cells": result.n_input_cells,
            "label_key": result.label_key,
            "extras": {k: v for k, v in result.extras.items() if isinstance(v, (str, int, float, bool, list, dict))},
            "files": {n: file_digest(d / n) for n in RESULT_FILES if (d / n).exists()},
        })
    return d


def _save_result_files(result: MethodResult, d: Path) -> None:
    """The data files of a result, each written atomically (a reader sees the old file or the new one)."""
    with atomic_path(d / "embedding.npy") as tmp, tmp.open("wb") as fh:
        np.save(fh, result.embedding)
    with atomic_path(d / "labels.csv") as tmp, tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["cell_index", "label"])
        w.writerows(zip(result.cell_index.tolist(), result.labels.tolist()))
    if result.snapshots:
        with atomic_path(d / "snapshots.npz") as tmp, tmp.open("wb") as fh:
            np.savez_compressed(
                fh,
                epochs=np.array([s.epoch for s in result.snapshots], dtype=np.int64),
                phases=np.array([s.phase for s in result.snapshots], dtype="U32"),
                xy=np.stack([s.xy for s in result.snapshots]).astype(np.float32),
                labels=np.stack([s.labels for s in result.snapshots]).astype(np.int64),
                index=result.snapshot_index.astype(np.int64),
            )
    pd_hist = result.history_frame()
    if len(pd_hist):
        with atomic_path(d / "history.csv") as tmp:
            pd_hist.to_csv(tmp, index=False)


@dataclass
class RunRecord:
    """What ``run.json`` says, with the status corrected for runs whose process is gone."""

    path: Path
    meta: dict[str, Any]

    @property
    def run_id(self) -> str:
        return self.meta["run_id"]

    @property
    def status(self) -> str:
        return self.meta.get("status", "unknown")

    @property
    def method(self) -> str:
        return self.meta.get("method", "?")

    @property
    def has_result(self) -> bool:
        """The result files are there and none is damaged (see :attr:`problem`)."""
        return ((self.path / "labels.csv").exists() and (self.path / "embedding.npy").exists()
                and not self.meta.get("damaged"))

    def problem(self) -> str | None:
        """Why this run's files cannot be trusted (a file cut short or missing), from their recorded lengths.

        A ``stat`` per file, cheap enough for every listing; :func:`load_result` also checks the sha256.
        """
        from ._atomic import check_digest

        for name, digest in sorted((self.meta.get("files") or {}).items()):
            if isinstance(digest, dict) and (reason := check_digest(self.path / name, digest, full=False)):
                return str(_damaged(self.path, name, reason))
        return None


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def load_run(path: str | Path, *, live_pids: set[int] | None = None) -> RunRecord:
    """Read ``run.json``; a ``running`` run whose process is gone becomes ``interrupted``.

    ``live_pids``: pids known to still run this run (default: the recorded pid is checked with ``kill 0``;
    a run recorded by this same process but not in the caller's live jobs should be passed explicitly).
    """
    path = Path(path)
    meta = json.loads((path / "run.json").read_text())
    if not isinstance(meta, dict):
        raise ValueError(f"{path / 'run.json'} is not a JSON object")
    record = RunRecord(path, meta)
    if meta.get("files") and meta.get("status") in ("completed", "cancelled") and (problem := record.problem()):
        # shown as a failed run with the reason (which file, what to do), never as a result
        meta.update(status="failed", error=problem, damaged=True)
        logger.warning("%s", problem)
    if meta.get("status") in ("running", "queued"):
        pid = meta.get("pid")
        alive = (pid in live_pids) if live_pids is not None else (_pid_alive(pid) and meta.get("host") == socket.gethostname())
        if not alive:
            meta["status"] = "interrupted"
    return record


def list_runs(root: str | Path | None = None, **kw) -> list[RunRecord]:
    """All run records under ``root``, newest first; unreadable directories are skipped with a log line."""
    root = Path(root or default_root())
    out = []
    if not root.exists():
        return out
    for d in sorted(root.iterdir(), reverse=True):
        if (d / "run.json").exists():
            try:
                out.append(load_run(d, **kw))
            except (OSError, ValueError) as exc:
                logger.warning("Skipping unreadable run %s: %s", d, exc)
    return out


def load_result(path: str | Path) -> MethodResult:
    """Rebuild a :class:`MethodResult` from a finished run directory (plain files, no pickle).

    Every file is checked first against its recorded length and sha256, and the labels against the embedding
    (so a run written before checksums were recorded is checked too): a damaged file raises
    :class:`RunFileError` naming it, instead of a result with missing cells.
    """
    path = Path(path)
    info = _read_result_info(path)
    for name, digest in sorted((info.get("files") or {}).items()):
        if isinstance(digest, dict) and (reason := _check(path / name, digest)):
            raise _damaged(path, name, reason)
    labels_df, embedding = _read_labels_embedding(path, info)
    history = _read_history(path)
    snapshots, snap_index = _read_snapshots(path)
    return MethodResult(
        method=info["method"], embedding=embedding, labels=labels_df["label"].to_numpy(np.int64),
        cell_index=labels_df["cell_index"].to_numpy(np.int64), n_input_cells=int(info["n_input_cells"]),
        history=history, snapshots=snapshots, snapshot_index=snap_index, config=info["config"],
        metrics={k: (float("nan") if v is None else v) for k, v in info["metrics"].items()}, status=info["status"],
        device=info["device"], seconds=float(info["seconds"]), started_at=info["started_at"],
        finished_at=info["finished_at"], label_key=info.get("label_key"), extras=info.get("extras", {}),
    )


def _check(path: Path, digest: dict) -> str | None:
    from ._atomic import check_digest

    return check_digest(path, digest)


def _read_result_info(path: Path) -> dict[str, Any]:
    """``result.json``, with the recorded ``files`` of both it and ``run.json`` (either may be missing)."""
    recorded: dict[str, Any] = {}
    try:
        recorded = (json.loads((path / "run.json").read_text()).get("files") or {})
    except (OSError, ValueError, AttributeError):
        pass  # no run record (a bare save_result directory): result.json's own list is used
    recorded = recorded if isinstance(recorded, dict) else {}
    try:
        info = json.loads((path / "result.json").read_text())
        info["n_input_cells"] = int(info["n_input_cells"])
    except FileNotFoundError:
        raise _damaged(path, "result.json", "it is missing") from None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise _damaged(path, "result.json", f"unreadable: {exc}") from None
    own = info.get("files") if isinstance(info.get("files"), dict) else {}
    info["files"] = {**own, **{k: v for k, v in recorded.items() if k in RESULT_FILES}}
    return info


def _read_labels_embedding(path: Path, info: dict[str, Any]):
    """labels.csv and embedding.npy, checked against each other (one label per embedded cell, no gap)."""
    import pandas as pd

    try:
        embedding = np.load(path / "embedding.npy", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise _damaged(path, "embedding.npy", f"unreadable: {exc}") from None
    try:
        labels_df = pd.read_csv(path / "labels.csv")
        cells, labels = labels_df["cell_index"], labels_df["label"]
    except (OSError, ValueError, KeyError, pd.errors.ParserError) as exc:
        raise _damaged(path, "labels.csv", f"unreadable: {exc}") from None
    n = int(info["n_input_cells"])
    if len(labels_df) != len(embedding):
        raise _damaged(path, "labels.csv", f"{len(labels_df):,} labels for {len(embedding):,} embedded cells")
    if cells.isna().any() or labels.isna().any() or len(labels_df) and not (
            cells.between(0, n - 1).all() and cells.is_unique):
        raise _damaged(path, "labels.csv", "missing or out-of-range values")
    return labels_df, embedding


def _read_history(path: Path) -> list[EpochLog]:
    import pandas as pd

    history: list[EpochLog] = []
    if not (path / "history.csv").exists():
        return history
    try:
        hist = pd.read_csv(path / "history.csv")
        for _, r in hist.iterrows():
            losses = {c[5:]: float(r[c]) for c in hist.columns if c.startswith("loss_") and pd.notna(r[c])}
            mets = {c[7:]: float(r[c]) for c in hist.columns if c.startswith("metric_") and pd.notna(r[c])}
            history.append(EpochLog(int(r["epoch"]), str(r["phase"]), losses, mets, float(r["seconds"]),
                                    float(r["elapsed"]), int(r["total_epochs"])))
    except (OSError, ValueError, KeyError, pd.errors.ParserError) as exc:
        raise _damaged(path, "history.csv", f"unreadable: {exc}") from None
    return history


def _read_snapshots(path: Path) -> tuple[list[Snapshot], np.ndarray]:
    import zipfile

    snapshots: list[Snapshot] = []
    snap_index = np.zeros(0, dtype=np.int64)
    if not (path / "snapshots.npz").exists():
        return snapshots, snap_index
    try:
        with np.load(path / "snapshots.npz", allow_pickle=False) as z:
            snap_index = z["index"]
            snapshots = [Snapshot(int(e), str(p), xy, lab)
                         for e, p, xy, lab in zip(z["epochs"], z["phases"], z["xy"], z["labels"])]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise _damaged(path, "snapshots.npz", f"unreadable: {exc}") from None
    return snapshots, snap_index
