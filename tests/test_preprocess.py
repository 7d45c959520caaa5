from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from anndata import AnnData

from scclust_core import preprocess as pp


def _assert_common(out, src):
    assert out.X.dtype == np.float32 and np.isfinite(out.X).all()
    counts = out.layers["counts"]
    assert pp.is_integer_matrix(counts)
    # counts are the raw counts of the same cells and genes
    idx = out.obs["cell_index"].to_numpy()
    genes = [src.var_names.get_loc(g) for g in out.var_names]
    np.testing.assert_array_equal(counts.toarray(), src.X[idx][:, genes].toarray())
    assert "size_factors" in out.obs and (out.obs["size_factors"] > 0).all()


def test_r1_scaled_zero_mean_unit_var(counts_adata):
    out = pp.recipe_r1(counts_adata)
    _assert_common(out, counts_adata)
    np.testing.assert_allclose(out.X.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(out.X.std(0, ddof=1), 1, atol=1e-3)
    # size factors = library / median library
    lib = np.asarray(counts_adata.X.sum(1)).ravel()
    np.testing.assert_allclose(out.obs["size_factors"], lib / np.median(lib), rtol=1e-5)


def test_r2_hvg_count_and_input_untouched(counts_adata):
    before = counts_adata.X.copy()
    out = pp.recipe_r2(counts_adata, n_top_genes=40)
    assert out.n_vars == 40
    _assert_common(out, counts_adata)
    assert (counts_adata.X != before).nnz == 0


def test_r3_keeps_top_variance_genes(counts_adata):
    out = pp.recipe_r3(counts_adata, hvg_frac=0.25)
    assert out.n_vars == 30
    x = counts_adata.X.toarray()
    top = set(counts_adata.var_names[np.argsort(x.var(0))[::-1][:30]])
    assert set(out.var_names) == top
    _assert_common(out, counts_adata)
    lib_kept = np.asarray(out.layers["counts"].sum(1)).ravel()
    np.testing.assert_allclose(out.obs["size_factors"], lib_kept / np.median(lib_kept), rtol=1e-5)


def test_r4_not_scaled_non_negative(counts_adata):
    out = pp.recipe_r4(counts_adata, n_top_genes=50)
    assert out.n_vars == 50 and out.X.min() >= 0
    _assert_common(out, counts_adata)


def test_classic_has_pca_and_clip(counts_adata):
    out = pp.recipe_classic(counts_adata, n_top_genes=60, n_pcs=20)
    assert out.obsm["X_pca"].shape == (counts_adata.n_obs, 20)
    assert out.X.max() <= 10 and out.n_vars == 60


def test_empty_cells_and_genes_are_dropped_and_tracked(counts_adata):
    x = counts_adata.X.toarray()
    x[5] = 0
    x[:, 7] = 0
    ad = AnnData(sp.csr_matrix(x), obs=counts_adata.obs.copy(), var=counts_adata.var.copy())
    out = pp.recipe_r1(ad)
    assert 5 not in out.obs["cell_index"].to_numpy() and out.n_obs == ad.n_obs - 1
    assert ad.var_names[7] not in out.var_names


def test_non_counts_raise_clear_error(counts_adata):
    ad = counts_adata.copy()
    ad.X = ad.X.multiply(0.37).tocsr()
    with pytest.raises(ValueError, match="raw integer counts"):
        pp.recipe_r1(ad)
    ad.X = ad.X.log1p()  # log-normalised-looking values
    with pytest.warns(UserWarning, match="already normalised and log-transformed"):
        out = pp.recipe_classic(ad, n_top_genes=50, n_pcs=10)
    assert out.uns["input_was_counts"] is False
    assert "taken as already normalised" in out.uns["input_warnings"][0]  # kept for the run's warnings
    ad.X = ad.X.multiply(100.0).tocsr()  # normalised but not logged (max in the hundreds): refused
    with pytest.raises(ValueError, match="neither raw counts .* nor log-scale"):
        pp.recipe_classic(ad, n_top_genes=50, n_pcs=10)
    ad.X = ad.X.multiply(-1.0).tocsr()  # scaled / negative: refused
    with pytest.raises(ValueError, match="negative"):
        pp.recipe_classic(ad, n_top_genes=50, n_pcs=10)


def test_lognormalised_input_keeps_sparse_and_refuses_cpm(counts_adata):
    ad = counts_adata.copy()
    ad.X = ad.X.multiply(0.37).tocsr().log1p()
    x, msg = pp.lognormalised_input(ad, "test")
    assert sp.issparse(x) and x.dtype == np.float32 and "normalisation and log1p were skipped" in msg
    cpm = counts_adata.copy()
    cpm.X = cpm.X.multiply(1e6 / np.asarray(cpm.X.sum(axis=1))).tocsr()  # CPM: max in the thousands
    with pytest.raises(ValueError, match="apply log1p"):
        pp.lognormalised_input(cpm, "test")


def test_no_shared_gene_is_a_clear_error():
    import anndata

    x = sp.csr_matrix(np.eye(12, 10, dtype=np.float32) * 3)
    with pytest.raises(ValueError, match="No gene is detected in two or more"):
        pp.recipe_r1(anndata.AnnData(x))


def test_counts_found_in_layer(counts_adata):
    ad = counts_adata.copy()
    ad.layers["counts"] = ad.X.copy()
    ad.X = ad.X.multiply(0.5).tocsr()
    assert pp.is_integer_matrix(pp.get_counts(ad))


def test_all_zero_data_raises():
    ad = AnnData(sp.csr_matrix((10, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="No cells or genes left"):
        pp.recipe_r1(ad)


def test_qc_and_filter(counts_adata):
    ad = counts_adata.copy()
    ad.var_names = ["MT-" + g if i < 3 else g for i, g in enumerate(ad.var_names)]
    qc = pp.qc_metrics(ad)
    assert {"total_counts", "n_genes", "pct_mito"} <= set(qc.columns)
    assert ((qc["pct_mito"] >= 0) & (qc["pct_mito"] <= 100)).all()
    thr = float(np.median(qc["n_genes"]))
    out = pp.filter_cells_genes(ad, min_genes=thr)
    assert out.n_obs == int((qc["n_genes"] >= thr).sum())
    with pytest.raises(ValueError, match="loosen"):
        pp.filter_cells_genes(ad, min_genes=10**6)


def _dropout_genes_data(seed=0):
    """400 cells: 30 'marker' genes (zero in 80 % of cells, high when on), 170 ubiquitous low genes, 5 rare ones."""
    rng = np.random.default_rng(seed)
    n = 400
    on = rng.random((n, 30)) < 0.2
    markers = np.where(on, rng.poisson(20.0, (n, 30)), 0)
    ubiquitous = rng.poisson(1.0, (n, 170))
    rare = np.zeros((n, 5))
    rare[:3] = 50  # detected in 3 cells only: never eligible (atleast = 10)
    x = np.hstack([ubiquitous[:, :100], markers, ubiquitous[:, 100:], rare]).astype(np.float32)
    return AnnData(sp.csr_matrix(x)), np.arange(100, 130), np.arange(300, 305)


def test_dropout_gene_selection_prefers_high_dropout_genes():
    ad, marker_idx, rare_idx = _dropout_genes_data()
    keep = pp.dropout_gene_selection(ad.X, 30)
    assert keep.dtype.kind == "i" and list(keep) == sorted(set(keep)) and len(keep) == 30
    np.testing.assert_array_equal(keep, marker_idx)
    more = pp.dropout_gene_selection(ad.X, 60)
    assert len(more) == 60 and set(marker_idx) <= set(more) and not set(rare_idx) & set(more)
    # fewer eligible genes than asked: all eligible genes, never the rare ones
    allg = pp.dropout_gene_selection(ad.X, 250)
    assert len(allg) == 200 and not set(rare_idx) & set(allg)
    with pytest.raises(ValueError, match="positive"):
        pp.dropout_gene_selection(ad.X, 0)


def test_r1_select_genes_before_size_factors():
    ad, marker_idx, _ = _dropout_genes_data(1)
    ad.var_names = [f"g{i}" for i in range(ad.n_vars)]
    out = pp.recipe_r1(ad, select_genes=30)
    assert out.n_vars == 30 and list(out.var_names) == [f"g{i}" for i in marker_idx]
    _assert_common(out, ad)
    lib = np.asarray(out.layers["counts"].sum(1)).ravel()  # size factors from the kept genes (the script's order)
    np.testing.assert_allclose(out.obs["size_factors"], lib / np.median(lib), rtol=1e-5)
    assert pp.recipe_r1(ad, select_genes=5000).n_vars == ad.n_vars  # no-op when there are fewer genes
