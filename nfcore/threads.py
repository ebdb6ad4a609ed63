"""How many cores nfcore's CPU work uses.

nfcore's Numba kernels are single-threaded on purpose, with one exception: a ``parallel=True``
kernel next to OpenBLAS makes the two thread pools fight over the cores (figures:
benchmarks/RESULTS.md, "Measurements behind the code"). The exception is the fast sequential
MADE pass (``kernels.autoregressive``), which runs its row tiles in parallel and calls no BLAS
inside, so no two pools run at once. The GEMMs run on numpy's BLAS, whose threads use every
core. This module sets that BLAS thread count. Nothing is changed at import time.
"""

import os

from .errors import ConfigError

__all__ = ["set_num_threads", "get_num_threads", "blas_threads"]

_cached = None  # the BLAS thread count the CPU ops plan with (blas_threads)


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
    """Use ``n`` BLAS threads for nfcore's GEMMs (process-wide, as BLAS itself is)."""
    n = int(n)
    if n < 1:
        raise ConfigError(f"number of threads must be >= 1, got {n}")
    _threadpoolctl().threadpool_limits(limits=n, user_api="blas")
    global _cached
    _cached = n


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
