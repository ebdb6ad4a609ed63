"""The CPU caching allocator never hands out an array that is still referenced."""

import weakref

import numpy as np
import pytest

import nfcore
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


@pytest.fixture
def bound(monkeypatch):
    """Run a test with its own cache bound and recency window (restored, the cache emptied, after)."""
    def set_bound(nbytes, recent):
        monkeypatch.setattr(memory, "MAX_CACHED_BYTES", nbytes)
        monkeypatch.setattr(memory, "RECENT", recent)
    memory.release()
    yield set_bound
    memory.release()


def test_the_cache_stays_under_its_bound_whatever_the_shapes(bound):
    """Each new shape used to stay cached for good (60 log_prob calls of different sizes kept
    2.2 GB); now the shapes used least recently make room for new ones."""
    bound(1 << 20, 2)  # 1 MiB; shapes not asked for within the last 2 requests may go
    busy = [memory.pooled_empty((256 + i, 128), np.float32) for i in range(3)]  # ~386 KiB, never dropped
    for i in range(40):
        a = memory.pooled_empty((64, 1024 + 8 * i), np.float32)  # 256+ KiB each, a new shape each time
        address = a.ctypes.data
        del a
        assert memory.cached_bytes() <= 1 << 20
    assert memory.pooled_empty((64, 1024 + 8 * 39), np.float32).ctypes.data == address  # the newest: cached
    assert [a.shape[0] for a in busy] == [256, 257, 258]
    assert memory.cached_bytes() == sum(a.nbytes for a in busy) + 64 * (1024 + 8 * 39) * 4  # busy + the newest


def test_a_working_set_over_the_bound_is_cached_in_part_not_evicted_each_step(bound):
    """Shapes asked for within RECENT requests are not evicted: a step whose temporaries pass the
    bound keeps the same cached arrays for the part that fit instead of evicting its own arrays
    at every step (with a window of one request every array would be a miss from step 2 on)."""
    bound(3 * 256 * 1024, 100)  # s0 + s1 fit, s0 + s1 + s2 do not
    shapes = [(256, 256 + i) for i in range(5)]  # ~256 KiB each

    def step():  # each array a temporary, free again before the next one is asked for
        refs = []
        for s in shapes:
            a = memory.pooled_empty(s, np.float32)
            refs.append(weakref.ref(a))
            del a
        return refs

    first = step()
    assert [r() is not None for r in first] == [True, True, False, False, False]  # only s0 and s1 cached
    for _ in range(3):
        again = step()
        assert again[0]() is first[0]() and again[1]() is first[1]() and first[0]() is not None
        assert memory.cached_bytes() == 4 * 256 * (256 + 257)


def test_set_limit_drops_free_arrays_now(bound):
    bound(1 << 30, 4096)
    busy = memory.pooled_empty((512, 128), np.float32)
    memory.pooled_empty((513, 128), np.float32)
    assert memory.cached_bytes() == 2 * 512 * 128 * 4 + 128 * 4
    memory.set_limit(0)
    assert memory.cached_bytes() == busy.nbytes  # the busy one stays until it is free
    fresh = memory.pooled_empty((600, 128), np.float32)
    assert memory.cached_bytes() == busy.nbytes and fresh.shape == (600, 128)
    with pytest.raises(nfcore.ConfigError, match="bound"):
        memory.set_limit(-1)


def test_a_search_that_starts_past_a_shortened_list_wraps(bound):
    """Another thread's eviction can shorten a shape's list after this one's search start was
    written; the search wraps to 0 (it used to index past the end on every later request)."""
    bound(1 << 30, 4096)
    held = [memory.pooled_empty((512, 128), np.float32) for _ in range(3)]
    entry = memory._pool[((512, 128), np.dtype(np.float32))]
    entry[0], entry[1] = entry[0][:1], 2  # what such an eviction leaves
    del held
    assert memory.pooled_empty((512, 128), np.float32) is entry[0][0]
