"""The engine's side of several samples: which integration a fit uses, where it is applied, what it measures.

A method says which integrations it can use (``ClusteringMethod.integrations``) and applies input-side ones in
its :meth:`~scclust_core.methods.ClusteringMethod.integrate_input` hook (the classic methods correct their PCs or
their scaled HVGs; the consensus corrects every view). A deep method's counts are never corrected: Harmony runs
on its learned embedding after training, and the final clustering is redone there (K-means with the run's K,
or Leiden when K is left empty) — documented on its card and in ``docs/methods.md`` §0.11.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from anndata import AnnData

from ..integrate import Batches, check_batches, harmony, mixing_metrics, split_warnings


class _Method(Protocol):
    """What an integration needs of a method (kept structural: this module sits below ``_base``)."""

    name: str
    kind: str
    integrations: tuple[str, ...]

__all__ = ["Integration"]


@dataclass
class Integration:
    """The integration of one fit: its name and the batches of the cells it covers (None: no batch key)."""

    name: str = "none"
    batches: Batches | None = None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def check(cls, method: _Method, adata: AnnData, batch_key: str | None,
              integration: str | None) -> "Integration":
        """Validate the batch key and the choice against the method before any work."""
        if batch_key is None:
            if integration not in (None, "none"):
                raise ValueError(f"integration {integration!r} needs a batch key: say which obs column holds the "
                                 "sample/batch of each cell")
            return cls()
        name = integration or "harmony"
        if name not in method.integrations:
            raise ValueError(f"{method.name} cannot use integration {name!r}; it can use: "
                             f"{', '.join(method.integrations)}")
        return cls(name, check_batches(adata, batch_key, integration=name))

    @property
    def active(self) -> bool:
        return self.batches is not None and self.name != "none"

    def for_cells(self, rows: np.ndarray) -> "Integration":
        """The same integration over the prepared cells (rows of the input)."""
        return Integration(self.name, self.batches.subset(np.asarray(rows)) if self.batches else None, self.notes)

    def harmony(self, z: np.ndarray, seed: int) -> np.ndarray:
        assert self.batches is not None
        return harmony(z, self.batches, seed=seed)

    def finish(self, method: _Method, z: np.ndarray, labels: np.ndarray,
               config: Any) -> tuple[np.ndarray, np.ndarray]:
        """After training: a deep method's embedding corrected with Harmony and clustered again there."""
        if not (self.active and self.name == "harmony" and method.kind == "deep"):
            return z, labels
        from ._blocks import kmeans, leiden_on_embedding

        zc = self.harmony(z, int(config.seed))
        k = config.n_clusters
        if k is not None:
            labels = kmeans(zc, int(k), n_init=10, seed=int(config.seed))[0]
            how = f"K-means (K={k})"
        else:
            labels = leiden_on_embedding(zc, n_neighbors=15, resolution=1.0, seed=int(config.seed))
            how = "Leiden (resolution 1)"
        self.notes.append(f"Harmony corrected the learned embedding for {self.batches.key}; the final clustering is "
                          f"{how} on the corrected embedding, not the method's own clustering step")
        return zc, labels

    def metrics(self, z: np.ndarray, labels: np.ndarray, truth: np.ndarray | None, seed: int) -> dict[str, float]:
        """Batch mixing of the final embedding (empty without a batch key)."""
        if self.batches is None:
            return {}
        groups = truth if truth is not None and (truth >= 0).all() else labels
        return mixing_metrics(z, self.batches, groups, seed=seed)

    def extras(self, labels: np.ndarray) -> dict[str, Any]:
        """What the run record keeps: the key, the choice, the batch names, notes and split-cluster warnings."""
        if self.batches is None:
            return {}
        out: dict[str, Any] = {"integration": {"batch_key": self.batches.key, "method": self.name,
                                               "batches": list(self.batches.names), "notes": list(self.notes)}}
        warns = split_warnings(labels, self.batches)
        if warns:
            out["batch_warnings"] = warns
        return out
