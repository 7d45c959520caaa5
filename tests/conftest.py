"""Shared fixtures: small synthetic data with real cluster structure, made by the tests themselves."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

os.environ.setdefault("SCCLUST_RUNS_DIR", "/tmp/scclust-test-runs")


def make_counts(n_cells: int = 240, n_genes: int = 120, n_clusters: int = 3, seed: int = 0,
                fold: float = 5.0) -> AnnData:
    """NB counts where each cluster up-regulates its own block of marker genes (independent of io/datasets)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_cells) % n_clusters
    rng.shuffle(labels)
    base = rng.lognormal(0.0, 1.0, n_genes)
    prof = np.tile(base, (n_clusters, 1))
    block = max(3, n_genes // (2 * n_clusters))
    for c in range(n_clusters):
        prof[c, c * block:(c + 1) * block] *= fold
    lib = rng.uniform(1500, 4000, n_cells)
    mean = prof[labels] / prof[labels].sum(1, keepdims=True) * lib[:, None]
    r = 2.0
    x = rng.negative_binomial(r, r / (r + mean)).astype(np.float32)
    ad = AnnData(sp.csr_matrix(x))
    ad.obs_names = [f"cell{i:04d}" for i in range(n_cells)]
    ad.var_names = [f"Gene{i:04d}" for i in range(n_genes)]
    ad.obs["cell_type"] = pd.Categorical([f"type_{v}" for v in labels])
    return ad


@pytest.fixture(scope="session")
def _counts_session() -> AnnData:
    return make_counts()


@pytest.fixture
def counts_adata(_counts_session) -> AnnData:
    """240 cells × 120 genes, 3 well-separated clusters in obs['cell_type'] (fresh copy per test)."""
    return _counts_session.copy()


@pytest.fixture
def runs_root(tmp_path):
    return tmp_path / "runs"
