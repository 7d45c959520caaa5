"""Summaries of a loaded dataset: where raw counts are, which obs columns are usable as labels."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

#: ``is_integer_counts`` looks at no more than this many stored values (evenly strided sample).
INTEGER_CHECK_MAX_VALUES = 1_000_000

_MITO_RE = re.compile(r"^MT-", re.IGNORECASE)
_QC_COLUMN_RE = re.compile(
    r"^(n_counts|n_genes|n_genes_by_counts|n_cells|n_cells_by_counts|total_counts.*|log1p_.*|pct_.*"
    r"|percent_.*|frac_.*|size_factors?|.*_score|mt_frac|mito_frac|mean_counts|nUMI|nGene"
    r"|nCount_.*|nFeature_.*)$",
    re.IGNORECASE,
)



def is_integer_counts(matrix: Any) -> bool:
    """Whether ``matrix`` looks like raw counts: finite, non-negative and integer-valued.

    Sparse matrices are judged on their stored values. For speed, at most
    :data:`INTEGER_CHECK_MAX_VALUES` values are inspected (an evenly strided sample), so a matrix with
    very few non-integer entries could pass; that is acceptable for deciding how to preprocess.
    """
    if matrix is None:
        return False
    values = matrix.data if sp.issparse(matrix) else np.asarray(matrix)
    if values.dtype.kind in "biu":
        return bool(values.size == 0 or values.min() >= 0)
    if values.dtype.kind != "f":
        return False
    values = values.ravel()
    if values.size > INTEGER_CHECK_MAX_VALUES:
        step = int(np.ceil(values.size / INTEGER_CHECK_MAX_VALUES))
        values = values[::step]
    if values.size == 0:
        return True
    if not np.isfinite(values).all() or values.min() < 0:
        return False
    return bool(np.all(values == np.round(values)))


@dataclass(frozen=True)
class DataSummary:
    """What the UI/CLI need to know about a loaded dataset before choosing preprocessing.

    ``is_counts`` says whether ``X`` itself holds raw integer counts; ``counts_location`` says where raw
    counts can be found (``"X"``, ``"layers['counts']"``, ``"raw.X"``) or ``None`` if nowhere.
    """

    n_cells: int
    n_genes: int
    is_counts: bool
    counts_location: str | None
    annotation_columns: list[str] = field(default_factory=list)
    sparse: bool = False
    has_mito: bool = False

    def to_text(self) -> str:
        """One human-readable paragraph for the UI and CLI."""
        parts = [
            f"{self.n_cells:,} cells × {self.n_genes:,} genes ({'sparse' if self.sparse else 'dense'} matrix)."
        ]
        if self.counts_location == "X":
            parts.append("X holds raw integer counts.")
        elif self.counts_location is not None:
            parts.append(
                f"X is not raw counts (looks normalised); raw integer counts are in {self.counts_location}."
            )
        else:
            parts.append(
                "No raw integer counts found: X looks already normalised or transformed, so count-based "
                "steps (library-size normalisation, count QC) may not apply."
            )
        if self.annotation_columns:
            parts.append(
                f"{len(self.annotation_columns)} cell annotation column(s) usable as reference labels: "
                + ", ".join(self.annotation_columns) + "."
            )
        else:
            parts.append("No cell annotation columns found (no reference labels for scoring).")
        parts.append(
            "Mitochondrial genes (MT-) present." if self.has_mito else "No mitochondrial genes (MT-) found."
        )
        return " ".join(parts)


def _annotation_columns(obs: pd.DataFrame) -> list[str]:
    """obs columns that look like cell labels (categorical/text/bool or low-cardinality integers)."""
    n_cells = len(obs)
    max_levels = max(2, min(200, n_cells // 2))
    found: list[str] = []
    for col in obs.columns:
        if _QC_COLUMN_RE.match(str(col)):
            continue
        series = obs[col]
        dtype = series.dtype
        labelish = (
            isinstance(dtype, pd.CategoricalDtype)
            or pd.api.types.is_object_dtype(dtype)
            or pd.api.types.is_string_dtype(dtype)
            or pd.api.types.is_bool_dtype(dtype)
            or pd.api.types.is_integer_dtype(dtype)
        )
        if not labelish:
            continue
        n_levels = series.nunique(dropna=True)
        if 2 <= n_levels <= max_levels:
            found.append(str(col))
    return found


def describe(adata: ad.AnnData) -> DataSummary:
    """Summarise a dataset so the caller can pick preprocessing and reference labels."""
    location: str | None = None
    if is_integer_counts(adata.X):
        location = "X"
    elif "counts" in adata.layers and is_integer_counts(adata.layers["counts"]):
        location = "layers['counts']"
    elif adata.raw is not None and is_integer_counts(adata.raw.X):
        location = "raw.X"
    names = pd.Series(np.asarray(adata.var_names, dtype=str))
    return DataSummary(
        n_cells=int(adata.n_obs),
        n_genes=int(adata.n_vars),
        is_counts=location == "X",
        counts_location=location,
        annotation_columns=_annotation_columns(adata.obs),
        sparse=bool(sp.issparse(adata.X)),
        has_mito=bool(names.str.contains(_MITO_RE).any()),
    )
