"""HDF5 readers (AnnData ``.h5ad`` and 10x Genomics ``.h5``), with declared sizes checked before reading."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import anndata as ad

from .budget import require
from .errors import corrupt, fmt_bytes
from .matrices import pick_matrix
from .report import note

logger = logging.getLogger(__name__)

#: Reading holds the file's arrays, then X is cast to float32 (a second copy at most): twice the declared size.
_H5_PEAK_FACTOR = 2.0


def declared_hdf5_bytes(path: Path) -> tuple[int, str]:
    """Total bytes of all datasets as declared by their shapes and dtypes, and the largest one's name.

    Compressed datasets can declare far more than the file holds; this is what reading them would allocate.
    """
    import h5py

    sizes: list[tuple[int, str]] = []

    def visit(name: str, obj) -> None:
        if isinstance(obj, h5py.Dataset):
            n = 1
            for d in obj.shape or ():
                n *= int(d)
            sizes.append((n * int(obj.dtype.itemsize), name))

    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
    except Exception as exc:  # noqa: BLE001 - any parser failure means an unreadable upload
        if isinstance(exc, MemoryError):
            raise
        raise corrupt("HDF5 file could not be opened", exc) from exc
    if not sizes:
        return 0, ""
    return sum(s for s, _ in sizes), max(sizes)[1]


def _check_declared(path: Path, label: str) -> None:
    total, biggest = declared_hdf5_bytes(path)
    require(total * _H5_PEAK_FACTOR,
            f"'{label}' declares {fmt_bytes(total)} of arrays (largest: '{biggest}'), so reading it",
            "upload a smaller file, or save X as a sparse matrix")


def read_h5ad(path: Path, label: str | None = None) -> ad.AnnData:
    """AnnData from ``path`` (``label``: the user's file name, for messages), X taken from layers['counts'] if empty."""
    _check_declared(path, label or path.name)
    try:
        adata = ad.read_h5ad(path)
    except Exception as exc:  # noqa: BLE001 - any parser failure means an unreadable upload
        if isinstance(exc, MemoryError):
            raise
        raise corrupt("h5ad could not be read", exc) from exc
    if adata.X is not None:  # processed files: counts from a layer or .raw, or recovered (io.matrices)
        adata, why = pick_matrix(adata)
        if why:
            note(why)
        return adata
    if adata.X is None:
        if "counts" in adata.layers:
            note("The .h5ad has no X: layers['counts'] is used as the expression matrix")
            adata.X = adata.layers["counts"].copy()
        else:
            raise ValueError(
                "The .h5ad file has no expression matrix (.X is empty and there is no layers['counts']): "
                "save the AnnData with its count matrix in .X"
            )
    return adata


def read_10x_h5(path: Path, label: str | None = None) -> ad.AnnData:
    """10x Genomics HDF5 (CellRanger v2/v3) via scanpy, after the declared-size check."""
    import scanpy as sc

    _check_declared(path, label or path.name)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not unique.*")
            adata = sc.read_10x_h5(path)
    except Exception as exc:  # noqa: BLE001 - any parser failure means an unreadable upload
        if isinstance(exc, MemoryError):
            raise
        raise corrupt("10x HDF5 could not be read", exc) from exc
    note("10x HDF5: gene symbols are the gene names (Ensembl ids in var['gene_ids']); barcodes are the cell names")
    return adata
