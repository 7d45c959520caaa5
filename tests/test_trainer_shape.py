"""One trainer shape for every deep method (methods/_trainer.py): each method that trains a network has a
``<Name>Trainer`` that its ``train`` drives, and the engine calls a trainer in the documented order."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from helpers import synthetic_counts
from scclust_core.config import MethodConfig
from scclust_core.methods import Callback, FitContext, get_method, list_methods
from scclust_core.methods import _trainer
from scclust_core.methods._trainer import DeepMethod, Phase, Report, Trainer

NETWORK_METHODS = [n for n in list_methods() if get_method(n).deep and get_method(n).trains_network]


def test_the_five_deep_methods_train_networks():
    assert set(NETWORK_METHODS) >= {"cicl", "contrastive_sc", "scsamac", "scamac", "scgpcl"}


@pytest.mark.parametrize("name", NETWORK_METHODS)
def test_method_has_its_trainer_and_train_is_the_engines(name):
    m = get_method(name)
    cls = type(m)
    assert isinstance(m, DeepMethod), f"{name} trains a network: subclass DeepMethod"
    assert issubclass(m.trainer_cls, Trainer) and m.trainer_cls is not Trainer
    assert m.trainer_cls.__name__ == cls.__name__ + "Trainer" and m.trainer_cls.__module__ == cls.__module__
    assert cls.train is DeepMethod.train, f"{name} overrides train(): put its training in {m.trainer_cls.__name__}"


@pytest.fixture(scope="module")
def tiny_data():
    return synthetic_counts(n_cells=150, n_genes=60, k=3, seed=0, strength=6.0)


@pytest.mark.parametrize("name", NETWORK_METHODS)
def test_fit_drives_the_methods_trainer_through_its_phases(name, tiny_data, monkeypatch):
    """``fit`` → ``train`` → :func:`drive` with a ``trainer_cls`` instance; the history's phases are its phases."""
    m = get_method(name)
    seen: list[tuple[Trainer, list[str]]] = []
    real = _trainer.drive

    def spy(trainer, ctx):
        seen.append((trainer, [p.name for p in trainer.phases()]))
        return real(trainer, ctx)

    monkeypatch.setattr(_trainer, "drive", spy)
    cfg = m.default_config("tiny", n_clusters=3, device="cpu", torch_threads=1, snapshot_every=0)
    res = m.fit(tiny_data, cfg)
    assert len(seen) == 1 and type(seen[0][0]) is m.trainer_cls
    assert res.history and {h.phase for h in res.history} <= set(seen[0][1]) | {"hvg_search"}


# ---------------------------------------------------------------- the engine's order, with a fake trainer
@dataclass
class _Cfg(MethodConfig):
    pass


class _Rec(Callback):
    def __init__(self, stop_after: int | None = None):
        self.logs: list = []
        self.stop_after = stop_after

    def on_epoch_end(self, log, snapshot):
        self.logs.append(log)

    def should_stop(self):
        return self.stop_after is not None and len(self.logs) >= self.stop_after


class _FakeTrainer(Trainer[_Cfg]):
    """Records every call; phase ``b`` ends before its 2nd epoch (a tol stop), ``c`` after its 1st (``last``)."""

    calls: list[str] = []

    def __init__(self, data, config, ctx):
        super().__init__(data, config, ctx)
        self.calls.append("init")
        self.n = ctx.n_cells
        self.z = np.random.default_rng(0).normal(size=(self.n, 3))

    def initial_view(self):
        self.calls.append("initial_view")
        return super().initial_view()

    def phases(self):
        self.calls.append("phases")
        return [Phase("a", 2, self._run("a"), start=lambda: self.calls.append("start:a")),
                Phase("b", 3, self._run("b", none_at=2), start=lambda: self.calls.append("start:b")),
                Phase("c", 2, self._run("c", last_at=1))]

    def _run(self, name, none_at=None, last_at=None):
        count = [0]

        def run(epoch):
            count[0] += 1
            self.calls.append(f"run:{name}:{epoch}")
            if count[0] == none_at:
                return None
            labels = np.arange(self.n) % 2 if name == "c" else None  # c brings its own labels
            return Report({"loss": float(epoch)}, labels=labels, last=count[0] == last_at)
        return run

    def live_embedding(self):
        self.calls.append("live_embedding")
        return self.z

    def live_labels(self, z):
        self.calls.append("live_labels")
        return (z[:, 0] > 0).astype(int)

    def embedding(self):
        self.calls.append("embedding")
        return self.z.astype(np.float32)

    def cluster(self, z):
        self.calls.append("cluster")
        return np.zeros(len(z), dtype=np.int64)

    def extras(self):
        self.calls.append("extras")
        return {"done": True}


def _ctx(stop_after=None, every=1):
    return FitContext(method="fake", callback=_Rec(stop_after), truth=None, n_cells=20, snapshot_every=every,
                      seed=0, device="cpu")


def test_engine_calls_in_the_documented_order():
    _FakeTrainer.calls = []
    ctx = _ctx(every=2)
    z, labels, extras = _trainer.drive(_FakeTrainer(None, _Cfg(), ctx), ctx)
    assert _FakeTrainer.calls == [
        "init", "initial_view", "live_embedding", "live_labels", "phases",
        "start:a", "run:a:1", "run:a:2", "live_embedding", "live_labels",  # epoch 2: a snapshot is due
        "start:b", "run:b:3", "run:b:4",  # None: phase b ends before epoch 4 is reported
        "run:c:5",  # no start; ``last`` ends phase c after one epoch; its own labels, so no live_labels call
        "embedding", "cluster", "extras"]
    assert [(h.epoch, h.phase) for h in ctx.history] == [(1, "a"), (2, "a"), (3, "b"), (5, "c")]
    assert [s.epoch for s in ctx.snapshots] == [0, 2] and extras == {"done": True}
    assert z.shape == (20, 3) and labels.shape == (20,)


def test_a_cancel_skips_the_remaining_phases_but_still_gives_a_result():
    _FakeTrainer.calls = []
    ctx = _ctx(stop_after=1, every=0)
    _trainer.drive(_FakeTrainer(None, _Cfg(), ctx), ctx)
    assert _FakeTrainer.calls[-6:] == ["phases", "start:a", "run:a:1", "embedding", "cluster", "extras"]
    assert [h.epoch for h in ctx.history] == [1]


def test_deep_method_train_builds_its_trainer_and_drives_it():
    class _Fake(DeepMethod[_Cfg]):
        trainer_cls = _FakeTrainer

        def prepare(self, adata, config):
            raise NotImplementedError

    _FakeTrainer.calls = []
    ctx = _ctx()
    z, labels, extras = _Fake().train(None, _Cfg(), ctx)
    assert _Fake.Config is _Cfg and _FakeTrainer.calls[0] == "init" and _FakeTrainer.calls[-1] == "extras"
    assert extras == {"done": True} and len(ctx.history) == 4
