"""Preprocessing recipes (docs/methods.md §0.2) and QC.

Every recipe starts from raw counts (``layers['counts']``, or ``X`` when it holds integers), works on a copy
and returns a new AnnData whose ``X`` is the model input (dense float32, cells × selected genes) with
``layers['counts']`` = raw counts of the same genes, ``obs['size_factors']`` and ``obs['cell_index']`` (the
row of the cell in the input, so results can be written back when QC drops cells).

- **R1** (DCA / scDeepCluster; scSAMAC): filter zero genes/cells, size factors = library / median, log1p,
  z-score genes (ddof 1, zero-variance genes get std 1, no clipping). Optionally preceded by scDeepCluster's
  dropout-based gene selection on the raw counts (``select_genes``; :func:`dropout_gene_selection`).
- **R2** (scziDesk / contrastive-sc / CICL): R1 plus top-N HVGs (scanpy ``seurat`` flavour) before scaling.
- **R3** (scGPCL): keep the top ``hvg_frac`` genes by variance of raw counts, then R1 on them.
- **R4** (scAMAC): genes with total count ≥ 5 % of cells, normalise to median, log1p, 3,000 HVGs, no scaling.
- **classic**: normalize_total, log1p, top-N HVGs (seurat), scale clipped at 10, PCA (the Leiden/KMeans baselines).
"""
from __future__ import annotations

import logging
import warnings

import numpy as np
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

from .io import is_integer_counts

logger = logging.getLogger(__name__)

__all__ = [
    "get_counts", "counts_adata", "dropout_gene_selection", "is_integer_matrix", "recipe_r1", "recipe_r2",
    "recipe_r3", "recipe_r4", "recipe_classic", "RECIPES", "lognormalised_input", "LOG_SCALE_MAX", "qc_metrics",
    "filter_cells_genes",
]


def is_integer_matrix(m) -> bool:
    """Non-negative and integer-valued (see :func:`scclust_core.io.is_integer_counts`)."""
    return is_integer_counts(m)


def get_counts(adata: AnnData):
    """Raw integer counts of ``adata``: ``layers['counts']``, else ``X``, else ``raw.X`` (same genes).

    Raises ``ValueError`` saying what to do when none holds non-negative integers.
    """
    if "counts" in adata.layers and is_integer_matrix(adata.layers["counts"]):
        return adata.layers["counts"]
    if is_integer_matrix(adata.X):
        return adata.X
    if adata.raw is not None and adata.raw.shape == adata.shape and is_integer_matrix(adata.raw.X):
        return adata.raw.X
    raise ValueError(
        "This method needs raw integer counts (UMI or read counts), but X holds non-integer or negative values "
        "(it looks normalised or log-transformed) and no layers['counts'] with counts was found. "
        "Upload the raw count matrix (for example the 10x filtered_feature_bc_matrix), or put the counts in "
        "layers['counts']."
    )


#: log1p of library-normalised counts stays far below this (log1p(1e6) ≈ 13.8; log2(1e6 + 1) ≈ 20).
LOG_SCALE_MAX = 30.0


def lognormalised_input(adata: AnnData, who: str):
    """``X`` as float32 (CSR kept sparse) when it can be taken as log-normalised, with the warning to record.

    Used only after :func:`get_counts` found no raw counts. Values that are negative or non-finite (scaled
    data) or larger than :data:`LOG_SCALE_MAX` (normalised but not logged, e.g. CPM) are neither counts nor
    log-scale: clustering them as "log-normalised" gives silently wrong results, so they are refused.
    """
    x = adata.X
    data = x.data if sp.issparse(x) else np.asarray(x)
    if data.size and not np.isfinite(data).all():
        raise ValueError(f"{who}: X contains NaN or infinite values; fix the input file")
    if data.size and data.min() < 0:
        raise ValueError(f"{who}: X holds negative values (it looks scaled or centred): upload raw counts or "
                         "log-normalised values, not z-scores")
    top = float(data.max()) if data.size else 0.0
    if top > LOG_SCALE_MAX:
        raise ValueError(
            f"{who}: X is neither raw counts (it has non-integer values) nor log-scale (values up to {top:,.1f}; "
            f"log-normalised data stays below {LOG_SCALE_MAX:.0f}). It looks normalised but not log-transformed: "
            "upload the raw counts (best), or apply log1p (scanpy.pp.log1p) before uploading")
    msg = (f"{who}: X does not hold raw counts (non-integer values, max {top:.2f}); it is taken as already "
           "normalised and log-transformed, so normalisation and log1p were skipped. Upload raw counts for the "
           "intended preprocessing.")
    out = sp.csr_matrix(x, dtype=np.float32) if sp.issparse(x) else np.asarray(x, dtype=np.float32)
    return out, msg


def counts_adata(adata: AnnData, *, ceil: bool = False) -> AnnData:
    """A fresh AnnData with X = raw counts (CSR float32), obs/var copied and ``obs['cell_index']`` set."""
    x = get_counts(adata)
    x = sp.csr_matrix(x, dtype=np.float32) if not sp.issparse(x) else x.tocsr().astype(np.float32)
    if ceil:
        x.data = np.ceil(x.data)
    out = AnnData(x, obs=adata.obs[[]].copy(), var=adata.var[[]].copy())
    out.obs["cell_index"] = np.arange(adata.n_obs, dtype=np.int64)
    return out


def _filter_zero(ad: AnnData, *, min_gene_counts: int = 1) -> AnnData:
    """Drop genes with total count < ``min_gene_counts`` and cells with no counts (R1 step 1)."""
    gene_tot = np.asarray(ad.X.sum(axis=0)).ravel()
    ad = ad[:, gene_tot >= max(1, min_gene_counts)].copy()
    cell_tot = np.asarray(ad.X.sum(axis=1)).ravel()
    ad = ad[cell_tot >= 1].copy()
    if ad.n_obs == 0 or ad.n_vars == 0:
        raise ValueError(f"No cells or genes left after removing empty ones ({ad.n_obs} cells × {ad.n_vars} genes): "
                         "check that the file holds counts with cells as rows (or transpose it)")
    detected = np.asarray((ad.X > 0).sum(axis=0)).ravel()
    if ad.n_obs >= 2 and detected.max() < 2:
        raise ValueError(f"No gene is detected in two or more of the {ad.n_obs} cells, so clustering has no shared "
                         "signal to work with: check the data (or loosen the QC filter)")
    return ad


def _size_factors(x) -> np.ndarray:
    lib = np.asarray(x.sum(axis=1)).ravel().astype(np.float64)
    return lib / np.median(lib)


def _normalize_log(ad: AnnData) -> None:
    """Divide each cell by its size factor (= scale to the median library size), then natural log1p."""
    sf = _size_factors(ad.X)
    ad.obs["size_factors"] = sf.astype(np.float32)
    x = ad.X.multiply(1.0 / sf[:, None]).tocsr() if sp.issparse(ad.X) else ad.X / sf[:, None]
    ad.X = sp.csr_matrix(x, dtype=np.float32) if sp.issparse(x) else np.asarray(x, dtype=np.float32)
    sc.pp.log1p(ad)


def _scale_genes(x, *, clip: float | None = None) -> np.ndarray:
    """Gene-wise z-score, ddof=1 like scanpy's ``scale``; zero-variance genes get std 1."""
    x = np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0, ddof=1) if x.shape[0] > 1 else np.ones(x.shape[1])
    std[std == 0] = 1.0
    z = (x - mean) / std
    if clip is not None:
        np.clip(z, -clip, clip, out=z)
    return z.astype(np.float32)


def _hvg(ad: AnnData, n_top_genes: int) -> AnnData:
    """Top-N genes by normalised dispersion (scanpy ``seurat`` flavour, on log-normalised data)."""
    if n_top_genes >= ad.n_vars:
        return ad
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.highly_variable_genes(ad, flavor="seurat", n_top_genes=int(n_top_genes))
    return ad[:, ad.var["highly_variable"].to_numpy()].copy()


def _finish(ad: AnnData, counts, x) -> AnnData:
    out = AnnData(np.asarray(x, dtype=np.float32), obs=ad.obs.copy(), var=ad.var[[]].copy())
    out.layers["counts"] = sp.csr_matrix(counts, dtype=np.float32)
    return out


def dropout_gene_selection(counts, n: int, *, threshold: float = 0.0, atleast: int = 10, decay: float = 1.5,
                           xoffset: float = 5.0, yoffset: float = 0.02, max_iter: int = 100) -> np.ndarray:
    """Indices (sorted) of ``n`` genes whose dropout rate is high for their expression level.

    The selection of Kobak & Berens (2019), which scDeepCluster and scSAMAC use for ``--select_genes``: per gene,
    the zero rate ``z`` (fraction of cells with count ≤ ``threshold``) and the mean log2 of its non-zero counts
    ``m``; genes seen in fewer than ``atleast`` cells are never chosen. A gene is selected when
    ``z > exp(−decay·(m − xoffset)) + yoffset``, and ``xoffset`` is bisected until about ``n`` genes pass. The
    original stops with whatever count the last bisection step gives; here the genes are then ranked by how far
    they lie above the final curve and exactly ``n`` are returned (the same genes when the bisection hits ``n``).
    When no more than ``n`` genes are detected in ``atleast`` cells, all of those are kept (with a warning).
    """
    x = sp.csr_matrix(counts, dtype=np.float64)
    n_cells, n_genes = x.shape
    n = int(n)
    if n < 1:
        raise ValueError(f"select_genes must be a positive number of genes, got {n}")
    pos = x.copy()
    pos.data = np.where(pos.data > threshold, pos.data, 0.0)
    pos.eliminate_zeros()
    detected = np.bincount(pos.indices, minlength=n_genes)
    zero_rate = 1.0 - detected / n_cells
    log2 = pos.copy()
    log2.data = np.log2(log2.data)
    sums = np.asarray(log2.sum(axis=0)).ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_log = np.where(detected > 0, sums / np.maximum(detected, 1), np.nan)
    eligible = detected >= atleast
    if not eligible.any():
        raise ValueError(f"No gene is detected in at least {atleast} cells, so none can be selected: leave gene "
                         "selection off for this data.")
    if eligible.sum() <= n:
        logger.warning("Gene selection: only %d genes are detected in at least %d cells; keeping all of them "
                       "instead of %d.", int(eligible.sum()), atleast, n)
        return np.flatnonzero(eligible)

    def margin(off: float) -> np.ndarray:
        m = np.full(n_genes, -np.inf)
        m[eligible] = zero_rate[eligible] - (np.exp(-decay * (mean_log[eligible] - off)) + yoffset)
        return m

    up, low = 10.0, 0.0
    for _ in range(max_iter):
        n_sel = int((margin(xoffset) > 0).sum())
        if n_sel == n:
            break
        if n_sel < n:
            up, xoffset = xoffset, (xoffset + low) / 2
        else:
            low, xoffset = xoffset, (xoffset + up) / 2
    order = np.argsort(-margin(xoffset), kind="stable")
    return np.sort(order[:n])


def recipe_r1(adata: AnnData, *, scale: bool = True, n_top_genes: int | None = None, ceil: bool = False,
              select_genes: int | None = None) -> AnnData:
    """R1 (and R2 when ``n_top_genes`` is given). Size factors come from all genes, before HVG selection.

    ``select_genes`` (scDeepCluster's ``--select_genes``): first keep that many genes of the raw counts with
    :func:`dropout_gene_selection` (no-op when the data has no more genes); size factors then come from them.
    """
    ad = counts_adata(adata, ceil=ceil)
    if select_genes is not None and ad.n_vars > int(select_genes):
        ad = ad[:, dropout_gene_selection(ad.X, int(select_genes))].copy()
    ad = _filter_zero(ad)
    counts = ad.X.copy()
    _normalize_log(ad)
    ad.layers["counts"] = counts
    if n_top_genes is not None:
        ad = _hvg(ad, n_top_genes)
    x = _scale_genes(ad.X) if scale else (ad.X.toarray() if sp.issparse(ad.X) else ad.X)
    return _finish(ad, ad.layers["counts"], x)


def recipe_r2(adata: AnnData, *, n_top_genes: int = 500, ceil: bool = False) -> AnnData:
    """R2: R1 with the top ``n_top_genes`` HVGs selected on the log-normalised data before scaling."""
    return recipe_r1(adata, n_top_genes=n_top_genes, ceil=ceil)


def recipe_r3(adata: AnnData, *, hvg_frac: float = 0.2) -> AnnData:
    """R3 (scGPCL): top ``floor(hvg_frac·G)`` genes by raw-count variance, then R1 steps 3–5 on them.

    Cells left with no counts on the kept genes are dropped too (their size factor would be 0).
    """
    if not 0 < hvg_frac <= 1:
        raise ValueError(f"hvg_frac must be in (0, 1], got {hvg_frac}")
    ad = _filter_zero(counts_adata(adata))
    n_keep = max(1, int(np.floor(hvg_frac * ad.n_vars)))
    x = ad.X
    mean = np.asarray(x.mean(axis=0)).ravel()
    var = np.asarray(x.multiply(x).mean(axis=0)).ravel() - mean**2
    var *= ad.n_obs / max(ad.n_obs - 1, 1)
    keep = np.sort(np.argsort(var, kind="stable")[::-1][:n_keep])
    ad = _filter_zero(ad[:, keep].copy())
    counts = ad.X.copy()
    _normalize_log(ad)
    return _finish(ad, counts, _scale_genes(ad.X))


def recipe_r4(adata: AnnData, *, n_top_genes: int = 3000, min_gene_frac: float = 0.05) -> AnnData:
    """R4 (scAMAC): genes with total count ≥ ``min_gene_frac``·N, median normalisation, log1p, HVGs, no scaling."""
    ad = counts_adata(adata)
    ad = _filter_zero(ad, min_gene_counts=int(min_gene_frac * ad.n_obs))
    counts = ad.X.copy()
    _normalize_log(ad)
    ad.layers["counts"] = counts
    ad = _hvg(ad, n_top_genes)
    x = ad.X.toarray() if sp.issparse(ad.X) else ad.X
    return _finish(ad, ad.layers["counts"], x)


def recipe_classic(adata: AnnData, *, n_top_genes: int = 2000, n_pcs: int = 50, max_value: float | None = 10.0,
                   seed: int = 0) -> AnnData:
    """Classic scanpy recipe for the Leiden/KMeans baselines; PCA in ``obsm['X_pca']``.

    normalize_total (median target), log1p, ``n_top_genes`` HVGs (seurat flavour), scale clipped at
    ``max_value``, PCA with ``n_pcs`` components (capped by the data size). If ``X`` holds no counts but looks
    log-normalised, normalisation is skipped with a warning (logged, and kept in ``uns['input_warnings']`` so the
    run's warnings show it); data that is neither counts nor log-scale is refused (:func:`lognormalised_input`).
    """
    try:
        base = counts_adata(adata)
    except ValueError:  # no raw counts anywhere: accept log-normalised X (with a warning), refuse anything else
        base = None
    if base is not None:
        ad = _filter_zero(base)
        counts = ad.X.copy()
        ad.obs["size_factors"] = _size_factors(ad.X).astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sc.pp.normalize_total(ad)
        sc.pp.log1p(ad)
        ad.layers["counts"] = counts
        ad.uns["input_was_counts"] = True
    else:
        x, msg = lognormalised_input(adata, "Leiden/KMeans")
        logger.warning(msg)
        warnings.warn(msg, UserWarning, stacklevel=2)
        ad = AnnData(x, obs=adata.obs[[]].copy(), var=adata.var[[]].copy())
        ad.obs["cell_index"] = np.arange(adata.n_obs, dtype=np.int64)
        ad.uns["input_was_counts"] = False
        ad.uns["input_warnings"] = [msg]
    ad = _hvg(ad, n_top_genes)
    x = _scale_genes(ad.X, clip=max_value)
    out = AnnData(x, obs=ad.obs.copy(), var=ad.var[[]].copy(), uns={"input_was_counts": ad.uns["input_was_counts"]})
    if "input_warnings" in ad.uns:
        out.uns["input_warnings"] = list(ad.uns["input_warnings"])
    if "counts" in ad.layers:
        out.layers["counts"] = sp.csr_matrix(ad.layers["counts"], dtype=np.float32)
    n_comps = int(min(n_pcs, out.n_obs - 1, out.n_vars - 1))
    if n_comps < 1:
        raise ValueError(f"Too few cells or genes for PCA ({out.n_obs} × {out.n_vars})")
    sc.pp.pca(out, n_comps=n_comps, random_state=seed, svd_solver="arpack" if n_comps < min(out.shape) - 1 else "full")
    return out


RECIPES = {"R1": recipe_r1, "R2": recipe_r2, "R3": recipe_r3, "R4": recipe_r4, "classic": recipe_classic}


def qc_metrics(adata: AnnData) -> "object":
    """Per-cell QC table: total counts, detected genes, mitochondrial percentage (genes named ``MT-``/``mt-``)."""
    import pandas as pd

    x = get_counts(adata)
    total = np.asarray(x.sum(axis=1)).ravel()
    genes = np.asarray((x > 0).sum(axis=1)).ravel()
    mito = adata.var_names.str.upper().str.startswith("MT-")
    df = pd.DataFrame({"total_counts": total, "n_genes": genes}, index=adata.obs_names)
    if mito.any():
        mt = np.asarray(x[:, np.flatnonzero(mito)].sum(axis=1)).ravel()
        df["pct_mito"] = np.where(total > 0, 100.0 * mt / np.maximum(total, 1), 0.0)
    return df


def filter_cells_genes(adata: AnnData, *, min_genes: int = 0, max_genes: int | None = None, min_counts: int = 0,
                       max_pct_mito: float | None = None, min_cells: int = 0) -> AnnData:
    """QC filtering of cells (genes detected, counts, mito %) and genes (cells expressing); returns a copy."""
    qc = qc_metrics(adata)
    keep = (qc["n_genes"] >= min_genes) & (qc["total_counts"] >= min_counts)
    if max_genes is not None:
        keep &= qc["n_genes"] <= max_genes
    if max_pct_mito is not None and "pct_mito" in qc:
        keep &= qc["pct_mito"] <= max_pct_mito
    out = adata[keep.to_numpy()].copy()
    if min_cells > 0:
        x = get_counts(out)
        expressed = np.asarray((x > 0).sum(axis=0)).ravel()
        out = out[:, expressed >= min_cells].copy()
    if out.n_obs == 0 or out.n_vars == 0:
        raise ValueError(f"No cells or genes left after filtering ({out.n_obs} cells × {out.n_vars} genes): "
                         "loosen the QC thresholds")
    return out
