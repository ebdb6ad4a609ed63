"""The CPU caching allocator never hands out an array that is still referenced."""

import numpy as np

from nfcore.kernels.array import memory


def test_busy_arrays_are_never_reused():
    memory.release()
    shape = (512, 128)  # 256 KiB float32: pooled
    a = memory.pooled_empty(shape, np.float32)
    b = memory.pooled_empty(shape, np.float32)
    assert a is not b and not np.shares_memory(a, b)
    view = b[3:5]
    del b
    c = memory.pooled_empty(shape, np.float32)  # b's memory is still reachable through the view
    assert not np.shares_memory(c, view) and not np.shares_memory(c, a)
    cache = (c,)
    del c
    d = memory.pooled_empty(shape, np.float32)
    assert not np.shares_memory(d, cache[0])
    del a
    e = memory.pooled_empty(shape, np.float32)  # a is free now: reused
    assert e.shape == shape and e.dtype == np.float32


def test_free_arrays_are_reused_and_small_ones_bypass():
    memory.release()
    a = memory.pooled_empty((256, 128), np.float64)  # 256 KiB
    address = a.ctypes.data
    del a
    assert memory.pooled_empty((256, 128), np.float64).ctypes.data == address
    small = memory.pooled_empty((4, 4), np.float32)
    assert small.shape == (4, 4) and memory.cached_bytes() == 256 * 128 * 8
    memory.release()
    assert memory.cached_bytes() == 0
