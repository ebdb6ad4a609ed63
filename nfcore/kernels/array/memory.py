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

Bounded: the cache holds at most ``MAX_CACHED_BYTES`` (``set_limit``). Without a bound every
new shape stayed cached for good: 60 ``log_prob`` calls on 1,000 .. 60,000 rows of a MAF D=8 kept
2.2 GB (benchmarks/RESULTS.md, "Session 15"). A new array that would pass the bound first makes
room by dropping the free arrays of the shapes used least recently, but never those of a shape
asked for within the last ``RECENT`` requests (a training step's working set: a Glow step at
batch 256 makes ~550 requests over 31 shapes and 260 MB); if there is still no room it is not
cached (plain allocation). A working set larger than the bound is then cached in part, without
evicting itself at every step.

Worker threads (``nfcore.parallel``) share the cache without a lock: while one thread holds a
candidate array in its local name, another sees one reference more and passes it by, so two
threads can at worst both allocate afresh, never share an array (the list updates are single
bytecode operations under the GIL). An eviction replaces a shape's list instead of editing it
(a thread scanning the old one finishes on it, and a search start past a shortened list wraps
to 0). The byte count, which two threads may update at once, is recounted exactly whenever the
bound is reached: with worker threads the bound is soft by the few arrays such a race loses
from the count until the next recount; on one thread it is exact.

Whether an array is free is a reference count (``_count``), compared with the count of an object
only a list holds, measured once at import (``_FREE``: 3 on CPython 3.11), so an interpreter that
counts a local's references differently does not hand out a busy array.
"""

import math
import sys

import numpy as np

from ..._checks import check_int

__all__ = ["pooled_empty", "release", "cached_bytes", "set_limit", "MIN_BYTES", "MAX_PER_KEY", "MAX_CACHED_BYTES",
           "RECENT"]

# below glibc's default mmap threshold (128 KiB) malloc serves arrays from its heap, which
# does not fault; pooling those only costs time
MIN_BYTES = 1 << 17
MAX_PER_KEY = 64
#: the most bytes the cache holds (``set_limit``)
MAX_CACHED_BYTES = 1 << 30
#: requests within which a shape counts as in use (its arrays are not evicted)
RECENT = 4096

_pool = {}  # (shape, dtype) -> [its arrays, where the next search starts, the request that last asked for it]
_held = 0  # bytes in the cache (recounted exactly when the bound is reached)
_requests = 0  # pooled requests so far
# the refcount test is exact only with a GIL; a free-threaded build gets plain allocation
_ENABLED = getattr(sys, "_is_gil_enabled", lambda: True)()


def _count(arrays, i):
    """References to ``arrays[i]`` as every test here sees them (one access pattern, one baseline)."""
    a = arrays[i]
    return sys.getrefcount(a)


_FREE = _count([object()], 0)  # an item only its list holds: the list, _count's local, the argument


def pooled_empty(shape, dtype):
    """An uninitialised C-contiguous array, reused from the cache when one is free."""
    global _held, _requests
    dtype = np.dtype(dtype)
    if isinstance(shape, int):
        shape = (shape,)
    nbytes = math.prod(shape) * dtype.itemsize
    if not _ENABLED or nbytes < MIN_BYTES:
        return np.empty(shape, dtype)
    _requests += 1
    key = (tuple(shape), dtype)
    entry = _pool.get(key)
    if entry is None:
        entry = _pool[key] = [[], 0, 0]
    entry[2] = _requests
    arrays, start = entry[0], entry[1]
    m = len(arrays)
    if start >= m:  # another thread's eviction shortened the list since start was written
        start = 0
    for k in range(m):
        i = start + k
        if i >= m:
            i -= m
        if _count(arrays, i) == _FREE:
            entry[1] = i + 1 if i + 1 < m else 0
            return arrays[i]
    a = np.empty(shape, dtype)
    if m < MAX_PER_KEY and (_held + nbytes <= MAX_CACHED_BYTES or _make_room(nbytes, max(1, RECENT))):
        arrays.append(a)
        _held += nbytes
    return a


def _make_room(nbytes, recent):
    """Drop the free arrays of the least recently used shapes (not those asked for within the last
    ``recent`` requests) until ``nbytes`` more fit under the bound; whether they do."""
    global _held
    held = cached_bytes()
    if held + nbytes > MAX_CACHED_BYTES:
        old = [(entry[2], key) for key, entry in list(_pool.items()) if entry[2] <= _requests - recent]
        for _, key in sorted(old, key=lambda item: item[0]):
            if held + nbytes <= MAX_CACHED_BYTES:
                break
            entry = _pool.get(key)
            if entry is None:
                continue
            arrays, kept = entry[0], []
            for i in range(len(arrays)):
                if held + nbytes > MAX_CACHED_BYTES and _count(arrays, i) == _FREE:
                    held -= arrays[i].nbytes
                else:
                    kept.append(arrays[i])
            if len(kept) < len(arrays):
                entry[0], entry[1] = kept, 0  # a new list: a thread searching the old one finishes on it
                if not kept:
                    _pool.pop(key, None)
    _held = held
    return held + nbytes <= MAX_CACHED_BYTES


def set_limit(nbytes):
    """Hold at most ``nbytes`` bytes of arrays in the cache (default 1 GiB; 0: cache nothing).
    Free arrays over a lower bound are dropped now, the least recently used first; busy ones
    when they are free and room is needed."""
    global MAX_CACHED_BYTES
    nbytes = check_int("the caching allocator's bound (bytes)", nbytes, 0)
    MAX_CACHED_BYTES = nbytes
    _make_room(0, 0)


def release():
    """Forget every cached array (memory in use elsewhere stays valid)."""
    global _held
    _pool.clear()
    _held = 0


def cached_bytes():
    """Bytes held by the cache (busy and free arrays together)."""
    return sum(a.nbytes for entry in list(_pool.values()) for a in entry[0])
