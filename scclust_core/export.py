"""Exports: a labeled .h5ad for scanpy and CELLxGENE, a labels CSV, run records as JSON, figures.

The labeled AnnData keeps the uploaded data as it is (``X``, ``layers``, ``var``, existing ``obs``/``obsm``) and
adds, for every chosen run with key ``k`` (``<method>_<id>``):

- ``obs[k]``: cluster labels as a categorical (renamed/merged names when the user edited them; cells the method
  dropped are missing), plus ``obs[k + '_original']`` with the method's own numbers when edited;
- ``obsm['X_' + k]``: the learned embedding (``obsm[k + '_embedding']`` when some cells have no embedding, since
  CELLxGENE refuses NaN in ``X_*`` embeddings); ``obsm['X_' + k + '_umap']``: its UMAP;
- ``obsm['X_umap']``: the UMAP of the first run (what CELLxGENE opens with);
- ``uns['scclust']['runs'][k]``: method, preset, metrics, renames and the full run record as JSON text;
- ``uns[k + '_colors']``: the cluster colours (scanpy and CELLxGENE use them).
"""
from __future__ import annotations

import dataclasses
import io as _io
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

logger = logging.getLogger(__name__)

__all__ = ["RunExport", "run_key", "labeled_adata", "h5ad_bytes", "labels_csv", "run_json", "figure_bytes"]


@dataclass
class RunExport:
    """One run to export: ``labels`` (one per cell, NaN = dropped), ``embedding`` ``[n, d]`` (NaN rows allowed)."""

    key: str
    labels: pd.Series
    embedding: np.ndarray | None = None
    umap: np.ndarray | None = None
    record: dict[str, Any] = field(default_factory=dict)
    edits: dict[str, str] = field(default_factory=dict)
    original_labels: pd.Series | None = None


def run_key(run_id: str, method: str) -> str:
    """Short obs-column-safe key ``<method>_<random suffix of the run id>``."""
    suffix = run_id.rsplit("_", 1)[-1]
    return f"{method}_{suffix}"


def _finite_xy(xy: np.ndarray) -> np.ndarray:
    """NaN rows (cells a method dropped) are placed in a corner, apart from the others (CELLxGENE needs finite)."""
    xy = np.asarray(xy, dtype=np.float32).copy()
    bad = ~np.isfinite(xy).all(axis=1)
    if bad.any():
        good = xy[~bad]
        corner = (good.min(axis=0) - 0.05 * (good.max(axis=0) - good.min(axis=0) + 1)) if len(good) else np.zeros(2)
        xy[bad] = corner
    return xy


def labeled_adata(adata: AnnData, runs: Sequence[RunExport]) -> AnnData:
    """A copy of ``adata`` with the runs added (see the module docstring); ``adata`` itself is not modified."""
    from . import __version__
    from .plots import palette

    from .methods._run import free_key

    out = adata.copy()
    meta: dict[str, Any] = {"version": __version__, "runs": {}, "renamed_keys": {}}
    for i, r in enumerate(runs):
        key = free_key(out, r.key)  # never overwrite a column that came with the upload (issue 14.4)
        if key != r.key:
            logger.info("obs[%r] came with the data: run written as %r", r.key, key)
            meta["renamed_keys"][r.key] = key
            r = dataclasses.replace(r, key=key)
        lab = pd.Series(r.labels).reset_index(drop=True)
        if len(lab) != out.n_obs:
            raise ValueError(f"Run {r.key} has {len(lab)} labels but the data has {out.n_obs} cells")
        if not isinstance(lab.dtype, pd.CategoricalDtype):
            lab = lab.astype("category")
        lab = lab.cat.rename_categories([str(c) for c in lab.cat.categories])
        lab = lab.cat.remove_unused_categories()
        out.obs[r.key] = pd.Categorical(lab.to_numpy(), categories=list(lab.cat.categories))
        out.uns[f"{r.key}_colors"] = list(palette(list(lab.cat.categories)).values())
        if r.edits and r.original_labels is not None:
            orig = pd.Series(r.original_labels).reset_index(drop=True).astype("category")
            out.obs[f"{r.key}_original"] = pd.Categorical(orig.astype(object).where(orig.notna(), None).to_numpy())
        if r.embedding is not None:
            emb = np.asarray(r.embedding, dtype=np.float32)
            name = f"X_{r.key}" if np.isfinite(emb).all() else f"{r.key}_embedding"
            out.obsm[name] = emb
        if r.umap is not None:
            xy = _finite_xy(r.umap)
            out.obsm[f"X_{r.key}_umap"] = xy
            if "X_umap" not in adata.obsm and ("X_umap" not in out.obsm or i == 0):  # an uploaded X_umap stays
                out.obsm["X_umap"] = xy
        rec = r.record or {}
        meta["runs"][r.key] = {
            "run_id": str(rec.get("run_id", "")), "method": str(rec.get("method", "")),
            "preset": str(rec.get("preset") or ""), "status": str(rec.get("status", "")),
            "metrics": {k: float(v) for k, v in (rec.get("metrics") or {}).items() if isinstance(v, (int, float)) and v == v},
            "renames": {str(k): str(v) for k, v in (r.edits or {}).items()},
            "record_json": json.dumps(rec, default=str),
        }
    if "X_umap" not in out.obsm:
        raise ValueError("No UMAP to export: compute the UMAP of at least one run first")
    out.uns["scclust"] = meta
    return out


def h5ad_bytes(adata: AnnData) -> bytes:
    """The bytes of ``adata`` written as .h5ad (via :func:`scclust_core.io.write`, which makes obs/uns storable)."""
    from .io import write

    with tempfile.TemporaryDirectory(prefix="scclust_export_") as tmp:
        path = Path(tmp) / "export.h5ad"
        write(adata, path)
        return path.read_bytes()


def labels_csv(obs_names: Sequence[str], runs: Sequence[RunExport]) -> str:
    """CSV with one row per cell: ``cell`` then one column per run (edited labels)."""
    df = pd.DataFrame({"cell": list(map(str, obs_names))})
    for r in runs:
        df[r.key] = pd.Series(r.labels).reset_index(drop=True).astype(object).to_numpy()
    return df.to_csv(index=False)


def run_json(record: dict[str, Any], edits: dict[str, str] | None = None) -> str:
    return json.dumps({**record, "renames": edits or {}}, indent=2, default=str)


def figure_bytes(fig, fmt: str) -> tuple[bytes, str, str, str | None]:
    """``(data, mime, extension, note)`` of a plotly figure as PNG/SVG (kaleido) or HTML.

    When kaleido cannot render here (it needs a Chrome/Chromium), the figure comes back as interactive HTML
    and ``note`` says why.
    """
    fmt = fmt.lower()
    if fmt == "html":
        return fig.to_html(include_plotlyjs="cdn").encode(), "text/html", "html", None
    try:
        data = fig.to_image(format=fmt, scale=2 if fmt == "png" else 1)
        mime = "image/png" if fmt == "png" else "image/svg+xml"
        return data, mime, fmt, None
    except Exception as exc:  # noqa: BLE001 - kaleido/chrome problems vary widely
        logger.warning("Static export failed (%s); offering HTML", exc)
        note = (f"{fmt.upper()} export is not available on this server ({type(exc).__name__}: {str(exc)[:160]}); "
                "download the interactive HTML instead (open it in a browser and use the camera icon to save a PNG).")
        return fig.to_html(include_plotlyjs="cdn").encode(), "text/html", "html", note
