"""A caching allocator for the CPU backend's large scratch arrays.

Why: a training step allocates many fresh megabyte-sized arrays (activations, gradients). glibc
serves each one with new pages from the kernel, and the first write to every page faults, which
more than doubled the time of a GEMM inside a step (figures: benchmarks/RESULTS.md,
"Measurements behind the code"). PyTorch avoids this with its own caching allocator; so do we.

How: arrays of at least ``MIN_BYTES`` are kept in per-(shape, dtype) lists. An array is free
again when the list holds the only reference to it (``sys.getrefcount``): a caller, a cache
tuple or a view (views reference their base) all keep it busy, so no array is ever handed out
twice. The search starts after the array handed out last (round robin): arrays freed in
allocation order are then found at once instead of after a scan of every busy one (a scan from
the front cost a residual-flow step 18% of its time). At most ``MAX_PER_KEY`` arrays are kept
per key; beyond that, plain ``np.empty``. ``release()`` drops the cache.

Worker threads (``nfcore.parallel``) share the cache without a lock: while one thread holds a
candidate array in its local name, another sees one reference more and passes it by, so two
threads can at worst both allocate afresh, never share an array (the list updates are single
bytecode operations under the GIL).
"""

import math
import sys

import numpy as np

__all__ = ["pooled_empty", "release", "cached_bytes", "MIN_BYTES", "MAX_PER_KEY"]

# below glibc's default mmap threshold (128 KiB) malloc serves arrays from its heap, which
# does not fault; pooling those only costs time
MIN_BYTES = 1 << 17
MAX_PER_KEY = 64

_pool = {}
# the refcount test is exact only with a GIL; a free-threaded build gets plain allocation
_ENABLED = getattr(sys, "_is_gil_enabled", lambda: True)()


def pooled_empty(shape, dtype):
    """An uninitialised C-contiguous array, reused from the cache when one is free."""
    dtype = np.dtype(dtype)
    if isinstance(shape, int):
        shape = (shape,)
    if not _ENABLED or math.prod(shape) * dtype.itemsize < MIN_BYTES:
        return np.empty(shape, dtype)
    key = (tuple(shape), dtype)
    entry = _pool.get(key)
    if entry is None:
        entry = _pool[key] = [[], 0]  # the arrays, where the next search starts
    arrays, start = entry
    m = len(arrays)
    for k in range(m):
        i = start + k
        if i >= m:
            i -= m
        a = arrays[i]
        # references: the list, the local name and getrefcount's argument
        if sys.getrefcount(a) == 3:
            entry[1] = i + 1 if i + 1 < m else 0
            return a
    a = np.empty(shape, dtype)
    if m < MAX_PER_KEY:
        arrays.append(a)
    return a


def release():
    """Forget every cached array (memory in use elsewhere stays valid)."""
    _pool.clear()


def cached_bytes():
    """Bytes held by the cache (busy and free arrays together)."""
    return sum(a.nbytes for arrays, _ in _pool.values() for a in arrays)
