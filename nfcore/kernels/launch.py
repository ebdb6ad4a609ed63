"""Launch settings of the CUDA kernels, read at every call so that a test can shrink them.

Small values make tiny inputs span several blocks, row chunks and GEMM tiles (stumpy's trick):

* ``THREADS_PER_BLOCK``: threads of a 1-D launch (one thread per element, row or column);
* ``ROWS_PER_CHUNK``: rows that one thread sums in a column reduction; the per-chunk partial
  sums are then added up by ``colsum_acc`` in a fixed order (deterministic, no atomics);
* ``TILE``: the edge of the GEMM's square shared-memory tiles (TILE x TILE threads per block).

This module imports nothing from numba, so reading or setting them never touches a GPU.
"""

__all__ = ["THREADS_PER_BLOCK", "ROWS_PER_CHUNK", "TILE", "grid", "flat"]

#: threads per block of 1-D launches
THREADS_PER_BLOCK = 128
#: rows one thread sums in a column reduction before the chunk sums are reduced in turn
ROWS_PER_CHUNK = 256
#: edge of the square GEMM tiles: TILE x TILE threads per block, two TILE x (TILE + 1) shared arrays
TILE = 16


def grid(n):
    """(blocks, threads) of a 1-D launch with at least ``n`` threads (and at least one block)."""
    tpb = int(THREADS_PER_BLOCK)
    return max(1, -(-int(n) // tpb)), tpb


def flat(a):
    """A 1-D view of a contiguous array (no copy)."""
    return a if a.ndim == 1 else a.reshape(a.size)
