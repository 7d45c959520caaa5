"""Per-user workspace on disk: the current dataset, the user's choices and the run records.

A workspace is a directory ``<root>/<ws_id>/`` where ``root`` is ``$SCCLUST_WORKSPACES`` (default
``./scclust_workspaces``) and ``ws_id`` is a random 128-bit token the app keeps in the page URL (``?ws=...``), so
a browser refresh or a server restart reopens the same workspace while another browser session gets its own.
The id is the only credential: it is unguessable, matched in full, and an id that names no existing workspace
(typed, guessed or expired) is never adopted: the visitor gets a fresh random one::

    dataset.h5ad            the current dataset (as uploaded, or after QC filtering)
    dataset_original.h5ad   the dataset before QC filtering (kept so filtering can be undone)
    state.json              dataset name/fingerprint, reference annotation, confirmed sample/batch key,
                            cluster renames/merges per run,
                            and the user's choices per dataset fingerprint (re-uploading a file restores them)
    runs/<run_id>/          run records written by :class:`scclust_core.runs.RunRecorder`
    cache/                  derived data (UMAP/t-SNE/PCA coordinates, marker tables); safe to delete. Only
                            :meth:`Workspace.write_cache` / :meth:`Workspace.read_cache` touch it: each file has a
                            ``<name>.check.json`` sidecar (length + sha256), and a file that does not match it (cut
                            short by a full disk, an older version's non-atomic write) is dropped and recomputed

Nothing is lost: every write is atomic (unique temporary file + ``os.replace``), mutations hold a per-workspace
lock (a thread lock plus ``fcntl.flock``, so two sessions or two server processes never interleave), and a new
dataset replaces the old one only once it is completely written (a full disk leaves the previous dataset, state
and runs as they were). Growth is bounded: the directory is created on the first write (not per page view),
runs can be deleted, idle workspaces are swept after ``$SCCLUST_WORKSPACE_TTL_HOURS`` (default 720; 0 = never)
and a workspace may hold at most ``$SCCLUST_WORKSPACE_QUOTA_MB`` (default 5000; 0 = no limit).

A full disk is a :class:`~scclust_core._atomic.DiskFullError` (a ``ValueError`` saying how much room there is),
checked before large writes; the dataset's HDF5 file is written by a child process (:func:`scclust_core.io.write`)
so a crash of h5py cannot take the server down. An unreadable ``state.json`` is reported by :attr:`Workspace.problems`
(the pages show it) and kept aside when the state is next changed.

Nothing here imports Streamlit; the UI calls these functions and tests use them directly.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pandas as pd
from anndata import AnnData

from ._atomic import (atomic_path, atomic_write_bytes, atomic_write_text, bytes_digest, check_free_space,
                      disk_errors, is_disk_full)

try:  # POSIX: a lock other processes (a second server worker) respect too
    import fcntl
except ImportError:  # pragma: no cover - Windows: the thread lock still serialises this process
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

__all__ = ["Workspace", "WorkspaceQuotaError", "default_root", "new_workspace_id", "valid_workspace_id",
           "apply_edits", "sweep_idle", "quota_bytes", "idle_seconds"]

#: 32 lowercase hex digits = 128 random bits (``secrets.token_hex(16)``), matched in full
_ID_RE = re.compile(r"[0-9a-f]{32}")
#: ids of earlier versions (8-40 lowercase letters/digits); only the sweeper recognises them, to clean up
_LEGACY_ID_RE = re.compile(r"[a-z0-9]{8,40}")
_MAX_CHOICES = 50  # datasets whose choices are remembered per workspace
#: a cache file name: one path component of letters, digits, ``_ - .`` (never a sidecar's name)
_CACHE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,200}")
_CHECK_SUFFIX = ".check.json"
CACHE_KINDS = ("json", "csv", "npy", "text", "bytes")


class WorkspaceQuotaError(ValueError):
    """The workspace would grow past its disk quota (the message says how much and what to delete)."""


def default_root() -> Path:
    """``$SCCLUST_WORKSPACES`` if set, else ``./scclust_workspaces``."""
    return Path(os.environ.get("SCCLUST_WORKSPACES", "scclust_workspaces"))


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {raw!r}")
    return value


def quota_bytes() -> int | None:
    """Disk quota per workspace from ``$SCCLUST_WORKSPACE_QUOTA_MB`` (default 5000 MB; 0 = no quota)."""
    mb = _env_number("SCCLUST_WORKSPACE_QUOTA_MB", 5000.0)
    return None if mb == 0 else int(mb * 2**20)


def idle_seconds() -> float | None:
    """Idle time after which a workspace is swept, from ``$SCCLUST_WORKSPACE_TTL_HOURS`` (default 720; 0 = never)."""
    hours = _env_number("SCCLUST_WORKSPACE_TTL_HOURS", 720.0)
    return None if hours == 0 else hours * 3600.0


def new_workspace_id() -> str:
    """128 random bits as 32 hex digits: the id is the workspace's only credential."""
    return secrets.token_hex(16)


def valid_workspace_id(ws_id: Any) -> bool:
    """True for ids of the form :func:`new_workspace_id` makes (full match: no prefix or suffix gets through)."""
    return isinstance(ws_id, str) and _ID_RE.fullmatch(ws_id) is not None


def _write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str))


def _dir_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def _fmt_mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB" if n < 10 * 2**30 else f"{n / 2**30:,.1f} GB"


class _DirLock:
    """Re-entrant lock for one workspace directory: a thread lock, and ``flock`` on ``.lock`` while held."""

    def __init__(self) -> None:
        self.rlock = threading.RLock()
        self.depth = 0
        self.fd: int | None = None

    @contextlib.contextmanager
    def hold(self, lock_file: Path, *, blocking: bool = True) -> Iterator[bool]:
        if not self.rlock.acquire(blocking=blocking):
            yield False
            return
        try:
            if self.depth == 0 and not self._flock(lock_file, blocking):
                yield False
                return
            self.depth += 1
            try:
                yield True
            finally:
                self.depth -= 1
                if self.depth == 0 and self.fd is not None:
                    if fcntl is not None:
                        fcntl.flock(self.fd, fcntl.LOCK_UN)
                    os.close(self.fd)
                    self.fd = None
        finally:
            self.rlock.release()

    def _flock(self, lock_file: Path, blocking: bool) -> bool:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return False
        self.fd = fd
        return True


_LOCKS: dict[str, _DirLock] = {}
_LOCKS_GUARD = threading.Lock()


def _reset_locks_in_child() -> None:
    """A forked child starts with no lock held (a thread of the parent may have held one at fork time)."""
    global _LOCKS_GUARD
    _LOCKS.clear()
    _LOCKS_GUARD = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_locks_in_child)


def _dir_lock(directory: Path) -> _DirLock:
    key = os.path.abspath(directory)
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, _DirLock())


def apply_edits(labels: pd.Series | np.ndarray, edits: dict[str, str] | None) -> pd.Series:
    """Cluster labels (strings, missing = NaN) with renames/merges applied, as an ordered categorical.

    ``edits`` maps an original cluster name to a new one; two clusters mapped to the same name are merged.
    Categories keep the order of the original clusters (first occurrence of each new name).
    """
    s = pd.Series(labels)
    if isinstance(s.dtype, pd.CategoricalDtype):
        cats = [str(c) for c in s.cat.categories]
        s = s.astype(object)
    else:
        cats = None
    s = s.map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    if cats is None:
        present = [v for v in pd.unique(s) if v is not None]
        try:
            cats = sorted(present, key=lambda v: (0, int(v)) if v.lstrip("-").isdigit() else (1, v))
        except AttributeError:  # pragma: no cover
            cats = sorted(present)
    edits = {str(k): str(v).strip() for k, v in (edits or {}).items() if str(v).strip()}
    new_cats = list(dict.fromkeys(edits.get(c, c) for c in cats))
    out = s.map(lambda v: None if v is None else edits.get(v, v))
    return pd.Series(pd.Categorical(out, categories=new_cats), index=s.index)


class Workspace:
    """One user's workspace directory (see the module docstring). Creating the object writes nothing."""

    def __init__(self, ws_id: str, root: str | Path | None = None):
        if not valid_workspace_id(ws_id):
            raise ValueError(f"Invalid workspace id {ws_id!r}: expected 32 lowercase hex digits")
        self.id = ws_id
        self.root = Path(root) if root is not None else default_root()
        self.dir = self.root / ws_id

    @classmethod
    def create(cls, root: str | Path | None = None) -> "Workspace":
        """A new workspace with a fresh random id (its directory appears with the first write)."""
        return cls(new_workspace_id(), root)

    @classmethod
    def open(cls, ws_id: str | None = None, root: str | Path | None = None) -> "Workspace":
        """The existing workspace ``ws_id``; for None, a malformed id or one that names no workspace on disk, a
        new one with a random id (a caller can never choose its own id)."""
        if valid_workspace_id(ws_id):
            ws = cls(ws_id, root)  # type: ignore[arg-type]
            if ws.exists():
                ws.touch()
                return ws
            logger.info("Workspace id from the URL names no workspace (expired or never created): new workspace")
        return cls.create(root)

    def exists(self) -> bool:
        return self.dir.is_dir()

    def touch(self) -> None:
        """Mark the workspace as in use (the idle sweeper looks at this time)."""
        if self.exists():
            with contextlib.suppress(OSError):
                (self.dir / ".active").touch()

    def _ensure(self) -> None:
        for d in (self.runs_dir, self.dir / "cache"):
            d.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold this workspace's lock (threads of this process and other processes); re-entrant."""
        self._ensure()
        with _dir_lock(self.dir).hold(self.dir / ".lock"):
            yield

    # ------------------------------------------------------------------ paths
    @property
    def runs_dir(self) -> Path:
        return self.dir / "runs"

    @property
    def cache_dir(self) -> Path:
        """Derived data; created here only when the workspace itself exists (never by a read)."""
        d = self.dir / "cache"
        if self.exists():
            d.mkdir(exist_ok=True)
        return d

    @property
    def dataset_path(self) -> Path:
        return self.dir / "dataset.h5ad"

    @property
    def original_path(self) -> Path:
        return self.dir / "dataset_original.h5ad"

    @property
    def state_path(self) -> Path:
        return self.dir / "state.json"

    # ------------------------------------------------------------------ cache (derived data: safe to lose)
    def cache_file(self, name: str) -> Path:
        """Where cache ``name`` lives (one path component); read and write it with :meth:`read_cache` /
        :meth:`write_cache` only, so every cache file is atomic, checked and cleaned up with its run."""
        if not isinstance(name, str) or not _CACHE_NAME_RE.fullmatch(name) or name.endswith(_CHECK_SUFFIX):
            raise ValueError(f"Invalid cache name {name!r}: expected letters, digits, '_', '-' or '.'")
        return self.dir / "cache" / name

    def write_cache(self, name: str, obj: Any) -> Path | None:
        """Keep ``obj`` (DataFrame → CSV, ndarray → .npy, dict/list → JSON, str, bytes) as cache ``name``:
        atomically, with a sidecar holding its length and sha256. Returns the path, or None when it could not be
        kept (full disk, I/O error: logged; the caller still has ``obj``, it is only recomputed next time).

        Cache names of a run start with ``<run_id>_`` (deleted with the run).
        """
        data = _encode_cache(obj)
        path = self.cache_file(name)
        try:
            with self.lock():
                atomic_write_bytes(path, data)
                _write_json(_check_path(path), {**bytes_digest(data),
                                                "written_at": datetime.now(timezone.utc).isoformat()})
        except OSError as exc:
            level = logging.WARNING if is_disk_full(exc) else logging.ERROR
            logger.log(level, "Could not keep the cache %s (%s): it will be recomputed when needed", name, exc)
            _unlink_cache(path)
            return None
        return path

    def read_cache(self, name: str, kind: str, **options: Any) -> Any:
        """Cache ``name`` read as ``kind`` (``json``, ``csv`` with ``pandas.read_csv`` ``options``, ``npy``,
        ``text``, ``bytes``), or None when there is none. A file that does not match its sidecar (cut short by a
        full disk, changed, written by an older version) or cannot be parsed is dropped with a log line, so the
        caller recomputes it: a partial cache is never served."""
        if kind not in CACHE_KINDS:
            raise ValueError(f"Unknown cache kind {kind!r}: expected one of {', '.join(CACHE_KINDS)}")
        path = self.cache_file(name)
        try:
            data = path.read_bytes()  # read once, checked and parsed from memory (no file swap in between)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return self._drop_cache(path, f"unreadable: {exc}", None)
        problem = _cache_problem(path, data)
        if problem is None:
            try:
                return _decode_cache(data, kind, options)
            except (ValueError, OSError, EOFError, KeyError, UnicodeDecodeError) as exc:
                problem = f"cannot be read as {kind}: {exc}"
        return self._drop_cache(path, problem, data)

    def _drop_cache(self, path: Path, reason: str, seen: bytes | None) -> None:
        """Remove a bad cache file (``seen``: the bytes found bad) and its sidecar, unless a writer (holding the
        lock) replaced it with a good one since we read it."""
        with self.lock():
            with contextlib.suppress(OSError):
                now = path.read_bytes()
                if now != seen and _cache_problem(path, now) is None:
                    return None  # just replaced by a good one: kept; the caller recomputes this once
            _unlink_cache(path)
        logger.warning("Dropped the cache %s (%s): it is recomputed", path.name, reason)
        return None

    # ------------------------------------------------------------------ state
    def load_state(self) -> dict[str, Any]:
        """The state (``{}`` when there is none or it cannot be read; a mutation then keeps the unreadable file)."""
        try:
            return self._read_state()
        except ValueError as exc:
            logger.warning("%s", exc)
            return {}

    def _read_state(self) -> dict[str, Any]:
        if not self.state_path.exists():
            return {}
        try:
            data = json.loads(self.state_path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"Unreadable workspace state {self.state_path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"Unreadable workspace state {self.state_path}: not a JSON object")
        return data

    def _state_for_update(self) -> dict[str, Any]:
        """The state to modify (call under the lock). An unreadable file is moved aside, never overwritten, and
        the new state remembers it (:attr:`problems` keeps telling the user until they dismiss it)."""
        try:
            return self._read_state()
        except ValueError as exc:
            aside = self.state_path.with_name(f"state.unreadable-{int(time.time())}.json")
            os.replace(self.state_path, aside)
            logger.warning("%s; kept as %s, starting from an empty state", exc, aside.name)
            return {"state_recovered": {"kept_as": aside.name, "error": str(exc).split(f"{self.state_path}: ", 1)[-1],
                                        "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}}

    @property
    def state_warning(self) -> str | None:
        """What the user must know about the workspace state: it is unreadable now (the reference annotation and
        cluster renames are not applied), or it was and was started afresh. None when all is well."""
        try:
            state = self._read_state()
        except ValueError as exc:
            return (f"This workspace's saved state (state.json) is damaged and cannot be read "
                    f"({str(exc).split(f'{self.state_path}: ', 1)[-1]}): your reference annotation and cluster renames are not "
                    "applied. Set them again; the damaged file is kept (as state.unreadable-<time>.json) when you "
                    "do, so an administrator can recover it.")
        rec = state.get("state_recovered")
        if not isinstance(rec, dict):
            return None
        return (f"This workspace's saved state was damaged ({rec.get('error', 'unreadable')}) and was started "
                f"afresh on {rec.get('at', '?')}: the reference annotation and cluster renames set before then are "
                f"lost; set them again. The damaged file is kept as {rec.get('kept_as', 'state.unreadable-*.json')} "
                "in the workspace folder.")

    @property
    def problems(self) -> list[str]:
        """Messages the pages show (``st.warning``) so that nothing is lost silently."""
        warning = self.state_warning
        return [warning] if warning else []

    def dismiss_state_warning(self) -> None:
        """The user has read :attr:`state_warning` about a state started afresh: stop showing it."""
        with self.lock():
            state = self._state_for_update()
            if state.pop("state_recovered", None) is not None:  # an unreadable file is moved aside first
                _write_json(self.state_path, state)

    def save_state(self, state: dict[str, Any]) -> None:
        with self.lock():
            _write_json(self.state_path, state)

    def update_state(self, **changes: Any) -> dict[str, Any]:
        with self.lock():
            state = self._state_for_update()
            state.update(changes)
            _write_json(self.state_path, state)
            return state

    # ------------------------------------------------------------------ quota
    def usage_bytes(self) -> int:
        return _dir_bytes(self.dir) if self.exists() else 0

    def check_quota(self, extra_bytes: int = 0, *, what: str = "This") -> None:
        """Raise :class:`WorkspaceQuotaError` when the workspace plus ``extra_bytes`` exceeds the quota."""
        quota = quota_bytes()
        if quota is None:
            return
        used = self.usage_bytes()
        if used + extra_bytes > quota:
            raise WorkspaceQuotaError(
                f"{what} would bring this workspace to {_fmt_mb(used + extra_bytes)}, over its quota of "
                f"{_fmt_mb(quota)} (now {_fmt_mb(used)}). Delete runs you no longer need (Cluster page), or ask "
                "the administrator to raise SCCLUST_WORKSPACE_QUOTA_MB.")

    # ------------------------------------------------------------------ dataset
    def has_dataset(self) -> bool:
        return self.dataset_path.exists()

    def set_dataset(self, adata: AnnData, name: str, *, filtered_from_original: bool = False,
                    filter_params: dict | None = None) -> dict[str, Any]:
        """Store ``adata`` as the current dataset; returns the new state.

        All or nothing: the new file and state are written to temporary files first and replace the old ones
        only when complete, so a failed write (disk full, quota) leaves the previous dataset, state and runs as
        they were. A new upload restores the choices made earlier for the same data (same fingerprint), else
        clears them; QC filtering keeps the pre-filter copy and the current choices. A full disk (checked first
        against the estimated size) is a :class:`~scclust_core._atomic.DiskFullError`, a ``ValueError``; the
        HDF5 file is written by a child process, so h5py failing cannot crash this one.
        """
        from .io import dataset_fingerprint, write
        from .io.write import estimate_h5ad_bytes

        fp = dataset_fingerprint(adata)
        needed = estimate_h5ad_bytes(adata)
        with disk_errors(self.dataset_path, needed), self.lock(), contextlib.ExitStack() as stack:
            state = self._state_for_update()
            old_bytes = self._file_bytes(self.dataset_path)
            check_free_space(self.dataset_path, needed)
            state_tmp = stack.enter_context(atomic_path(self.state_path))
            data_tmp = stack.enter_context(atomic_path(self.dataset_path))
            write(adata, data_tmp)
            added = data_tmp.stat().st_size - old_bytes
            if filtered_from_original and not self.original_path.exists() and self.has_dataset():
                orig_tmp = stack.enter_context(atomic_path(self.original_path, needed=old_bytes))
                shutil.copyfile(self.dataset_path, orig_tmp)
                added += old_bytes
            elif not filtered_from_original:
                added -= self._file_bytes(self.original_path)
            self.check_quota(max(added, 0), what="This dataset")
            state = self._dataset_state(state, adata, name, fp, filtered_from_original, filter_params)
            state_tmp.write_text(json.dumps(state, indent=2, default=str))
        # the new dataset and state are in place: the pre-filter copy of an earlier upload no longer applies
        if not filtered_from_original and self.original_path.exists():
            with contextlib.suppress(OSError):
                self.original_path.unlink()
        return state

    @staticmethod
    def _file_bytes(path: Path) -> int:
        try:
            return path.stat().st_size
        except OSError:
            return 0

    def _dataset_state(self, state: dict[str, Any], adata: AnnData, name: str, fp: dict, filtered: bool,
                       filter_params: dict | None) -> dict[str, Any]:
        """The state after a new dataset: the reference kept (filtering) or restored from this data's choices."""
        kept = state if filtered else ((state.get("choices") or {}).get(fp.get("sha256")) or {})
        reference, batch_key = kept.get("reference"), kept.get("batch_key")
        if reference is not None and reference not in adata.obs:
            reference = None
        if batch_key is not None and batch_key not in adata.obs:
            batch_key = None
        state.update(dataset_name=name, fingerprint=fp, n_cells=int(adata.n_obs), n_genes=int(adata.n_vars),
                     reference=reference, batch_key=batch_key, filter=filter_params if filtered else None,
                     loaded_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        if not filtered:
            state["original_name"] = name
        _remember_choice(state, reference=reference, **({"batch_key": batch_key} if batch_key else {}))
        return state

    def update_dataset(self, adata: AnnData) -> None:
        """Write ``adata`` over the current dataset when it holds the same cells and genes (same fingerprint) with
        new annotations, e.g. doublet flags: the state, the runs and the pre-filter copy are kept as they are."""
        from .io import dataset_fingerprint, write
        from .io.write import estimate_h5ad_bytes

        sha = dataset_fingerprint(adata).get("sha256")
        needed = estimate_h5ad_bytes(adata)
        with disk_errors(self.dataset_path, needed), self.lock():
            if not self.has_dataset() or sha != self.fingerprint:
                raise ValueError("Only annotations of the current dataset can be updated (same cells, genes and "
                                 "values); a different dataset is stored with set_dataset")
            old_bytes = self._file_bytes(self.dataset_path)
            with atomic_path(self.dataset_path, needed=needed) as tmp:
                write(adata, tmp)
                self.check_quota(max(tmp.stat().st_size - old_bytes, 0), what="The updated dataset")

    def load_dataset(self) -> AnnData | None:
        if not self.has_dataset():
            return None
        import anndata

        return anndata.read_h5ad(self.dataset_path)

    def undo_filter(self) -> bool:
        """Go back to the dataset before QC filtering; False when there was no filtering."""
        import anndata

        from .io import dataset_fingerprint

        with self.lock():
            if not self.original_path.exists():
                return False
            adata = anndata.read_h5ad(self.original_path)
            state = self._state_for_update()
            ref, batch = state.get("reference"), state.get("batch_key")
            state.update(dataset_name=state.get("original_name", "dataset"), fingerprint=dataset_fingerprint(adata),
                         n_cells=int(adata.n_obs), n_genes=int(adata.n_vars), filter=None,
                         reference=ref if ref in adata.obs else None, batch_key=batch if batch in adata.obs else None)
            _remember_choice(state, reference=state["reference"],
                             **({"batch_key": state["batch_key"]} if state["batch_key"] else {}))
            with atomic_path(self.state_path) as state_tmp:
                state_tmp.write_text(json.dumps(state, indent=2, default=str))
                os.replace(self.original_path, self.dataset_path)  # a rename: needs no free space
        return True

    @property
    def fingerprint(self) -> str | None:
        fp = self.load_state().get("fingerprint") or {}
        return fp.get("sha256")

    # ------------------------------------------------------------------ reference annotation (a choice per data)
    def reference(self) -> str | None:
        return self.load_state().get("reference")

    def set_reference(self, column: str | None) -> None:
        """Set the reference annotation, remembered for this dataset's fingerprint (a re-upload restores it)."""
        with self.lock():
            state = self._state_for_update()
            state["reference"] = column or None
            _remember_choice(state, reference=column or None)
            _write_json(self.state_path, state)

    # ------------------------------------------------------------------ sample / batch key (a choice per data)
    @property
    def batch_key(self) -> str | None:
        """The obs column the user confirmed as each cell's sample/batch (None: one sample)."""
        return self.load_state().get("batch_key")

    def set_batch_key(self, column: str | None) -> None:
        """Set (or clear) the confirmed sample/batch key, remembered for this dataset like the reference."""
        with self.lock():
            state = self._state_for_update()
            state["batch_key"] = column or None
            _remember_choice(state, batch_key=column or None)
            _write_json(self.state_path, state)

    def choices(self) -> dict[str, Any]:
        """The user's choices remembered for the current dataset (e.g. ``{"reference": "cell_type"}``)."""
        state = self.load_state()
        return dict((state.get("choices") or {}).get((state.get("fingerprint") or {}).get("sha256"), {}))

    # ------------------------------------------------------------------ edits (renames / merges)
    def edits(self, run_id: str) -> dict[str, str]:
        return dict((self.load_state().get("edits") or {}).get(run_id, {}))

    def set_edits(self, run_id: str, mapping: dict[str, str]) -> None:
        with self.lock():
            state = self._state_for_update()
            all_edits = state.get("edits") or {}
            clean = {str(k): str(v).strip() for k, v in mapping.items()
                     if str(v).strip() and str(v).strip() != str(k)}
            if clean:
                all_edits[run_id] = clean
            else:
                all_edits.pop(run_id, None)
            state["edits"] = all_edits
            _write_json(self.state_path, state)

    # ------------------------------------------------------------------ runs
    def list_runs(self, *, active_ids: set[str] | None = None, this_dataset: bool = True) -> list:
        """Run records, newest first. A ``running``/``queued`` run not in ``active_ids`` is ``interrupted``.

        ``this_dataset``: only runs made on the current dataset (same fingerprint).
        """
        from .runs import list_runs

        records = list_runs(self.runs_dir)
        active = active_ids or set()
        fp = self.fingerprint
        out = []
        for r in records:
            if r.status in ("running", "queued") and r.run_id not in active:
                r.meta["status"] = "interrupted"
            if this_dataset and fp is not None and (r.meta.get("dataset") or {}).get("sha256") != fp:
                continue
            out.append(r)
        return out

    def run_dir(self, run_id: str) -> Path:
        from .runs import validate_run_id

        return self.runs_dir / validate_run_id(run_id)

    def run_labels(self, run_id: str, n_cells: int, *, edited: bool = True) -> pd.Series:
        """Labels of a finished run for every cell of the current dataset (NaN for cells the run dropped)."""
        from .runs import load_result

        res = load_result(self.run_dir(run_id))
        if res.n_input_cells != n_cells:
            raise ValueError(f"Run {run_id} was made on {res.n_input_cells} cells, the current data has {n_cells}")
        full = res.full_labels()
        values = np.array([str(v) for v in full], dtype=object)
        values[full < 0] = None
        cats = [str(v) for v in range(res.n_clusters)]
        names = res.extras.get("label_names")  # a derived clustering (scclust_core.derived): "3.0", "3.1", …
        if isinstance(names, list) and names and len(names) > int(full.max(initial=-1)):
            cats = [str(n) for n in names]
            values = np.array([cats[v] if v >= 0 else None for v in full], dtype=object)
        s = pd.Series(pd.Categorical(values, categories=cats))
        return apply_edits(s, self.edits(run_id)) if edited else s

    def delete_run(self, run_id: str, *, active_ids: Iterable[str] = ()) -> None:
        """Delete a run's record, edits and cached views; a run still training must be cancelled first."""
        d = self.run_dir(run_id)
        if run_id in set(active_ids):
            raise ValueError(f"Run {run_id} is still training or queued: cancel it before deleting it")
        with self.lock():
            if d.exists():
                shutil.rmtree(d)
            state = self._state_for_update()
            if run_id in (state.get("edits") or {}):
                state["edits"].pop(run_id)
                _write_json(self.state_path, state)
            for f in self.cache_dir.glob(f"{run_id}_*"):
                f.unlink()


def _check_path(path: Path) -> Path:
    return path.with_name(path.name + _CHECK_SUFFIX)


def _unlink_cache(path: Path) -> None:
    for p in (path, _check_path(path)):
        with contextlib.suppress(OSError):
            p.unlink()


def _cache_problem(path: Path, data: bytes) -> str | None:
    """What is wrong with cache ``data`` (read from ``path``) compared with its sidecar, or None."""
    try:
        check = json.loads(_check_path(path).read_text())
    except FileNotFoundError:
        return "no check file: written by an older version, or cut short"
    except (OSError, ValueError) as exc:
        return f"unreadable check file: {exc}"
    if not isinstance(check, dict):
        return "unreadable check file"
    got = bytes_digest(data)
    if check.get("size") != got["size"]:
        return f"{got['size']:,} bytes, {check.get('size')} were written"
    if check.get("sha256") != got["sha256"]:
        return "its content changed (checksum differs)"
    return None


def _encode_cache(obj: Any) -> bytes:
    """The bytes of a cache value: DataFrame → CSV, ndarray → .npy (no pickle), str, bytes, JSON otherwise."""
    import io

    if isinstance(obj, pd.DataFrame):
        return obj.to_csv(index=False).encode("utf-8")
    if isinstance(obj, np.ndarray):
        buf = io.BytesIO()
        np.save(buf, obj, allow_pickle=False)
        return buf.getvalue()
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj)
    if isinstance(obj, str):
        return obj.encode("utf-8")
    return json.dumps(obj, default=str).encode("utf-8")


def _decode_cache(data: bytes, kind: str, options: dict[str, Any]) -> Any:
    import io

    if kind == "csv":
        return pd.read_csv(io.BytesIO(data), **options)
    if kind == "npy":
        return np.load(io.BytesIO(data), allow_pickle=False)
    if kind == "json":
        return json.loads(data.decode("utf-8"))
    return data.decode("utf-8") if kind == "text" else data


def _remember_choice(state: dict[str, Any], **choice: Any) -> None:
    """Store ``choice`` under the state's current fingerprint (at most ``_MAX_CHOICES`` datasets, newest kept)."""
    sha = (state.get("fingerprint") or {}).get("sha256")
    if not sha:
        return
    choices = state.get("choices") or {}
    entry = choices.pop(sha, {})  # re-inserted last: the most recently used dataset
    entry.update(choice)
    choices[sha] = entry
    while len(choices) > _MAX_CHOICES:
        choices.pop(next(iter(choices)))
    state["choices"] = choices


def _last_active(directory: Path) -> float:
    """Newest modification time among the files that change when a workspace is used or a run trains."""
    times = [0.0]
    for p in (directory, directory / ".active", directory / "state.json"):
        with contextlib.suppress(OSError):
            times.append(p.stat().st_mtime)
    runs = directory / "runs"
    if runs.is_dir():
        for run in runs.iterdir():
            with contextlib.suppress(OSError):
                times.append((run / "run.json").stat().st_mtime)
    return max(times)


def sweep_idle(root: str | Path | None = None, *, max_idle_s: float | None = None,
               keep: Iterable[str] = (), now: float | None = None) -> list[str]:
    """Delete workspaces unused for ``max_idle_s`` seconds (default :func:`idle_seconds`); returns their ids.

    Workspaces in ``keep`` (e.g. with a training job) and workspaces locked by someone else are left alone.
    Only directories that look like workspaces (an id-shaped name holding ``runs/`` or ``state.json``) are
    touched, so a misconfigured root cannot lose unrelated files.
    """
    root = Path(root) if root is not None else default_root()
    limit = idle_seconds() if max_idle_s is None else max_idle_s
    if limit is None or not root.is_dir():
        return []
    now = time.time() if now is None else now
    keep = set(keep)
    removed = []
    for d in root.iterdir():
        name = d.name
        if name in keep or not d.is_dir() or not (_ID_RE.fullmatch(name) or _LEGACY_ID_RE.fullmatch(name)):
            continue
        if not ((d / "runs").is_dir() or (d / "state.json").exists()) or now - _last_active(d) < limit:
            continue
        with _dir_lock(d).hold(d / ".lock", blocking=False) as got:
            if not got:
                continue
            shutil.rmtree(d, ignore_errors=True)
        with _LOCKS_GUARD:
            _LOCKS.pop(os.path.abspath(d), None)
        removed.append(name)
        logger.info("Swept workspace %s (idle for more than %.0f hours)", name, limit / 3600)
    return removed
