"""Test data helpers shared by several test files (importable as ``tests.helpers`` or ``helpers``)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData


def synthetic_counts(n_cells: int = 150, n_genes: int = 60, k: int = 3, seed: int = 0, strength: float = 5.0) -> AnnData:
    """NB counts with per-cluster up-regulated marker blocks (CSR float32 integers, categorical labels)."""
    rng = np.random.default_rng(seed)
    lab = np.arange(n_cells) % k
    rng.shuffle(lab)
    mu = np.tile(rng.gamma(2.0, 0.5, n_genes), (n_cells, 1))
    block = n_genes // (2 * k)
    for c in range(k):
        mu[lab == c, c * block:(c + 1) * block] *= strength
    mu *= rng.lognormal(0.0, 0.3, n_cells)[:, None]
    x = rng.negative_binomial(5.0, 5.0 / (5.0 + mu)).astype(np.float32)
    obs = pd.DataFrame({"cell_type": pd.Categorical([f"type{c}" for c in lab])},
                       index=[f"cell{i}" for i in range(n_cells)])
    ad = AnnData(sp.csr_matrix(x), obs=obs)
    ad.var_names = [f"gene{i}" for i in range(n_genes)]
    return ad
