"""One trainer shape for every deep method: a :class:`Trainer` that the engine drives in a fixed order.

Every method that trains a network subclasses :class:`DeepMethod` and names its ``trainer_cls``; the method
class keeps what the app and the runs see (config, recipe, ``prepare``, ``planned_epochs``, card, cost), the
trainer keeps the algorithm. :func:`drive` (``DeepMethod.train``) calls, always in this order:

1. ``trainer = trainer_cls(data, config, ctx)`` builds what the training needs: tensors on the device, networks,
   optimisers, seeded generators. It may also run a label-free preliminary search and report its epochs
   through ``ctx`` (the training's epochs then continue the count).
2. ``trainer.initial_view()`` → ``ctx.initial(embedding, labels)``: the snapshot before training (None: none).
3. ``for phase in trainer.phases()`` (a list of :class:`Phase`, in order; the remaining phases are skipped once a
   cancel is requested):

   - ``phase.start()`` (if any): what needs the previous phase, e.g. centres or K from the pretrained latent and
     the phase's optimiser;
   - for every epoch of ``ctx.phase(phase.name, phase.epochs)``: ``report = phase.run(epoch)``. ``None`` ends
     the phase *before* this epoch is reported (a tolerance met at the start of the epoch, or a cancel inside
     it); otherwise the engine calls ``ctx.emit`` with the :class:`Report`, using the trainer's lazy, display-only
     ``live_embedding`` / ``live_labels`` where the report brings no embedding / labels of its own. The phase
     ends after an epoch whose report says ``last`` (an early stop) or when ``emit`` reports a cancel.
4. ``z = trainer.embedding()`` (all cells), ``labels = trainer.cluster(z)`` (the result), ``trainer.extras()``.

Live views never feed back into training (they are computed only when a snapshot is due, from state the training
does not read or from generators of their own), so the snapshot schedule never changes a result.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar, Generic, Mapping, Sequence

import numpy as np
import torch

from ._base import ClusteringMethod, ConfigT, EmbeddingArg, FitContext, LabelsArg
from ._types import Prepared

__all__ = ["Trainer", "Phase", "Report", "DeepMethod", "drive"]


@dataclass
class Report:
    """What one epoch hands the engine for ``ctx.emit``.

    ``embedding`` / ``labels`` left None fall back to the trainer's lazy live views; a method that has the
    current clustering of every epoch anyway (pseudo-labels, argmax q) passes it, so display metrics follow
    every epoch. ``snapshot`` overrides the schedule; ``last`` ends the phase after this epoch (early stop).
    """

    losses: Mapping[str, float]
    embedding: EmbeddingArg = None
    labels: LabelsArg = None
    metrics: Mapping[str, float] | None = None
    snapshot: bool | None = None
    last: bool = False


@dataclass(frozen=True)
class Phase:
    """One training phase: ``epochs`` calls of ``run(global_epoch)``, after ``start()``."""

    name: str
    epochs: int
    run: Callable[[int], Report | None]
    start: Callable[[], None] | None = None


class Trainer(ABC, Generic[ConfigT]):
    """Model, optimisers, tensors and random streams of one fit, with the calls :func:`drive` makes.

    The base keeps ``cfg`` (the method's config), ``ctx`` (the :class:`FitContext`) and ``dev`` (the torch
    device); subclasses build the rest in ``__init__``.
    """

    def __init__(self, data: Prepared, config: ConfigT, ctx: FitContext):
        self.cfg = config
        self.ctx = ctx
        self.dev = torch.device(ctx.device)

    def initial_view(self) -> tuple[EmbeddingArg, LabelsArg] | None:
        """Embedding and labels of the snapshot before training (default: the live views); None for none."""
        return self.live_embedding, self.live_labels

    @abstractmethod
    def phases(self) -> Sequence[Phase]:
        """The training phases in order (building the list must not train or draw random numbers)."""

    @abstractmethod
    def live_embedding(self) -> np.ndarray:
        """Display-only embedding now (all cells or the ``ctx.sub_idx`` rows); called only when a snapshot is due."""

    def live_labels(self, z: np.ndarray) -> np.ndarray:
        """Display-only labels of a live embedding ``z``; needed unless every report brings its labels."""
        raise NotImplementedError(f"{type(self).__name__} reports its labels with every epoch")

    @abstractmethod
    def embedding(self) -> np.ndarray:
        """The result embedding of all prepared cells (after the last phase, or after a cancel)."""

    @abstractmethod
    def cluster(self, z: np.ndarray) -> np.ndarray:
        """The result labels of all cells for the embedding ``z`` that :meth:`embedding` just returned."""

    def extras(self) -> dict:
        """What the result reports besides embedding and labels (``MethodResult.extras``)."""
        return {}


def drive(trainer: Trainer, ctx: FitContext) -> tuple[np.ndarray, np.ndarray, dict]:
    """Run a trainer in the documented order (module docstring); returns ``(embedding, labels, extras)``."""
    view = trainer.initial_view()
    if view is not None:
        ctx.initial(*view, epoch=ctx.epoch)
    for phase in trainer.phases():
        if ctx.stop_requested:
            break
        if phase.start is not None:
            phase.start()
        _run_phase(trainer, phase, ctx)
    z = trainer.embedding()
    return z, trainer.cluster(z), trainer.extras()


def _run_phase(trainer: Trainer, phase: Phase, ctx: FitContext) -> None:
    for epoch in ctx.phase(phase.name, phase.epochs):
        report = phase.run(epoch)
        if report is None:
            return
        cancel = ctx.emit(epoch, phase.name, report.losses,
                          embedding=trainer.live_embedding if report.embedding is None else report.embedding,
                          labels=trainer.live_labels if report.labels is None else report.labels,
                          extra_metrics=report.metrics, snapshot=report.snapshot)
        if cancel or report.last:
            return


class DeepMethod(ClusteringMethod[ConfigT]):
    """A method that trains a network: ``train`` builds ``trainer_cls`` and drives it (:func:`drive`)."""

    trainer_cls: ClassVar[type[Trainer]]

    def train(self, data: Prepared, config: ConfigT, ctx: FitContext) -> tuple[np.ndarray, np.ndarray, dict]:
        return drive(self.trainer_cls(data, config, ctx), ctx)
