"""Losses of the deep methods as pure torch functions, one module per family (docs/methods.md §0.3–§0.5).

- :mod:`.contrastive`: NT-Xent, InfoNCE, scGPCL's instance and prototypical losses, scSAMAC's cluster-level loss,
  CICL's cluster-aware losses;
- :mod:`.counts`: NB / ZINB likelihoods and the DCA output activations;
- :mod:`.dec`: DEC soft assignment, target distribution, KL, soft k-means, 1-D Wasserstein, delta-label;
- :mod:`.fuzzy`: scAMAC's adaptive fuzzy k-means weights, memberships and closed-form centre update.

Shapes: ``B`` cells in a minibatch, ``D`` embedding dims, ``G`` genes, ``K`` clusters. Everything is
re-exported here, so ``from scclust_core.losses import nt_xent`` works.
"""
from __future__ import annotations

from .contrastive import (cluster_aware_loss, cluster_aware_loss_paper, cluster_level_loss, info_nce, nt_xent,
                          prototype_loss, scgpcl_instance_loss)
from .counts import EPS, count_nll, disp_activation, mean_activation, nb_nll, zinb_nll
from .dec import cluster_kl, delta_label, soft_kmeans_loss, student_t_q, target_distribution, wasserstein_1d
from .fuzzy import fkm_centres, fkm_memberships, fkm_weights, fuzzy_update

__all__ = [
    "nt_xent", "info_nce", "scgpcl_instance_loss", "prototype_loss", "cluster_level_loss", "cluster_aware_loss",
    "cluster_aware_loss_paper",
    "EPS", "mean_activation", "disp_activation", "nb_nll", "zinb_nll", "count_nll",
    "student_t_q", "target_distribution", "cluster_kl", "soft_kmeans_loss", "wasserstein_1d", "delta_label",
    "fkm_weights", "fkm_memberships", "fkm_centres", "fuzzy_update",
]
