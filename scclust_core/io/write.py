"""Writing ``.h5ad`` (after making obs/var/uns storable) and content fingerprints of a dataset."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Mapping

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

logger = logging.getLogger(__name__)


def sanitize_uns(d: Mapping[str, Any], _path: str = "uns") -> dict[str, Any]:
    """Return a copy of ``d`` that h5ad can store: tuples → lists, numpy scalars → Python, ``None`` dropped.

    Raises
    ------
    ValueError
        Naming the offending key when a value has no h5ad representation.
    """
    out: dict[str, Any] = {}
    for key, value in d.items():
        if value is None:
            continue
        key_s = str(key)
        out[key_s] = _sanitize_value(value, f"{_path}[{key_s!r}]")
    return out


def _sanitize_value(value: Any, path: str) -> Any:
    if isinstance(value, Mapping):
        return sanitize_uns(value, path)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (pd.DataFrame, pd.Series)) or sp.issparse(value):
        return value
    if isinstance(value, np.ndarray):
        return _sanitize_array(value, path)
    if isinstance(value, (list, tuple)):
        items = [_sanitize_value(v, f"{path}[{i}]") for i, v in enumerate(value) if v is not None]
        if len(items) != len(value):
            raise ValueError(f"{path} is a list containing None, which .h5ad cannot store: remove the None entries")
        if any(isinstance(v, dict) for v in items):
            raise ValueError(
                f"{path} is a list of dicts, which .h5ad cannot store: turn it into a dict keyed by strings"
            )
        try:
            as_array = np.asarray(items) if items else np.asarray([], dtype=float)
        except ValueError as exc:  # ragged nesting
            raise ValueError(
                f"{path} is a ragged nested list, which .h5ad cannot store: make it rectangular "
                "(all sub-lists the same length) or store it as a dict of lists"
            ) from exc
        _sanitize_array(as_array, path)  # validate only: anndata converts lists itself
        return items
    raise ValueError(
        f"{path} has type {type(value).__name__}, which .h5ad cannot store: convert it to numbers, strings, "
        "lists or dicts, or remove it"
    )


def _sanitize_array(arr: np.ndarray, path: str) -> np.ndarray:
    if arr.dtype.kind in "biufcUS":
        return arr
    if arr.dtype.kind == "O" and all(isinstance(v, str) for v in arr.ravel()):
        return arr.astype(str)
    raise ValueError(
        f"{path} is an array of mixed or non-numeric objects ({arr.dtype}), which .h5ad cannot store: "
        "make all its elements numbers or all strings"
    )


def _sanitize_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Make obs/var storable: string column names/index, object columns all-str, categories str."""
    frame = frame.copy()
    frame.columns = [str(c) for c in frame.columns]
    frame.index = pd.Index(np.asarray(frame.index, dtype=str), dtype=str)
    for col in frame.columns:
        series = frame[col]
        if isinstance(series.dtype, pd.CategoricalDtype):
            cats = series.cat.categories
            if cats.dtype.kind == "O" and not all(isinstance(c, str) for c in cats):
                frame[col] = series.cat.rename_categories([str(c) for c in cats])
        elif pd.api.types.is_object_dtype(series.dtype):
            non_null = series.dropna()
            if len(non_null) and all(isinstance(v, (bool, np.bool_)) for v in non_null) and len(non_null) == len(series):
                frame[col] = series.astype(bool)
            elif not all(isinstance(v, str) for v in non_null):
                logger.info("Column %r has mixed types; storing it as strings", col)
                frame[col] = pd.Categorical(series.map(lambda v: v if v is None or v != v else str(v)))
            elif series.isna().any():
                frame[col] = pd.Categorical(series)
    return frame


def write(adata: ad.AnnData, path: str | Path) -> Path:
    """Save ``adata`` as gzip-compressed ``.h5ad`` after making obs/var/uns storable.

    The input is not modified (a copy is written).
    """
    path = Path(path)
    out = adata.copy()
    out.obs = _sanitize_frame(out.obs)
    out.var = _sanitize_frame(out.var)
    out.uns = sanitize_uns(dict(out.uns))
    path.parent.mkdir(parents=True, exist_ok=True)
    out.write_h5ad(path, compression="gzip")
    logger.info("Wrote %d cells × %d genes to %s", out.n_obs, out.n_vars, path)
    return path


# --------------------------------------------------------------------------------------------------
# fingerprint
# --------------------------------------------------------------------------------------------------


def _names_bytes(names: pd.Index) -> bytes:
    return "\x00".join(np.asarray(names, dtype=str).tolist()).encode("utf-8")


def dataset_fingerprint(adata: ad.AnnData) -> dict[str, Any]:
    """Content hash of X and the cell/gene names, so results can be tied to the exact input data.

    Sparse matrices are hashed in canonical CSR form (int64 indices, float32 data), dense ones as
    C-contiguous float32 bytes; no Python-level loops over values.
    """
    h = hashlib.sha256()
    X = adata.X
    h.update(f"{adata.n_obs}x{adata.n_vars};".encode())
    if sp.issparse(X):
        m = sp.csr_matrix(X, dtype=np.float32)
        if not m.has_canonical_format:
            m = m.copy()
            m.sum_duplicates()
        h.update(b"csr;")
        h.update(np.ascontiguousarray(m.indptr, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(m.indices, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(m.data, dtype=np.float32).tobytes())
    elif X is not None:
        h.update(b"dense;")
        h.update(np.ascontiguousarray(np.asarray(X), dtype=np.float32).tobytes())
    h.update(b"obs;")
    h.update(_names_bytes(adata.obs_names))
    h.update(b"var;")
    h.update(_names_bytes(adata.var_names))
    return {"n_cells": int(adata.n_obs), "n_genes": int(adata.n_vars), "sha256": h.hexdigest()}

