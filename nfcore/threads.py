"""How many cores nfcore's CPU work uses.

Two kinds of threads run nfcore's CPU work:

* **Worker threads** (``nfcore.parallel``): a step, a density or a sample is cut into contiguous
  shards of rows, one per worker; the Numba kernels are ``nogil`` and numpy's GEMMs release the
  GIL, so W workers keep W cores busy. While they run, BLAS is held at one thread each.
* **BLAS threads** inside each GEMM, when one worker runs.

``blas_now()`` tells which count a GEMM runs with at the moment: the fused kernels cut their
forward products into row blocks below OpenBLAS's small-matrix size only when it is one (faster
on one thread, slower than a product BLAS splits across threads). Numba's ``np.dot`` (the fused
kernels) and numpy's ``@`` (the op-by-op path) reach two different OpenBLAS libraries, each with
its own thread pool: alternating between them with several threads makes the pools fight
(benchmarks/RESULTS.md, "Session 11"), so each path keeps to its own.

``set_num_threads(n)`` is the one setting: nfcore uses at most n cores, as n BLAS threads when one
worker runs or as up to n workers of one BLAS thread each. How many workers a call gets is
``workers_for``: one per ``MIN_SHARD_ROWS`` rows, at most n (small batches stay on one worker,
where the Python dispatch between ops, which holds the GIL, would eat the gain).

Within a worker the Numba kernels are single-threaded on purpose, with one exception: a
``parallel=True`` kernel next to OpenBLAS makes the two thread pools fight over the cores
(figures: benchmarks/RESULTS.md, "Measurements behind the code"). The exception is the fast
sequential MADE pass (``kernels.autoregressive``), which runs its row tiles in parallel and calls
no BLAS inside, so no two pools run at once. Nothing is changed at import time.
"""

import contextlib
import os

from ._checks import check_int
from .errors import ConfigError

__all__ = ["set_num_threads", "get_num_threads", "blas_threads", "blas_now", "core_budget", "workers_for",
           "blas_limit", "MIN_SHARD_ROWS"]

#: rows per worker below which a call stays on fewer workers (measured: benchmarks/RESULTS.md,
#: "Worker threads"): at batch 256 on two cores one worker wins
MIN_SHARD_ROWS = 512

_cached = None  # the BLAS thread count the CPU ops plan with (blas_threads)
_budget = None  # the cores set_num_threads allows (None: every core this process may run on)
_controller = None  # threadpoolctl's controller, made once (a limit through it costs ~7 us)
_held = None  # the BLAS thread count blas_limit holds now (None: none held)


def _threadpoolctl():
    try:
        import threadpoolctl
    except ImportError as err:
        raise ConfigError(
            "setting the BLAS thread count needs threadpoolctl (pip install threadpoolctl); "
            "or set OPENBLAS_NUM_THREADS before starting Python"
        ) from err
    return threadpoolctl


def set_num_threads(n):
    """Use at most ``n`` cores: ``n`` BLAS threads for the GEMMs of one worker (process-wide, as
    BLAS itself is) and at most ``n`` worker threads (``workers_for``)."""
    n = int(n)
    if n < 1:
        raise ConfigError(f"number of threads must be >= 1, got {n}")
    _threadpoolctl().threadpool_limits(limits=n, user_api="blas")
    global _cached, _budget
    _cached = n
    _budget = n


def get_num_threads():
    """The BLAS thread count numpy uses now (None when it cannot be read)."""
    try:
        info = _threadpoolctl().threadpool_info()
    except ConfigError:
        return None
    counts = [d["num_threads"] for d in info if d.get("user_api") == "blas"]
    return max(counts) if counts else None


def blas_threads(refresh=False):
    """The BLAS thread count the CPU ops plan with (cached: read once, then kept in step with
    ``set_num_threads``; pass ``refresh=True`` after changing it some other way, e.g. with
    threadpoolctl). It only steers speed: MADE's block-sparse GEMMs are skipped at small
    batches when BLAS splits the dense product across threads (``kernels.dense``)."""
    global _cached
    if _cached is None or refresh:
        n = get_num_threads()
        if n is None:
            n = int(os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or 0) or (
                os.cpu_count() or 1)
        _cached = max(1, int(n))
    return _cached


def core_budget():
    """The cores nfcore may use: ``set_num_threads``'s n, else every core this process may run on."""
    if _budget is not None:
        return _budget
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _blas_controllable():
    try:
        _threadpoolctl()
    except ConfigError:
        return False
    return True


def workers_for(rows, workers=None, device="cpu", shard_rows=MIN_SHARD_ROWS):
    """How many worker threads a call on ``rows`` rows runs on.

    ``workers=None`` chooses: one worker per ``shard_rows`` rows (a flow's is the smallest of its
    layers' measured ``min_shard_rows``, else ``MIN_SHARD_ROWS``), at most ``core_budget()``
    (one without threadpoolctl, which holds BLAS at one thread per worker). An explicit count is
    kept, but no shard gets fewer than 2 rows (batch norm needs 2). A CUDA flow runs on one device
    and one stream: one worker (asking for more is an error).
    """
    rows = int(rows)
    if workers is not None:
        workers = check_int("workers", workers, 1)
        if device != "cpu" and workers > 1:
            raise ConfigError("worker threads run CPU flows only; a CUDA flow runs on one device and one stream "
                              "(workers=1)")
        return max(1, min(workers, rows // 2))
    if device != "cpu" or not _blas_controllable():
        return 1
    return max(1, min(core_budget(), rows // max(1, int(shard_rows))))


@contextlib.contextmanager
def blas_limit(n):
    """Hold BLAS at ``n`` threads for the duration (worker threads each run their own GEMMs)."""
    global _controller, _held
    if _controller is None:
        _controller = _threadpoolctl().ThreadpoolController()
    outer = _held
    with _controller.limit(limits=int(n), user_api="blas"):
        _held = int(n)
        try:
            yield
        finally:
            _held = outer


def blas_now():
    """The BLAS thread count a GEMM runs with now: ``blas_limit``'s while it holds one (the
    workers' shards), else ``blas_threads()``."""
    return _held if _held is not None else blas_threads()
