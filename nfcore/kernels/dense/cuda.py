"""CUDA dense ops: a tiled shared-memory GEMM, bias + activation, column sums, column gathers.

Shapes are 2-D and C-contiguous: ``(N, K) @ (K, M)``. Outputs are preallocated by the
caller and written in place; nothing is returned. The GEMM is our own: one kernel per
(dtype, tile, form), built on first use and cached, with ``TILE x TILE`` threads per block
each computing one output element from ``TILE x TILE`` tiles staged in shared memory.
Column sums are deterministic: one thread per (column, chunk of ``ROWS_PER_CHUNK`` rows),
then the chunk sums are summed the same way, never ``+=`` from many threads into one slot.
"""

import functools

import numba
import numpy as np
from numba import cuda

from .. import _scalar
from .. import launch as _launch
from .._scalar import device_maths
from ..array import cuda as _array
from ..registry import cuda_op

_act = device_maths(_scalar)



# -- GEMM ------------------------------------------------------------------------------------


@functools.cache
def _gemm_kernel(dtype, tile, trans_a, trans_b, accumulate):
    """The kernel for out (+)= op(a) @ op(b), op = transpose where asked, for one dtype and tile.

    The flags and sizes are closure constants: numba compiles them in (the branches on the
    flags fold away), and the shared arrays get the dtype of the data (float32 or float64).
    """
    elem = numba.from_dtype(np.dtype(dtype))
    pad = tile + 1  # a padding column: the transposed tile loads then fall in distinct banks

    @cuda.jit(cache=False)
    def gemm(a, b, out):
        # sa[r, c] = op(a)[row0 + r, k0 + c] and sb[r, c] = op(b)[k0 + r, col0 + c]
        sa = cuda.shared.array((tile, pad), elem)
        sb = cuda.shared.array((tile, pad), elem)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        row0 = cuda.blockIdx.y * tile
        col0 = cuda.blockIdx.x * tile
        i = row0 + ty
        j = col0 + tx
        n = out.shape[0]
        m = out.shape[1]
        if trans_a:
            kdim = a.shape[0]
        else:
            kdim = a.shape[1]
        acc = elem(0)
        for k0 in range(0, kdim, tile):
            # each load lets consecutive tx read consecutive addresses (coalesced)
            if trans_a:
                k = k0 + ty
                r = row0 + tx
                if k < kdim and r < n:
                    sa[tx, ty] = a[k, r]
                else:
                    sa[tx, ty] = 0
            else:
                k = k0 + tx
                if i < n and k < kdim:
                    sa[ty, tx] = a[i, k]
                else:
                    sa[ty, tx] = 0
            if trans_b:
                k = k0 + tx
                c = col0 + ty
                if k < kdim and c < m:
                    sb[tx, ty] = b[c, k]
                else:
                    sb[tx, ty] = 0
            else:
                k = k0 + ty
                if k < kdim and j < m:
                    sb[ty, tx] = b[k, j]
                else:
                    sb[ty, tx] = 0
            cuda.syncthreads()
            for t in range(tile):
                acc += sa[ty, t] * sb[t, tx]
            cuda.syncthreads()
        if i < n and j < m:
            if accumulate:
                out[i, j] += acc
            else:
                out[i, j] = acc

    return gemm


def _gemm(a, b, out, trans_a, trans_b, accumulate):
    tile = int(_launch.TILE)
    kernel = _gemm_kernel(np.dtype(out.dtype), tile, trans_a, trans_b, accumulate)
    n, m = out.shape
    blocks = (max(1, -(-m // tile)), max(1, -(-n // tile)))
    kernel[blocks, (tile, tile)](a, b, out)


@cuda_op
def linear_act(x, w, b, code, alpha, out):
    """out = phi(x @ w + b): the tiled GEMM, then the fused bias + activation."""
    matmul(x, w, out)
    bias_act(out, b, code, alpha)


@cuda_op
def matmul(a, b, out):
    """out = a @ b, (N, K) @ (K, M) -> (N, M)."""
    _gemm(a, b, out, False, False, False)


@cuda_op
def matmul_nt(a, b, out):
    """out = a @ b.T, (N, M) @ (K, M).T -> (N, K): the input gradient of a linear layer."""
    _gemm(a, b, out, False, True, False)


@cuda_op
def matmul_tn_acc(a, b, out):
    """out += a.T @ b, (N, K).T @ (N, M) -> (K, M): the weight gradient, accumulated."""
    _gemm(a, b, out, True, False, True)


@cuda_op
def masked_linear_act(x, w, b, col_blocks, code, alpha, out):
    """out = phi(x @ w + b) for a masked w. The CPU twin skips w's zero rectangles (see
    ``nfcore.kernels.dense``); here the tiled GEMM runs dense: the masked entries are zeros."""
    linear_act(x, w, b, code, alpha, out)


@cuda_op
def masked_matmul_nt(a, w, row_blocks, out):
    """out = a @ w.T for a masked w (dense here, as ``masked_linear_act``)."""
    matmul_nt(a, w, out)


@cuda_op
def masked_matmul_tn_acc(a, b, mask, col_blocks, out):
    """out += (a.T @ b) * mask: a masked weight's gradient (dense product here, then masked)."""
    tmp = _array.zeros(out.shape, out.dtype)
    matmul_tn_acc(a, b, tmp)
    from ..elementwise.cuda import mask_mul_acc  # here: elementwise.cuda imports this module

    mask_mul_acc(tmp, mask, out)


# -- bias, activation ------------------------------------------------------------------------


@cuda.jit(cache=True)
def _bias_act_kernel(h, b, code, alpha):
    t = cuda.grid(1)
    if t < h.size:
        i, j = t // h.shape[1], t % h.shape[1]
        h[i, j] = _act.act_fwd(h[i, j] + b[j], code, alpha)


@cuda.jit(cache=True)
def _bias_act_bwd_kernel(dy, y, code, alpha, dh):
    t = cuda.grid(1)
    if t < y.size:
        i, j = t // y.shape[1], t % y.shape[1]
        dh[i, j] = _act.act_vjp(dy[i, j], y[i, j], code, alpha)


@cuda_op
def bias_act(h, b, code, alpha):
    """h[n, j] = phi(h[n, j] + b[j]) in place; h is (N, M), b is (M,)."""
    _bias_act_kernel[_launch.grid(h.size)](h, b, code, alpha)


@cuda_op
def bias_act_bwd(dy, y, code, alpha, dh, db):
    """dh = dy * phi'(x) with phi' written through the output y = phi(x); db += sum_n dh."""
    _bias_act_bwd_kernel[_launch.grid(y.size)](dy, y, code, alpha, dh)
    colsum_acc(dh, db)


# -- column sums -----------------------------------------------------------------------------


def _column_chunks(rows):
    """(rows per chunk, number of chunks) of a column reduction over ``rows`` rows."""
    chunk = max(1, int(_launch.ROWS_PER_CHUNK), -(-rows // 65535))  # the grid's y extent is at most 65535
    return chunk, max(1, -(-rows // chunk))


def _column_grid(cols, nchunks):
    """Launch configuration with one thread per (column, chunk)."""
    blocks, tpb = _launch.grid(cols)
    return (blocks, nchunks), tpb


def _chunk_sums_target(out, nchunks):
    """Where a kernel puts its per-chunk column sums of ``out`` (C,), and whether it adds to it.

    One chunk: ``out`` itself seen as (1, C), accumulated into. Several: a fresh (nchunks, C)
    scratch array, written, that ``_finish_chunk_sums`` then adds up into ``out``.
    """
    if nchunks == 1:
        return out.reshape(1, out.shape[0]), 1
    return cuda.device_array((nchunks, out.shape[0]), dtype=out.dtype), 0


def _finish_chunk_sums(part, out):
    """out[j] += sum_c part[c, j] when ``part`` is a scratch array of chunk sums (else nothing)."""
    if part.shape[0] > 1:
        colsum_acc(part, out)


@cuda.jit(cache=True)
def _colsum_kernel(a, chunk, part, accumulate):
    """part[c, j] (+)= sum of a[r, j] over the rows r of chunk c; one thread per (j, c)."""
    j = cuda.grid(1)
    c = cuda.blockIdx.y
    rows = a.shape[0]
    if j < a.shape[1]:
        acc = 0.0
        for r in range(c * chunk, min(rows, (c + 1) * chunk)):
            acc += a[r, j]
        if accumulate:
            part[c, j] += acc
        else:
            part[c, j] = acc


@cuda_op
def colsum_acc(a, out):
    """out[j] += sum_n a[n, j]: the bias gradient (a thread per column and row chunk; no race)."""
    rows, cols = a.shape
    chunk, nchunks = _column_chunks(rows)
    part, accumulate = _chunk_sums_target(out, nchunks)
    _colsum_kernel[_column_grid(cols, nchunks)](a, chunk, part, accumulate)
    _finish_chunk_sums(part, out)


# -- element-wise sums, column gathers -------------------------------------------------------


@cuda_op
def add_inplace(a, b):
    """a += b element-wise (2-D)."""
    _array.iadd(a, b)


@cuda.jit(cache=True)
def _gather_cols_kernel(x, idx, out, offset):
    t = cuda.grid(1)
    k = idx.shape[0]
    if t < x.shape[0] * k:
        i = t // k
        j = t - i * k
        out[i, offset + j] = x[i, idx[j]]


@cuda.jit(cache=True)
def _scatter_add_cols_kernel(src, idx, out):
    t = cuda.grid(1)
    k = idx.shape[0]
    if t < out.shape[0] * k:
        i = t // k
        j = t - i * k
        out[i, idx[j]] += src[i, j]  # idx distinct: every (i, idx[j]) has exactly one writer


@cuda_op
def gather_cols(x, idx, out, offset):
    """out[n, offset + j] = x[n, idx[j]] (assembles a conditioner input in place)."""
    _gather_cols_kernel[_launch.grid(x.shape[0] * idx.shape[0])](x, idx, out, offset)


@cuda_op
def scatter_add_cols(src, idx, out):
    """out[n, idx[j]] += src[n, j] for j < len(idx) (idx distinct; extra src columns ignored)."""
    _scatter_add_cols_kernel[_launch.grid(out.shape[0] * idx.shape[0])](src, idx, out)


def parity_cases(c):
    """The dense ops' parity inputs (``nfcore.kernels.parity``): ragged GEMM tiles, every
    activation, a staircase mask (MADE's) with its block plans."""
    from ..parity import ACTS
    from .cpu import bias_act as cpu_bias_act

    r, nan, dt = c.r, c.nan, c.dt
    n, d = c.n, c.d
    gn, gk, gm = c.s.gemm
    perm = np.array([4, 1, 3], dtype=np.int64)
    # a staircase mask (K, M) and its block plans: column j uses rows below stair[j], row i
    # is used by the columns from first[i] on
    stair = np.minimum(gk, 1 + np.arange(gm) * gk // gm)
    mask = (np.arange(gk)[:, None] < stair[None, :]).astype(dt)
    wm = r(gk, gm) * mask
    half = gm // 2
    col_blocks = ((0, half, 0, int(stair[half - 1])), (half, gm, 0, gk))
    first = np.array([np.argmax(mask[i] > 0) if mask[i].any() else gm for i in range(gk)])
    cut = gk // 2
    row_blocks = ((0, cut, int(first[:cut].min()), gm), (cut, gk, int(first[cut:].min()), gm))

    def act_output(code, alpha):
        """A valid activation output y = phi(h) (what bias_act_bwd is given in a layer)."""
        y = r(n, d)
        cpu_bias_act(y, np.zeros(d, dt), code, alpha)
        return y

    return {
        "matmul": [("", [r(gn, gk), r(gk, gm), nan(gn, gm)], [2])],
        "linear_act": [(f"k={k},code={code}", [r(gn, k), r(k, gm), r(gm), code, a, nan(gn, gm)], [5])
                       for k in (1, 3, gk) for code, a in ACTS[:4]],
        "matmul_nt": [("", [r(gn, gm), r(gk, gm), nan(gn, gk)], [2])],
        "matmul_tn_acc": [("", [r(gn, gk), r(gn, gm), r(gk, gm)], [2])],
        # the CPU runs a block plan (rows >= 16 engage it); the GPU runs dense on the masked weight
        "masked_linear_act": [("", [r(20, gk), wm, r(gm), col_blocks, 1, 0.0, nan(20, gm)], [6])],
        "masked_matmul_nt": [("", [r(20, gm), wm, row_blocks, nan(20, gk)], [3])],
        "masked_matmul_tn_acc": [("", [r(20, gk), r(20, gm), mask, col_blocks, r(gk, gm)], [4])],
        "bias_act": [(f"code={code}", [r(n, d, scale=2.0), r(d), code, a], [0]) for code, a in ACTS],
        "bias_act_bwd": [(f"code={code}", [r(n, d), act_output(code, a), code, a, nan(n, d), r(d)], [4, 5])
                         for code, a in ACTS],
        "colsum_acc": [(f"rows={rows}", [r(rows, c.s.cols), r(c.s.cols)], [1]) for rows in (c.s.rows, 2)],
        "add_inplace": [("", [r(n, d), r(n, d)], [0])],
        "gather_cols": [("offset=2", [r(n, d), perm, r(n, perm.size + 3), 2], [2])],
        "scatter_add_cols": [("", [r(n, perm.size + 1), perm, r(n, d)], [2])],
    }
