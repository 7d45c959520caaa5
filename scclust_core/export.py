"""Exports: a labeled .h5ad for scanpy and CELLxGENE, a labels CSV, run records as JSON, figures.

The labeled AnnData keeps the data as it was read (``X`` with its sparse format, dtype and values; ``layers``,
``var``, existing ``obs``) and adds, for every chosen run with key ``k`` (``<method>_<id>``):

- ``obs[k]``: cluster labels as a categorical (renamed/merged names when the user edited them; cells the method
  dropped are missing), plus ``obs[k + '_original']`` with the method's own numbers when edited;
- ``uns[k + '_colors']``: the cluster colours of the app (scanpy and CELLxGENE use them);
- ``obsm['X_' + k + '_umap']``: the run's UMAP, a real 2-D view (CELLxGENE lists every ``X_*`` key as a layout
  and draws its first two columns, so only 2-D views get the ``X_`` prefix);
- ``obsm['emb_' + k]``: the learned embedding (all its dimensions; for scanpy,
  ``sc.pp.neighbors(adata, use_rep='emb_' + k)``; NaN rows = cells the method dropped);
- ``obsm['X_umap']``: the UMAP of the first run (what CELLxGENE opens with), unless the upload had one;
- ``layers['counts']``: the raw counts when ``X`` holds them (scanpy's convention before normalising);
  ``layers['lognorm']`` only when asked for;
- ``uns['scclust']``: version, what each added key holds (``keys``), what was moved (``moved``), the sample key
  (``batch_key``), and per run the method, preset, metrics (batch mixing included), renames, the integration
  (``integration``: sample key, method, samples, notes) and the full run record as JSON text.

Several samples: ``obs['sample']`` and the doublet flags (``obs['predicted_doublet']``, ``obs['doublet_score']``)
are the data's own columns and are kept; the learned embedding of an integrated run is the corrected one (what
the final clustering used), under ``emb_`` like any other (a layout ``X_*`` only for 2-D views).

Uploaded ``obsm['X_*']`` entries that are not 2-D (e.g. a 50-dimensional ``X_pca``) would show in CELLxGENE as a
layout of their first two dimensions; they are kept under the same name without the ``X_`` prefix.
"""
from __future__ import annotations

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

__all__ = ["RunExport", "run_key", "labeled_adata", "h5ad_bytes", "labels_csv", "run_json", "figure_bytes",
           "describe_matrix", "key_table"]


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
    #: the run's integration (``extras['integration']``: batch_key, method, batches, notes); empty: one sample
    integration: dict[str, Any] = field(default_factory=dict)


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


def labeled_adata(adata: AnnData, runs: Sequence[RunExport], *, lognorm: Any = None,
                  counts_layer: bool = True, batch_key: str | None = None) -> AnnData:
    """A copy of ``adata`` with the runs added (see the module docstring); ``adata`` itself is not modified.

    ``lognorm``: a cells × genes matrix (or AnnData) of normalised values to store as ``layers['lognorm']``
    (only when the user asks for it). ``counts_layer``: store ``X`` as ``layers['counts']`` when it holds
    integer counts and no counts layer exists. ``batch_key``: the confirmed sample key (said in ``uns``).
    """
    from . import __version__

    out = adata.copy()  # X keeps its type: a CSR stays CSR, values and dtype unchanged
    meta: dict[str, Any] = {"version": __version__, "runs": {}, "keys": {}, "moved": {}}
    _move_wide_layouts(out, meta)
    _add_layers(out, meta, lognorm=lognorm, counts_layer=counts_layer)
    _note_sample_columns(out, meta, batch_key)
    for i, r in enumerate(runs):
        key = _free_obs_key(out, r.key, meta)
        _add_labels(out, r, key, meta)
        if r.embedding is not None:
            emb = np.asarray(r.embedding, dtype=np.float32)
            if emb.shape[0] != out.n_obs:
                raise ValueError(f"Run {r.key}: embedding has {emb.shape[0]} rows but the data has {out.n_obs} cells")
            out.obsm[f"emb_{key}"] = emb
            integ = r.integration or {}
            how = (f", corrected by {integ['method']} for obs['{integ.get('batch_key')}']"
                   if integ.get("method") not in (None, "none") else "")
            meta["keys"][f"obsm['emb_{key}']"] = (f"learned embedding of {key} ({emb.shape[1]} dims{how}) — for "
                                               f"scanpy: sc.pp.neighbors(adata, use_rep='emb_{key}')")
        if r.umap is not None:
            xy = _finite_xy(r.umap)
            if xy.shape != (out.n_obs, 2):
                raise ValueError(f"Run {r.key}: a UMAP must be {out.n_obs} × 2, got {xy.shape}")
            out.obsm[f"X_{key}_umap"] = xy
            meta["keys"][f"obsm['X_{key}_umap']"] = f"UMAP of the embedding of {key} (2-D layout)"
            if "X_umap" not in out.obsm:
                out.obsm["X_umap"] = xy
                meta["keys"]["obsm['X_umap']"] = f"UMAP of {key} (the layout CELLxGENE opens with)"
        meta["runs"][key] = _run_meta(r)
    if not any(k.startswith("X_") for k in out.obsm):
        raise ValueError("No 2-D layout to export: compute the UMAP of at least one run first")
    meta["X"] = describe_matrix(out.X)
    out.uns["scclust"] = meta
    return out


def _note_sample_columns(out: AnnData, meta: dict[str, Any], batch_key: str | None) -> None:
    """Say what the sample and doublet columns of the data are (they are kept as they are)."""
    if batch_key and batch_key in out.obs:
        meta["batch_key"] = batch_key
        meta["keys"][f"obs['{batch_key}']"] = "the sample of each cell (the sample key of the runs' integration)"
    if "predicted_doublet" in out.obs:
        meta["keys"]["obs['predicted_doublet']"] = "Scrublet's doublet call per cell (per sample); flagged, not removed"
    if "doublet_score" in out.obs:
        meta["keys"]["obs['doublet_score']"] = "Scrublet's doublet score per cell"


def describe_matrix(X: Any) -> str:
    """``'sparse csr_matrix, float32, 1,234,567 stored values'`` or ``'dense ndarray, float32'``."""
    import scipy.sparse as sp

    if sp.issparse(X):
        return f"sparse {type(X).__name__}, {X.dtype}, {X.nnz:,} stored values"
    return f"dense {type(X).__name__}, {np.asarray(X).dtype}"


def _move_wide_layouts(out: AnnData, meta: dict[str, Any]) -> None:
    """Uploaded ``X_*`` embeddings that are not 2-D lose the ``X_`` prefix (CELLxGENE would draw 2 of their dims)."""
    for k in list(out.obsm.keys()):
        v = out.obsm[k]
        if k.startswith("X_") and (np.ndim(v) != 2 or np.shape(v)[1] != 2):
            new = k[2:] or "embedding"
            while new in out.obsm:
                new = f"{new}_"
            out.obsm[new] = out.obsm.pop(k)
            meta["moved"][f"obsm['{k}']"] = f"obsm['{new}']"
            meta["keys"][f"obsm['{new}']"] = f"your {k} ({np.shape(v)[1]} dims), renamed so CELLxGENE does not show it as a layout"


def _add_layers(out: AnnData, meta: dict[str, Any], *, lognorm: Any, counts_layer: bool) -> None:
    from .preprocess import is_integer_matrix

    if counts_layer and "counts" not in out.layers and is_integer_matrix(out.X):
        out.layers["counts"] = out.X
        meta["keys"]["layers['counts']"] = "raw counts (the same values as X, as uploaded)"
    if lognorm is not None:
        mat = lognorm.X if isinstance(lognorm, AnnData) else lognorm
        if tuple(mat.shape) != tuple(out.shape):
            raise ValueError(f"The normalised matrix is {tuple(mat.shape)}, the data {tuple(out.shape)}")
        name = "lognorm" if "lognorm" not in out.layers else "lognorm_scclust"
        out.layers[name] = mat
        meta["keys"][f"layers['{name}']"] = "normalised expression (normalize_total + log1p), as used for markers"


def _free_obs_key(out: AnnData, key: str, meta: dict[str, Any]) -> str:
    """``key``, or ``key_scclust[_n]`` when the upload already has such a column (never overwrite)."""
    new, n = key, 0
    while new in out.obs.columns or f"{new}_colors" in out.uns:
        n += 1
        new = f"{key}_scclust" + (f"_{n}" if n > 1 else "")
    if new != key:
        meta["moved"][f"obs['{key}']"] = f"obs['{new}'] (your data already had obs['{key}'])"
        meta.setdefault("renamed_keys", {})[key] = new
    return new


def _add_labels(out: AnnData, r: RunExport, key: str, meta: dict[str, Any]) -> None:
    from .plots import palette

    lab = pd.Series(r.labels).reset_index(drop=True)
    if len(lab) != out.n_obs:
        raise ValueError(f"Run {r.key} has {len(lab)} labels but the data has {out.n_obs} cells")
    if not isinstance(lab.dtype, pd.CategoricalDtype):
        lab = lab.astype("category")
    lab = lab.cat.rename_categories([str(c) for c in lab.cat.categories]).cat.remove_unused_categories()
    out.obs[key] = pd.Categorical(lab.to_numpy(), categories=list(lab.cat.categories))
    out.uns[f"{key}_colors"] = list(palette(list(lab.cat.categories)).values())
    meta["keys"][f"obs['{key}']"] = f"clusters of run {r.record.get('run_id', key) if r.record else key} (colours in uns['{key}_colors'])"
    if r.edits and r.original_labels is not None:
        orig = pd.Series(r.original_labels).reset_index(drop=True).astype("category")
        out.obs[f"{key}_original"] = pd.Categorical(orig.astype(object).where(orig.notna(), None).to_numpy())
        meta["keys"][f"obs['{key}_original']"] = f"the method's own cluster numbers of {key}, before your renames"


def _run_meta(r: RunExport) -> dict[str, Any]:
    rec = r.record or {}
    return {
        "run_id": str(rec.get("run_id", "")), "method": str(rec.get("method", "")),
        "preset": str(rec.get("preset") or ""), "status": str(rec.get("status", "")),
        "metrics": {k: float(v) for k, v in (rec.get("metrics") or {}).items() if isinstance(v, (int, float)) and v == v},
        "renames": {str(k): str(v) for k, v in (r.edits or {}).items()},
        **({"integration": _integration_meta(r.integration)} if r.integration else {}),
        "record_json": json.dumps(rec, default=str),
    }


def _integration_meta(integ: dict[str, Any]) -> dict[str, Any]:
    """The integration settings in a form h5ad stores (strings and lists of strings)."""
    return {"batch_key": str(integ.get("batch_key", "")), "method": str(integ.get("method", "none")),
            "batches": [str(b) for b in integ.get("batches", [])], "notes": [str(n) for n in integ.get("notes", [])]}


def key_table(adata: AnnData) -> pd.DataFrame:
    """What each key added or moved by :func:`labeled_adata` holds (for the Export page)."""
    meta = adata.uns.get("scclust", {})
    rows = [{"key": k, "holds": v} for k, v in (meta.get("keys") or {}).items()]
    rows.append({"key": "X", "holds": f"your expression matrix as read ({meta.get('X', describe_matrix(adata.X))})"})
    return pd.DataFrame(rows)


def h5ad_bytes(adata: AnnData) -> bytes:
    """The bytes of ``adata`` written as .h5ad (via :func:`scclust_core.io.write`, which makes obs/uns storable).

    The file is written by a child process in the temporary folder (``$TMPDIR``): a full disk or the file-size
    limit is a ``ValueError`` saying how much room there is (checked before writing), and h5py failing cannot crash
    the server that runs the Export page.
    """
    from .io import write

    with tempfile.TemporaryDirectory(prefix="scclust_export_") as tmp:
        path = Path(tmp) / "export.h5ad"
        write(adata, path)
        return path.read_bytes()


def labels_csv(obs_names: Sequence[str], runs: Sequence[RunExport]) -> str:
    """CSV with one row per cell: ``cell`` then one column per run (edited labels), spreadsheet-safe
    (:func:`scclust_core.csv_safe.to_safe_csv`: names that start like a formula get a leading ``'``)."""
    from .csv_safe import to_safe_csv

    df = pd.DataFrame({"cell": list(map(str, obs_names))})
    for r in runs:
        df[r.key] = pd.Series(r.labels).reset_index(drop=True).astype(object).to_numpy()
    return to_safe_csv(df)


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
