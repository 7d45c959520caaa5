"""``run_method``: fit a registered method and write the results back into AnnData, the scanpy way."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from anndata import AnnData

from ..config import MethodConfig
from ._base import Callback, CallbackList, MethodResult
from ._registry import get_method, list_methods

__all__ = ["run_method", "write_result", "free_key", "WRITTEN_KEYS"]

logger = logging.getLogger(__name__)

#: ``uns`` entry listing the keys :func:`write_result` wrote, so it can tell its own columns from the user's
WRITTEN_KEYS = "scclust_written_keys"


def run_method(
    adata: AnnData,
    name: str,
    config: MethodConfig | None = None,
    *,
    preset: str | None = None,
    callback: Callback | None = None,
    key_added: str | None = None,
    label_key: str | None = None,
    batch_key: str | None = None,
    integration: str | None = None,
    record: bool | str | Path = False,
    **overrides: Any,
) -> MethodResult:
    """Fit method ``name`` on ``adata`` and write the results into it.

    Parameters
    ----------
    config
        A config of the method; default: ``preset`` (or the method's default preset) plus ``overrides``.
    label_key
        Reference annotation in ``obs``, used only for display metrics.
    batch_key, integration
        Several samples: the obs column of each cell's sample/batch, and how to integrate them (default
        ``harmony``; one of the method's ``integrations``). Batch mixing (``batch_asw``, ``ilisi``) joins the
        metrics, and ``obsm['X_' + key]`` is the embedding the final clustering used.
    record
        ``True`` (default root) or a directory: write a run record there (see :mod:`scclust_core.runs`).

    Returns
    -------
    The :class:`MethodResult`; ``adata`` gains ``obs[key]`` (categorical labels; cells removed by QC are NaN),
    ``obsm['X_' + key]`` (embedding; NaN rows for removed cells) and ``uns[key]`` (params, metrics, run id,
    status), where ``key = key_added or name``. A consensus (``recommend``) also writes
    ``obs[key + '_confidence']`` and ``uns[key]['consensus']`` (K evidence, candidate agreement matrix, ...).
    """
    method = get_method(name)
    if config is None:
        config = method.default_config(preset, **overrides)
    elif overrides:
        config = config.replace(**overrides)
    recorder = None
    if record:
        from ..io import dataset_fingerprint
        from ..runs import RunRecorder

        root = None if record is True else record
        recorder = RunRecorder(root, method=name, seed=config.seed, preset=preset, label_key=label_key,
                               dataset=dataset_fingerprint(adata),
                               extra={"batch_key": batch_key, "integration": integration} if batch_key else None)
    try:
        result = method.fit(adata, config, callback=CallbackList([recorder, callback]), label_key=label_key,
                            batch_key=batch_key, integration=integration)
    except BaseException as exc:
        if recorder is not None:
            recorder.fail(exc)
        raise
    run_id = recorder.run_id if recorder else None
    write_result(adata, result, key_added=key_added or name, run_id=run_id, preset=preset)
    return result


def write_result(adata: AnnData, result: MethodResult, *, key_added: str, run_id: str | None = None,
                 preset: str | None = None, categories: list[str] | None = None) -> None:
    """Write labels/embedding/params of ``result`` into ``adata`` (h5ad-writable types only)."""
    import pandas as pd

    if adata.n_obs != result.n_input_cells:
        raise ValueError(f"The result is for {result.n_input_cells} cells but the data has {adata.n_obs}")
    _warn_if_replacing_user_data(adata, key_added)
    full = result.full_labels()
    values = np.array([str(v) for v in full], dtype=object)
    values[full < 0] = None  # cells removed by the method's QC
    cats = categories or [str(v) for v in range(result.n_clusters)]
    adata.obs[key_added] = pd.Categorical(values, categories=cats)
    adata.obsm[f"X_{key_added}"] = result.full_embedding()
    adata.uns[key_added] = {
        "method": result.method,
        "params": {k: ("" if v is None else (list(v) if isinstance(v, tuple) else v)) for k, v in result.config.items()},
        "preset": preset or "",
        "metrics": {k: float(v) for k, v in result.metrics.items()},
        "status": result.status,
        "run_id": run_id or "",
        "device": result.device,
        "seconds": float(result.seconds),
        "label_key": result.label_key or "",
    }
    integ = result.extras.get("integration")
    if isinstance(integ, dict):  # several samples: how they were integrated travels with the labels
        adata.uns[key_added]["integration"] = _h5ad_plain({k: v for k, v in integ.items() if v not in (None, [])})
    _write_consensus(adata, result, key_added)
    adata.uns[WRITTEN_KEYS] = sorted(set(_written_keys(adata)) | {key_added})


def _written_keys(adata: AnnData) -> list[str]:
    raw = adata.uns.get(WRITTEN_KEYS)
    return [] if raw is None else [str(k) for k in np.atleast_1d(np.asarray(raw, dtype=object)).tolist()]


def _taken(adata: AnnData, key: str) -> list[str]:
    """Where ``key`` is already used among the slots :func:`write_result` writes."""
    return [slot for slot, hit in (("obs", key in adata.obs), ("obsm", f"X_{key}" in adata.obsm),
                                   ("uns", key in adata.uns)) if hit]


def _warn_if_replacing_user_data(adata: AnnData, key: str) -> None:
    """scanpy's ``key_added`` replaces what is there; say so when it is not a result this library wrote."""
    slots = _taken(adata, key)
    if slots and key not in _written_keys(adata):
        msg = (f"key_added={key!r} replaces {', '.join(slots)} data that scclust did not write (e.g. your own "
               f"labels); pass another key_added to keep it, e.g. {free_key(adata, key)!r}")
        logger.warning(msg)
        warnings.warn(msg, UserWarning, stacklevel=3)


def free_key(adata: AnnData, key: str) -> str:
    """``key``, or ``key_2``, ``key_3``, … : the first one used by none of ``obs[k]``, ``obsm['X_' + k]``,
    ``uns[k]``, so results never overwrite a column that came with the data (the caller says which it got)."""
    candidate, i = key, 1
    while _taken(adata, candidate):
        i += 1
        candidate = f"{key}_{i}"
    return candidate


def _write_consensus(adata: AnnData, result: MethodResult, key_added: str) -> None:
    """A consensus result (``extras[summary_key]`` of its method) adds ``obs[key + '_confidence']`` and
    ``uns[key]['consensus']``."""
    summary = consensus_summary(result)
    if not isinstance(summary, dict):
        return
    conf = np.full(result.n_input_cells, np.nan, dtype=np.float32)
    conf[result.cell_index] = np.asarray(summary["confidence"], dtype=np.float32)
    adata.obs[f"{key_added}_confidence"] = conf
    adata.uns[key_added]["consensus"] = _h5ad_plain({k: v for k, v in summary.items() if k != "confidence"})


def _h5ad_plain(value):
    """Lists become numpy arrays (string arrays for names) so h5ad can store them; dicts recurse."""
    if isinstance(value, dict):
        return {str(k): _h5ad_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return np.asarray(value, dtype=object if value and isinstance(value[0], str) else None)
    return value


def consensus_summary(result: MethodResult) -> dict | None:
    """The consensus summary a result carries (its method's ``summary_key`` in ``extras``), or None."""
    key = type(get_method(result.method)).summary_key if result.method in list_methods() else None
    summary = result.extras.get(key) if key else None
    return summary if isinstance(summary, dict) else None
