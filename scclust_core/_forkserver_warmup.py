"""Imported once by the training fork server (see :mod:`scclust_core.jobs`), never by the app itself.

Numba sets up its compiler (typing and target contexts, ~2.5 s here) the first time any jitted function runs in
a process, even when the compiled code comes from numba's disk cache; scanpy's ``normalize_total`` pays that in
every fresh training process. Compiling one trivial, single-threaded function here pays it once in the fork
server, and every forked training child inherits the ready compiler. Nothing here starts a thread pool
(libgomp refuses to fork a process that has used OpenMP).

torch imports ``torch._dynamo`` lazily when the first optimiser is built (``torch.optim.Optimizer.__init__``):
~3 s here, which was half of a 1,000-cell contrastive-sc fit ("before first epoch" in ``profile``). It is
imported here too, so training children start with it loaded."""
from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

try:
    import numba
    import numba.experimental.jitclass  # noqa: F401 - imported lazily by scanpy's jitted helpers otherwise

    @numba.njit(cache=False, parallel=False, nogil=True)
    def _one(x: float) -> float:
        return x + 1.0

    _one(1.0)
except Exception as exc:  # noqa: BLE001 - without it the first training of each child is only slower
    logger.warning("Fork server warm-up failed (%s): trainings pay numba's set-up themselves", exc)

try:
    import torch._dynamo  # noqa: F401 - see the module docstring
except Exception as exc:  # noqa: BLE001 - as above
    logger.warning("Fork server warm-up failed (%s): trainings import torch._dynamo themselves", exc)
