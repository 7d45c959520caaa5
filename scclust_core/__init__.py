"""scclust_core: cluster single-cell RNA-seq data with deep contrastive methods and classic baselines.

Everything the scclust app does is available here without Streamlit:

>>> import scclust_core as scc
>>> adata = scc.datasets.demo()
>>> result = scc.methods.run_method(adata, "kmeans", n_clusters=10, label_key="bulk_labels")
>>> adata.obs["kmeans"].value_counts()
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import config, device, metrics, preprocess  # noqa: E402
from . import methods, runs  # noqa: E402
from . import io, datasets  # noqa: E402
from .methods import get_method, list_methods, run_method  # noqa: E402

__all__ = ["config", "device", "metrics", "preprocess", "methods", "runs", "io", "datasets",
           "get_method", "list_methods", "run_method", "__version__"]
