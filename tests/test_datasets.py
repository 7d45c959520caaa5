"""Tests for scclust_core.datasets: the real demo data and the synthetic generator."""
from __future__ import annotations


import numpy as np
import pytest
import scipy.sparse as sp

from scclust_core import datasets
from scclust_core import io as scio


# ------------------------------------------------------------------------------------------------
# demo
# ------------------------------------------------------------------------------------------------


def test_demo_shape_and_counts():
    adata = datasets.demo()
    assert adata.shape == (700, 765)
    assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
    assert scio.is_integer_counts(adata.X)
    assert adata.X.data.min() >= 1  # explicit zeros removed
    assert "bulk_labels" in adata.obs and adata.obs["bulk_labels"].nunique() == 10
    assert "louvain" in adata.obs
    assert not adata.obsm and not adata.varm and not adata.layers and adata.raw is None
    assert set(adata.uns) == {"source"}
    assert adata.var_names.is_unique and "CD3D" in adata.var_names


def test_demo_counts_invert_the_stored_normalisation():
    """Re-normalising the recovered counts reproduces scanpy's stored log values (3-decimal precision).

    The stored ``obs['n_counts']`` is the library size over the full original gene set, so row sums of
    these 765 genes are smaller than it; the normalisation used it as the size factor.
    """
    import scanpy as sc

    adata = datasets.demo()
    original = sc.datasets.pbmc68k_reduced()
    n_counts = adata.obs["n_counts"].to_numpy(dtype=np.float64)
    renorm = np.log1p(adata.X.toarray() / n_counts[:, None] * 1e4)
    np.testing.assert_allclose(renorm, original.raw.X.toarray(), atol=1e-3, rtol=0)
    assert np.all(np.asarray(adata.X.sum(axis=1)).ravel() <= n_counts * (1 + 1e-3))
    assert scio.describe(adata).counts_location == "X"


def test_demo_is_a_fresh_copy():
    first = datasets.demo()
    first.X.data[:] = 0
    first.obs["bulk_labels"] = "x"
    second = datasets.demo()
    assert second.X.sum() > 0 and second.obs["bulk_labels"].nunique() == 10


# ------------------------------------------------------------------------------------------------
# synthetic
# ------------------------------------------------------------------------------------------------


def test_synthetic_shapes_and_names():
    adata = datasets.synthetic(n_cells=120, n_genes=80, n_clusters=4, seed=1, mito_genes=3, label_key="truth")
    assert adata.shape == (120, 80)
    assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
    assert scio.is_integer_counts(adata.X)
    assert list(adata.var_names[:4]) == ["MT-ND1", "MT-ND2", "MT-CO1", "Gene0001"]
    assert adata.obs_names[0] == "cell0001" and adata.obs_names.is_unique
    truth = adata.obs["truth"]
    assert truth.dtype.name == "category" and list(truth.cat.categories) == [f"type_{k}" for k in range(4)]
    assert truth.value_counts().max() - truth.value_counts().min() <= 1
    assert (adata.var["marker_of"] != "none").sum() == 4 * max(3, 80 // 8)
    assert scio.describe(adata).has_mito


def test_synthetic_deterministic_and_seed_dependent():
    a = datasets.synthetic(seed=7)
    b = datasets.synthetic(seed=7)
    c = datasets.synthetic(seed=8)
    assert scio.dataset_fingerprint(a) == scio.dataset_fingerprint(b)
    assert list(a.obs["cell_type"]) == list(b.obs["cell_type"])
    assert scio.dataset_fingerprint(a)["sha256"] != scio.dataset_fingerprint(c)["sha256"]


def test_synthetic_dropout_and_dispersion():
    base = datasets.synthetic(seed=2, dispersion=0.0)
    zinb = datasets.synthetic(seed=2, dropout=0.5)
    assert zinb.X.nnz < base.X.nnz * 0.75
    lib = np.asarray(base.X.sum(axis=1)).ravel()
    assert 1200 < lib.min() and lib.max() < 4400  # Poisson noise around library_size=(1500, 4000)


def test_synthetic_invalid_arguments():
    with pytest.raises(ValueError, match="marker genes do not fit"):
        datasets.synthetic(n_genes=20, n_clusters=5, de_genes_per_cluster=10)
    with pytest.raises(ValueError, match="n_clusters"):
        datasets.synthetic(n_cells=2, n_clusters=3)
    with pytest.raises(ValueError, match="dropout"):
        datasets.synthetic(dropout=1.0)


def test_synthetic_shape_at_scale():
    """3,000 × 2,000 (the size of the benchmarks' files); speed is the bench's business, not a unit test's."""
    adata = datasets.synthetic(n_cells=3000, n_genes=2000, n_clusters=8)
    assert adata.shape == (3000, 2000)


def test_synthetic_clusters_are_recoverable():
    import scanpy as sc
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    adata = datasets.synthetic(seed=0)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.pca(adata, n_comps=20, random_state=0)
    pred = KMeans(n_clusters=3, n_init=10, random_state=0).fit_predict(adata.obsm["X_pca"])
    assert adjusted_rand_score(adata.obs["cell_type"], pred) > 0.9
