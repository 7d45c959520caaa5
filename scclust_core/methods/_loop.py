"""The loop kit: the few pieces every training loop repeats, so a method's ``train`` reads as its algorithm.

A kit, not a framework: the engine (:mod:`._trainer`) runs the phases and epochs; a trainer's per-epoch
functions call these helpers where they would otherwise hand-write them.

- :class:`EpochMeter` — batch-weighted loss components kept **on the device** (no ``.item()`` per batch, so a
  GPU never waits for the host inside the inner loop); one host sync per epoch in :meth:`EpochMeter.means`,
  which raises :class:`NonFiniteLossError` naming the epoch, phase and component.
- :func:`minibatches` — index arrays of a (shuffled) pass over the cells, reproducing the orders the methods
  used before (``numpy`` permutation, or ``torch.randperm`` with a torch generator).
- :func:`gather` — rows of a host or device matrix on the training device (pinned memory on CUDA).
- :func:`encode_all` — chunked, ``no_grad`` pass over all cells with the module's train/eval mode set and
  restored.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterator, overload

import numpy as np
import torch

__all__ = ["NonFiniteLossError", "EpochMeter", "minibatches", "gather", "to_device", "encode_all",
           "check_finite"]

Array = Any  # numpy array, torch tensor or scipy sparse matrix (rows are indexable)


class NonFiniteLossError(ValueError):
    """A loss (or another quantity the training needs) became NaN or infinite.

    A ``ValueError`` so that the UI and CLI show the message instead of a traceback: divergence is a property of
    the data + settings (too high a learning rate, cells with no counts), not a bug.
    """

    def __init__(self, what: str, value: float, *, epoch: int | None = None, phase: str | None = None):
        where = []
        if phase:
            where.append(f"phase {phase!r}")
        if epoch is not None:
            where.append(f"epoch {epoch}")
        self.what, self.value, self.epoch, self.phase = what, value, epoch, phase
        super().__init__(
            f"{what} became {value} ({', '.join(where) or 'during training'}): the training diverged. "
            "Try a lower learning rate, another seed, or check the input for cells or genes without counts.")


def check_finite(name: str, value: torch.Tensor | np.ndarray | float, *, epoch: int | None = None,
                 phase: str | None = None) -> None:
    """Raise :class:`NonFiniteLossError` when ``value`` holds a NaN/inf (one host sync for a tensor)."""
    if isinstance(value, torch.Tensor):
        ok = bool(torch.isfinite(value).all())
        bad = float("nan") if ok else float(value[~torch.isfinite(value)].flatten()[0])
    else:
        arr = np.asarray(value)
        ok = bool(np.isfinite(arr).all())
        bad = float("nan") if ok else float(arr[~np.isfinite(arr)].flat[0])
    if not ok:
        raise NonFiniteLossError(name, bad, epoch=epoch, phase=phase)


class EpochMeter:
    """Batch-weighted means of named loss components over one epoch.

    ``add(n, total=loss, zinb=l_zinb)`` accumulates ``n × value`` per component on the value's device (tensors
    are detached; floats are accepted too). Pass ``n = 1`` for the plain mean over batches, ``n = len(batch)``
    for the mean over cells. :meth:`means` does one host transfer for all components.
    """

    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor | float] = {}
        self._weights: dict[str, float] = {}

    def add(self, n: int | float, **components: torch.Tensor | float) -> None:
        for key, value in components.items():
            if isinstance(value, torch.Tensor):
                v: torch.Tensor | float = value.detach().to(torch.float64) * float(n)
            else:
                v = float(value) * float(n)
            prev = self._sums.get(key)
            self._sums[key] = v if prev is None else prev + v  # type: ignore[operator]
            self._weights[key] = self._weights.get(key, 0.0) + float(n)

    def __len__(self) -> int:
        return len(self._sums)

    def means(self, *, epoch: int | None = None, phase: str | None = None) -> dict[str, float]:
        """Mean of every component (one host sync); raises :class:`NonFiniteLossError` on NaN/inf."""
        keys = list(self._sums)
        tensors = [k for k in keys if isinstance(self._sums[k], torch.Tensor)]
        values: dict[str, float] = {k: float(self._sums[k]) for k in keys if k not in tensors}  # type: ignore[arg-type]
        if tensors:
            host = torch.stack([self._sums[k].reshape(()) for k in tensors]).cpu().tolist()  # type: ignore[union-attr]
            values.update(zip(tensors, host))
        out = {k: values[k] / self._weights[k] if self._weights[k] else float("nan") for k in keys}
        for k in keys:  # declaration order: the first bad component is named
            if not math.isfinite(out[k]):
                raise NonFiniteLossError(f"The loss component {k!r}", out[k], epoch=epoch, phase=phase)
        return out


@overload
def minibatches(n: int, batch_size: int, *, rng: np.random.Generator | None, shuffle: bool = ...,
                drop_last: bool = ..., min_size: int = ..., merge_small: bool = ...,
                device: None = ...) -> Iterator[np.ndarray]: ...


@overload
def minibatches(n: int, batch_size: int, *, rng: torch.Generator, shuffle: bool = ..., drop_last: bool = ...,
                min_size: int = ..., merge_small: bool = ...,
                device: torch.device | str | None = ...) -> Iterator[torch.Tensor]: ...


@overload
def minibatches(n: int, batch_size: int, *, rng: None, shuffle: bool = ..., drop_last: bool = ...,
                min_size: int = ..., merge_small: bool = ...,
                device: torch.device | str = ...) -> Iterator[torch.Tensor]: ...


def minibatches(n, batch_size, *, rng, shuffle=True, drop_last=False, min_size=1, merge_small=True,
                device=None):
    """Consecutive slices of one pass over ``n`` cells: ``order[0:B], order[B:2B], …``.

    ``order`` is ``rng.permutation(n)`` for a numpy generator, ``torch.randperm(n, generator=rng)`` (on the
    generator's device) for a torch generator, or ``0..n-1`` when ``shuffle=False``; it is drawn **now**, not at
    the first ``next()``, so the caller's random stream is consumed in the order it reads. A numpy generator (or
    none) yields int64 numpy arrays; a torch generator or ``device=`` yields int64 tensors on that device.

    ``drop_last`` drops an incomplete final batch. A final batch smaller than ``min_size`` (e.g. 2: BatchNorm
    cannot train on one cell) is merged into the previous one when ``merge_small`` (kept if it is the only
    batch), else dropped.
    """
    n, batch_size = int(n), int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if isinstance(rng, torch.Generator):
        dev = torch.device(device) if device is not None else rng.device
        order = (torch.randperm(n, generator=rng, device=rng.device).to(dev) if shuffle
                 else torch.arange(n, device=dev))
    elif device is not None:
        perm = rng.permutation(n) if (shuffle and rng is not None) else np.arange(n)
        order = torch.as_tensor(perm, dtype=torch.int64, device=device)
    else:
        if shuffle and rng is None:
            raise ValueError("minibatches(shuffle=True) needs a random generator (rng)")
        order = rng.permutation(n).astype(np.int64) if shuffle else np.arange(n, dtype=np.int64)
    bounds = list(range(0, n, batch_size))
    ends = [min(s + batch_size, n) for s in bounds]
    if bounds and drop_last and ends[-1] - bounds[-1] < batch_size:
        bounds.pop(), ends.pop()
    if len(bounds) > 0 and ends[-1] - bounds[-1] < min_size and not (merge_small and len(bounds) == 1):
        if merge_small:
            ends[-2] = ends[-1]
        bounds.pop(), ends.pop()
    return (order[s:e] for s, e in zip(bounds, ends))


def _device_of(module: torch.nn.Module | None, x: Array, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if module is not None:
        for p in module.parameters():
            return p.device
    if isinstance(x, torch.Tensor):
        return x.device
    return torch.device("cpu")


def to_device(x: Array, device: torch.device | str, dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
    """A host matrix (numpy, scipy sparse → dense, tensor) as a tensor on ``device``; pinned copy on CUDA."""
    if hasattr(x, "toarray"):
        x = x.toarray()
    t = torch.as_tensor(np.ascontiguousarray(x)) if not isinstance(x, torch.Tensor) else x
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
    dev = torch.device(device)
    if dev.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(dev, non_blocking=True)
    return t.to(dev)


def gather(x: Array, idx: np.ndarray | torch.Tensor, device: torch.device | str,
           dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
    """Rows ``idx`` of ``x`` on ``device``: indexed in place when ``x`` already lives there, else copied per
    batch through pinned memory (so a 50k-cell matrix can stay on the host while a GPU trains)."""
    dev = torch.device(device)
    if isinstance(x, torch.Tensor) and x.device == dev:
        rows = idx if isinstance(idx, torch.Tensor) else torch.from_numpy(np.asarray(idx, dtype=np.int64))
        out = x[rows.to(dev)]
        return out if dtype is None or out.dtype == dtype else out.to(dtype)
    rows_np = idx.cpu().numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx, dtype=np.int64)
    if isinstance(x, torch.Tensor):
        return to_device(x[torch.from_numpy(rows_np)], dev, dtype)
    return to_device(x[rows_np], dev, dtype)


def encode_all(fn: Callable[[torch.Tensor], Any], x: Array, *, batch: int = 4096, train_mode: bool = False,
               module: torch.nn.Module | None = None, device: torch.device | str | None = None,
               numpy: bool = True, restore: bool = True) -> Any:
    """``fn`` applied to all rows of ``x`` in chunks of ``batch``, under ``torch.no_grad()``.

    Exact for any per-cell ``fn`` (BatchNorm in eval mode, dropout in train mode draws from the global RNG as
    one pass would per chunk). ``module.train(train_mode)`` is set for the pass and the previous mode restored
    after (``restore=False`` leaves it set, for code that relied on that). ``x`` is a tensor, a numpy array or
    a scipy sparse matrix; chunks go to ``device`` (default: the module's) through pinned memory on CUDA.
    Returns a numpy array (``numpy=True``) or a tensor on the device; ``fn`` may return a tuple of tensors,
    then a tuple is returned.
    """
    dev = _device_of(module, x, device)
    was = module.training if module is not None else None
    if module is not None:
        module.train(train_mode)
    n = x.shape[0]
    parts: list[Any] = []
    try:
        with torch.no_grad():
            for s in range(0, n, int(batch)):
                e = min(s + int(batch), n)
                if isinstance(x, torch.Tensor) and x.device == dev:
                    chunk = x[s:e]
                else:
                    chunk = to_device(x[s:e], dev, dtype=None if isinstance(x, torch.Tensor) else torch.float32)
                parts.append(fn(chunk))
    finally:
        if module is not None and restore:
            module.train(bool(was))
    if parts and isinstance(parts[0], tuple):
        cols = tuple(torch.cat([p[j] for p in parts]) for j in range(len(parts[0])))
        return tuple(c.cpu().numpy() for c in cols) if numpy else cols
    out = torch.cat(parts) if parts else torch.empty(0, device=dev)
    return out.cpu().numpy() if numpy else out
