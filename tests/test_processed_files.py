"""Processed .h5ad files (what most shared files look like): counts found in a layer or .raw, or recovered
exactly from log-normalised values; log-normalised data clustered by the methods that can."""
from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from helpers import synthetic_counts
from scclust_core import io as scio
from scclust_core.io.matrices import describe_matrices, pick_matrix, recover_counts, use_matrix
from scclust_core.methods import run_method


@pytest.fixture()
def counts() -> ad.AnnData:
    return synthetic_counts(n_cells=200, n_genes=80, k=3, seed=4, strength=6.0)


def _lognorm(c: ad.AnnData, scale: float = 1e4) -> sp.csr_matrix:
    x = sp.csr_matrix(c.X, dtype=np.float64)
    size = np.asarray(x.sum(axis=1)).ravel()
    return sp.csr_matrix(np.round(np.log1p(sp.diags(scale / size) @ x).toarray(), 3))


def _scaled(m) -> np.ndarray:
    d = m.toarray()
    return (d - d.mean(0)) / (d.std(0) + 1e-9)


def test_scaled_x_with_log_normalised_raw_recovers_the_counts(counts, tmp_path) -> None:
    """scanpy's pbmc68k_reduced layout: X scaled, .raw log-normalised, library sizes in obs['n_counts']."""
    ln = _lognorm(counts)
    src = ad.AnnData(_scaled(ln), obs=counts.obs.assign(n_counts=np.asarray(counts.X.sum(axis=1)).ravel()))
    src.var_names = counts.var_names
    src.raw = ad.AnnData(ln, obs=src.obs, var=src.var)
    path = tmp_path / "processed.h5ad"
    src.write_h5ad(path)
    got = scio.read(path)
    np.testing.assert_array_equal(got.X.toarray(), counts.X.toarray())
    assert "recovered exactly" in " ".join(scio.read_report(got).notes)


def test_counts_in_a_layer_are_used(counts, tmp_path) -> None:
    src = ad.AnnData(_lognorm(counts), obs=counts.obs)
    src.layers["raw_counts"] = counts.X
    src.write_h5ad(tmp_path / "layer.h5ad")
    got = scio.read(tmp_path / "layer.h5ad")
    np.testing.assert_array_equal(got.X.toarray(), counts.X.toarray())
    assert "layers['raw_counts']" in " ".join(scio.read_report(got).notes)


def test_log_normalised_only_runs_with_classic_methods_and_recommend(counts, tmp_path) -> None:
    src = ad.AnnData(_lognorm(counts) * 1.0001, obs=counts.obs)  # no library sizes: not recoverable
    src.write_h5ad(tmp_path / "lognorm.h5ad")
    got = scio.read(tmp_path / "lognorm.h5ad")
    assert "deep methods need the raw counts" in " ".join(scio.read_report(got).notes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = run_method(got, "recommend", n_clusters=3, hvg_sizes=[40, 60], pcs=[10])
        assert res.metrics is not None and got.obs["recommend"].nunique() == 3
        with pytest.raises(ValueError, match="raw integer counts"):
            run_method(got, "contrastive_sc", preset="tiny", n_clusters=3)


def test_the_matrices_of_a_file_are_described_and_can_be_chosen(counts) -> None:
    src = ad.AnnData(_scaled(_lognorm(counts)), obs=counts.obs)
    src.layers["counts"] = counts.X
    kinds = {m.where: m.kind for m in describe_matrices(src)}
    assert kinds == {"X": "scaled", "layers/counts": "counts"}
    assert use_matrix(src, "layers/counts").X.sum() == counts.X.sum()
    with pytest.raises(ValueError, match="No matrix"):
        use_matrix(src, "layers/nope")
    only_scaled = ad.AnnData(_scaled(_lognorm(counts)), obs=counts.obs)
    with pytest.raises(ValueError, match="No matrix of this file holds counts"):
        pick_matrix(only_scaled)
    assert recover_counts(_lognorm(counts) * 1.01, counts.obs) is None
