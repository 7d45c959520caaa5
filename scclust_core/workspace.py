"""Per-user workspace on disk: the current dataset, the user's edits and the run records.

A workspace is a directory ``<root>/<ws_id>/`` where ``root`` is ``$SCCLUST_WORKSPACES`` (default
``./scclust_workspaces``) and ``ws_id`` is a random token the app keeps in the page URL (``?ws=...``), so a
browser refresh or a server restart reopens the same workspace while another browser session gets its own::

    dataset.h5ad            the current dataset (as uploaded, or after QC filtering)
    dataset_original.h5ad   the dataset before QC filtering (kept so filtering can be undone)
    state.json              dataset name/fingerprint, reference annotation, cluster renames/merges per run
    runs/<run_id>/          run records written by :class:`scclust_core.runs.RunRecorder`
    cache/                  derived data (UMAP/t-SNE/PCA coordinates, marker tables); safe to delete

Nothing here imports Streamlit; the UI calls these functions and tests use them directly.
"""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

logger = logging.getLogger(__name__)

__all__ = ["Workspace", "default_root", "new_workspace_id", "valid_workspace_id", "apply_edits"]

_ID_RE = re.compile(r"^[a-z0-9]{8,40}$")


def default_root() -> Path:
    """``$SCCLUST_WORKSPACES`` if set, else ``./scclust_workspaces``."""
    return Path(os.environ.get("SCCLUST_WORKSPACES", "scclust_workspaces"))


def new_workspace_id() -> str:
    return secrets.token_hex(8)


def valid_workspace_id(ws_id: Any) -> bool:
    """Only short lowercase tokens: an id from the URL must never be able to point outside the root."""
    return isinstance(ws_id, str) and bool(_ID_RE.match(ws_id))


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


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
    """One user's workspace directory (see the module docstring)."""

    def __init__(self, ws_id: str, root: str | Path | None = None):
        if not valid_workspace_id(ws_id):
            raise ValueError(f"Invalid workspace id {ws_id!r}: expected 8-40 lowercase letters or digits")
        self.id = ws_id
        self.root = Path(root) if root is not None else default_root()
        self.dir = self.root / ws_id
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def open(cls, ws_id: str | None = None, root: str | Path | None = None) -> "Workspace":
        """Open ``ws_id`` (created when missing) or, if it is None or invalid, a new workspace."""
        if not valid_workspace_id(ws_id):
            ws_id = new_workspace_id()
        return cls(ws_id, root)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ paths
    @property
    def runs_dir(self) -> Path:
        return self.dir / "runs"

    @property
    def cache_dir(self) -> Path:
        return self.dir / "cache"

    @property
    def dataset_path(self) -> Path:
        return self.dir / "dataset.h5ad"

    @property
    def original_path(self) -> Path:
        return self.dir / "dataset_original.h5ad"

    @property
    def state_path(self) -> Path:
        return self.dir / "state.json"

    # ------------------------------------------------------------------ state
    def load_state(self) -> dict[str, Any]:
        if not self.state_path.exists():
            return {}
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError) as exc:
            logger.warning("Unreadable workspace state %s: %s", self.state_path, exc)
            return {}

    def save_state(self, state: dict[str, Any]) -> None:
        _write_json(self.state_path, state)

    def update_state(self, **changes: Any) -> dict[str, Any]:
        state = self.load_state()
        state.update(changes)
        self.save_state(state)
        return state

    # ------------------------------------------------------------------ dataset
    def has_dataset(self) -> bool:
        return self.dataset_path.exists()

    def set_dataset(self, adata: AnnData, name: str, *, filtered_from_original: bool = False,
                    filter_params: dict | None = None) -> dict[str, Any]:
        """Store ``adata`` as the current dataset; returns the new state.

        A new upload replaces the dataset (earlier runs stay on disk, tied to their own dataset fingerprint)
        and clears the reference annotation and edits. QC filtering keeps the pre-filter copy.
        """
        from .io import dataset_fingerprint, write

        if filtered_from_original:
            if not self.original_path.exists():
                shutil.copyfile(self.dataset_path, self.original_path)
        elif self.original_path.exists():
            self.original_path.unlink()
        write(adata, self.dataset_path)
        fp = dataset_fingerprint(adata)
        state = self.load_state()
        reference = state.get("reference") if filtered_from_original else None
        if reference is not None and reference not in adata.obs:
            reference = None
        state.update(dataset_name=name, fingerprint=fp, n_cells=int(adata.n_obs), n_genes=int(adata.n_vars),
                     reference=reference, filter=filter_params if filtered_from_original else None,
                     loaded_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        if not filtered_from_original:
            state["original_name"] = name
        self.save_state(state)
        return state

    def load_dataset(self) -> AnnData | None:
        if not self.has_dataset():
            return None
        import anndata

        return anndata.read_h5ad(self.dataset_path)

    def undo_filter(self) -> bool:
        """Go back to the dataset before QC filtering; False when there was no filtering."""
        if not self.original_path.exists():
            return False
        import anndata

        adata = anndata.read_h5ad(self.original_path)
        name = self.load_state().get("original_name", "dataset")
        shutil.copyfile(self.original_path, self.dataset_path)
        self.original_path.unlink()
        from .io import dataset_fingerprint

        state = self.load_state()
        ref = state.get("reference")
        state.update(dataset_name=name, fingerprint=dataset_fingerprint(adata), n_cells=int(adata.n_obs),
                     n_genes=int(adata.n_vars), filter=None, reference=ref if ref in adata.obs else None)
        self.save_state(state)
        return True

    @property
    def fingerprint(self) -> str | None:
        fp = self.load_state().get("fingerprint") or {}
        return fp.get("sha256")

    # ------------------------------------------------------------------ reference annotation
    def reference(self) -> str | None:
        return self.load_state().get("reference")

    def set_reference(self, column: str | None) -> None:
        self.update_state(reference=column or None)

    # ------------------------------------------------------------------ edits (renames / merges)
    def edits(self, run_id: str) -> dict[str, str]:
        return dict((self.load_state().get("edits") or {}).get(run_id, {}))

    def set_edits(self, run_id: str, mapping: dict[str, str]) -> None:
        state = self.load_state()
        all_edits = state.get("edits") or {}
        clean = {str(k): str(v).strip() for k, v in mapping.items() if str(v).strip() and str(v).strip() != str(k)}
        if clean:
            all_edits[run_id] = clean
        else:
            all_edits.pop(run_id, None)
        state["edits"] = all_edits
        self.save_state(state)

    # ------------------------------------------------------------------ runs
    def list_runs(self, *, active_ids: set[str] | None = None, this_dataset: bool = True) -> list:
        """Run records, newest first. A ``running`` run not in ``active_ids`` is reported ``interrupted``.

        ``this_dataset``: only runs made on the current dataset (same fingerprint).
        """
        from .runs import list_runs

        records = list_runs(self.runs_dir)
        active = active_ids or set()
        fp = self.fingerprint
        out = []
        for r in records:
            if r.status == "running" and r.run_id not in active:
                r.meta["status"] = "interrupted"
            if this_dataset and fp is not None and (r.meta.get("dataset") or {}).get("sha256") != fp:
                continue
            out.append(r)
        return out

    def run_dir(self, run_id: str) -> Path:
        if not re.match(r"^[A-Za-z0-9_.\-]+$", run_id):
            raise ValueError(f"Invalid run id {run_id!r}")
        return self.runs_dir / run_id

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
        s = pd.Series(pd.Categorical(values, categories=cats))
        return apply_edits(s, self.edits(run_id)) if edited else s

    def delete_run(self, run_id: str) -> None:
        d = self.run_dir(run_id)
        if d.exists():
            shutil.rmtree(d)
        state = self.load_state()
        (state.get("edits") or {}).pop(run_id, None)
        self.save_state(state)
        for f in self.cache_dir.glob(f"{run_id}*"):
            f.unlink()
