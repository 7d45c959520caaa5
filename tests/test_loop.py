"""The loop kit (methods/_loop.py), FitContext phases and lazy snapshots, and the thread choice (device.py)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from scclust_core.device import choose_threads, fit_threads, hold_threads
from scclust_core.methods._base import SNAPSHOT_CELLS, FitContext
from scclust_core.methods._loop import (EpochMeter, NonFiniteLossError, check_finite, encode_all, gather,
                                        minibatches, to_device)


# ---------------------------------------------------------------- EpochMeter
def test_meter_is_batch_weighted_and_mixes_tensors_and_floats():
    m = EpochMeter()
    m.add(3, total=torch.tensor(2.0), lr=1.0)
    m.add(1, total=torch.tensor(6.0), lr=5.0)
    assert m.means() == {"total": pytest.approx(3.0), "lr": pytest.approx(2.0)}
    assert EpochMeter().means() == {}


def test_meter_names_epoch_phase_and_component_on_nan():
    m = EpochMeter()
    m.add(2, recon=torch.tensor(1.0), contrastive=torch.tensor(float("inf")))
    with pytest.raises(NonFiniteLossError, match=r"'contrastive'.*phase 'pretrain', epoch 7") as err:
        m.means(epoch=7, phase="pretrain")
    assert isinstance(err.value, ValueError) and err.value.epoch == 7


def test_meter_keeps_values_on_their_device_without_gradients():
    w = torch.ones(3, requires_grad=True)
    m = EpochMeter()
    m.add(1, total=(w * 2).sum())
    assert not m._sums["total"].requires_grad  # detached: no graph kept alive across the epoch
    assert m.means()["total"] == pytest.approx(6.0)


def test_check_finite():
    check_finite("x", torch.ones(3))
    with pytest.raises(NonFiniteLossError, match="memberships became nan"):
        check_finite("memberships", np.array([1.0, np.nan]), epoch=2)


# ---------------------------------------------------------------- minibatches
def test_minibatches_numpy_order_equals_permutation_slices():
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    perm = rng_a.permutation(450)
    got = list(minibatches(450, 200, rng=rng_b))
    assert [len(b) for b in got] == [200, 200, 50] and got[0].dtype == np.int64
    np.testing.assert_array_equal(np.concatenate(got), perm)
    assert rng_a.random() == rng_b.random()  # the same random numbers were consumed


def test_minibatches_tail_rules():
    sizes = lambda n, **kw: [len(b) for b in minibatches(n, 200, rng=None, shuffle=False, **kw)]
    assert sizes(401, min_size=2) == [200, 201]  # a one-cell tail merges (BatchNorm)
    assert sizes(401, min_size=2, merge_small=False) == [200, 200]  # or is dropped
    assert sizes(1, min_size=2) == [1]  # nothing to merge into
    assert sizes(450, drop_last=True) == [200, 200]
    assert sizes(400) == [200, 200]
    with pytest.raises(ValueError, match="rng"):
        minibatches(10, 5, rng=None)


def test_minibatches_torch_generator_matches_randperm():
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    perm = torch.randperm(1001, generator=g1)
    got = list(minibatches(1001, 256, rng=g2))
    assert all(torch.equal(a, b) for a, b in zip(got, [perm[i:i + 256] for i in range(0, 1001, 256)]))
    assert isinstance(got[0], torch.Tensor) and len(got) == 4


# ---------------------------------------------------------------- data movement and encoding
def test_gather_and_to_device_from_host_formats():
    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    for src in (x, sp.csr_matrix(x), torch.from_numpy(x)):
        rows = gather(src, np.array([2, 0]), "cpu")
        assert rows.dtype == torch.float32 and rows.tolist() == [[6, 7, 8], [0, 1, 2]]
    assert to_device(sp.csr_matrix(x), "cpu").shape == (4, 3)


def test_encode_all_is_exact_chunked_and_restores_the_mode():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.BatchNorm1d(8), torch.nn.Dropout(0.5))
    net.train()
    x = torch.randn(37, 5)
    z = encode_all(net, x, batch=10, module=net)
    assert net.training and isinstance(z, np.ndarray) and z.shape == (37, 8)
    net.eval()
    np.testing.assert_allclose(z, net(x).detach().numpy(), atol=1e-6)
    t = encode_all(lambda b: (net(b), b.sum(1)), x.numpy(), batch=7, module=net, numpy=False)
    assert isinstance(t, tuple) and t[0].shape == (37, 8) and t[1].shape == (37,)
    encode_all(net, x, module=net, train_mode=True, restore=False)
    assert net.training


# ---------------------------------------------------------------- FitContext
class _Rec:
    def __init__(self, stop_after=None):
        self.logs, self.snaps, self.stop_after = [], [], stop_after

    def on_train_begin(self, info): ...
    def on_epoch_end(self, log, snap):
        self.logs.append(log)
        self.snaps.append(snap)

    def on_train_end(self, result): ...
    def should_stop(self):
        return self.stop_after is not None and len(self.logs) >= self.stop_after


def _ctx(n=50, every=2, stop_after=None, truth=None):
    rec = _Rec(stop_after)
    return FitContext(method="m", callback=rec, truth=truth, n_cells=n, snapshot_every=every, seed=0,
                      device="cpu"), rec


def test_phases_own_the_global_epoch_and_stop_on_cancel():
    ctx, rec = _ctx(stop_after=3)
    seen = []
    for phase, n in (("pretrain", 2), ("cluster", 5)):
        for epoch in ctx.phase(phase, n):
            seen.append((phase, epoch))
            ctx.emit(epoch, phase, {"loss": 1.0})
    assert seen == [("pretrain", 1), ("pretrain", 2), ("cluster", 3)]
    assert list(ctx.phase("more", 3)) == []


def test_lazy_embedding_only_when_a_snapshot_is_due():
    ctx, rec = _ctx(n=30, every=2, truth=np.arange(30) % 3)
    calls = []

    def emb():
        calls.append(1)
        return np.random.default_rng(0).normal(size=(30, 4))

    for epoch in ctx.phase("train", 4):
        ctx.emit(epoch, "train", {"l": 1.0}, embedding=emb, labels=lambda z: np.arange(len(z)) % 3)
    assert len(calls) == 2 and [s.epoch for s in ctx.snapshots] == [2, 4]
    assert "ari" not in rec.logs[0].metrics and rec.logs[1].metrics["ari"] == pytest.approx(1.0)


def test_large_data_views_use_only_the_subsample():
    n = SNAPSHOT_CELLS + 700
    ctx, _ = _ctx(n=n, every=1)
    assert ctx.n_sub == SNAPSHOT_CELLS and np.all(np.diff(ctx.sub_idx) > 0)
    z_sub = np.random.default_rng(1).normal(size=(ctx.n_sub, 3))
    ctx.emit(1, "train", {"l": 1.0}, embedding=lambda: z_sub, labels=lambda z: (z[:, 0] > 0).astype(int))
    ctx.emit(2, "train", {"l": 1.0}, embedding=np.zeros((n, 3)), labels=np.zeros(n, dtype=int))  # all cells
    assert [s.xy.shape for s in ctx.snapshots] == [(SNAPSHOT_CELLS, 2)] * 2
    with pytest.raises(ValueError, match="rows"):
        ctx.emit(3, "train", {"l": 1.0}, embedding=np.zeros((10, 3)), labels=np.zeros(10, dtype=int))


# ---------------------------------------------------------------- threads
def test_thread_choice_explicit_env_and_free_cores(monkeypatch):
    assert choose_threads(3) == (3, "config torch_threads")
    monkeypatch.setenv("SCCLUST_THREADS", "2")
    assert choose_threads(0) == (2, "SCCLUST_THREADS")
    monkeypatch.setenv("SCCLUST_THREADS", "zero")
    with pytest.raises(ValueError, match="SCCLUST_THREADS"):
        choose_threads(0)
    monkeypatch.delenv("SCCLUST_THREADS")
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr("scclust_core.device.busy_cores_elsewhere", lambda: 2.6)
    n, why = choose_threads(0)
    assert n == 1 and "4 cores, 2.6 busy elsewhere" in why
    monkeypatch.setattr("scclust_core.device.busy_cores_elsewhere", lambda: 9.0)
    assert choose_threads(0)[0] == 1  # never below one
    monkeypatch.setattr("scclust_core.device.busy_cores_elsewhere", lambda: None)  # no /proc: the load average
    monkeypatch.setattr("os.getloadavg", lambda: (0.4, 0.0, 0.0))
    assert choose_threads(0) == (4, "free cores: 4 cores, load 0.4")


def test_own_work_does_not_count_as_busy_elsewhere():
    import threading

    from scclust_core.device import busy_cores_elsewhere

    stop = threading.Event()

    def spin():
        while not stop.is_set():
            sum(range(1000))

    before = busy_cores_elsewhere(0.3)
    if before is None:
        pytest.skip("no /proc on this platform")
    t = threading.Thread(target=spin, daemon=True)
    t.start()
    try:
        busy = busy_cores_elsewhere(0.3)  # this process keeps one core busy meanwhile
    finally:
        stop.set()
        t.join()
    assert busy is not None and 0 <= busy < before + 0.6  # the spinning thread is this process's: not counted


def test_fit_threads_sets_holds_and_restores():
    before = torch.get_num_threads()
    with fit_threads(1, "cpu") as info:
        assert torch.get_num_threads() == 1 and info == {"n": 1, "source": "config torch_threads"}
        torch.set_num_threads(2)  # what scanpy's preprocessing does behind our back
        hold_threads(info, "cpu")
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_hold_threads_sets_the_count_even_when_torch_already_reports_it(monkeypatch):
    """``torch.get_num_threads()`` reads OpenMP's count, which scanpy's recipes reset; MKL's count (the matrix
    products) keeps the last ``set_num_threads``. After a 1-thread choice at the click and a reset to 2 by the
    recipe, torch reported 2 while its products ran on one thread (measured: 20 products of 1,500² took 3.2 s,
    1.6 s after ``set_num_threads(2)``). So the count is always set again, which sets both."""
    calls: list[int] = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), real(n)))
    n = torch.get_num_threads()
    hold_threads({"n": n, "source": "config torch_threads"}, "cpu")
    assert calls == [n]


def test_training_runs_with_the_chosen_threads_after_scanpy_preprocessing(counts_adata):
    """The explicit thread count must still hold inside ``train`` (scanpy's recipes reset it)."""
    from scclust_core.methods import get_method

    seen = []
    m = get_method("kmeans")
    orig = type(m).train

    def spy(self, *a, **k):
        seen.append(torch.get_num_threads())
        return orig(self, *a, **k)

    type(m).train = spy
    try:
        res = m.fit(counts_adata, m.default_config("tiny", n_clusters=3, torch_threads=1))
    finally:
        type(m).train = orig
    assert seen == [1] and res.extras["threads"] == {"n": 1, "source": "config torch_threads"}


def test_free_core_thread_count_is_chosen_again_after_preprocessing(monkeypatch):
    """A count taken from the free cores is measured again when training starts (the app's page is busy at the
    click on Start and idle a second later); an explicit count is never changed."""
    monkeypatch.delenv("SCCLUST_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    before = torch.get_num_threads()
    monkeypatch.setattr("scclust_core.device.busy_cores_elsewhere", lambda: 1.8)  # busy at the click
    with fit_threads(0, "cpu") as info:
        assert info["n"] == 1 and info["auto"]
        monkeypatch.setattr("scclust_core.device.busy_cores_elsewhere", lambda: 0.1)  # idle a moment later
        hold_threads(info, "cpu")
        assert info["n"] == 2 and torch.get_num_threads() == 2 and "after preprocessing" in info["source"]
    assert torch.get_num_threads() == before
    with fit_threads(1, "cpu") as info:
        hold_threads(info, "cpu")
        assert info == {"n": 1, "source": "config torch_threads"} and torch.get_num_threads() == 1


def test_live_silhouette_uses_a_random_subset_not_the_first_cells():
    """Files are often sorted by cell type: the live silhouette must not be computed on the first cells only."""
    from sklearn.metrics import silhouette_score

    from scclust_core.methods._base import SILHOUETTE_CELLS

    n = 4 * SILHOUETTE_CELLS
    rng = np.random.default_rng(0)
    lab = np.repeat([0, 1, 2, 3], n // 4)
    centres = np.array([[0, 0], [20, 0], [0, 1], [1, 0]], dtype=float)  # first half: far apart; second: overlapping
    z = (centres[lab] + rng.normal(size=(n, 2))).astype(np.float32)
    ctx, rec = _ctx(n=n)
    ctx.emit(1, "train", {"l": 1.0}, embedding=z, labels=lab, snapshot=True)
    live = rec.logs[-1].metrics["silhouette"]
    full = silhouette_score(z, lab)
    first = silhouette_score(z[:2 * SILHOUETTE_CELLS], lab[:2 * SILHOUETTE_CELLS])  # two far-apart types only
    assert abs(live - full) < 0.05 < abs(first - full), (live, full, first)
