"""CPU dense ops: GEMMs through numpy's BLAS, bias + activation and reductions in Numba.

Shapes are 2-D and C-contiguous: ``(N, K) @ (K, M)``. Outputs are preallocated by the
caller and written in place; nothing is returned.
"""

from functools import lru_cache

import numpy as np
from numba import njit

from ...threads import blas_threads
from .._scalar import ACT_RELU, act_fwd, act_vjp, relu_vjp
from ..array.memory import pooled_empty
from ..elementwise.cpu import mask_mul_acc
from ..registry import cpu_kernel, cpu_op

_jit = njit(cache=True, nogil=True, error_model="numpy")


@cpu_op
def linear_act(x, w, b, code, alpha, out):
    """out = phi(x @ w + b): (N, K) @ (K, M) + (M,) -> (N, M)."""
    if x.shape[1] == 1:
        # numpy's matmul does not reach BLAS for K = 1 and is ~6x slower than this loop there
        _outer(x, w, out)
    else:
        np.matmul(x, w, out=out)
    _bias_act(out, b, code, out.dtype.type(alpha))


@_jit
def _outer(x, w, out):
    n = x.shape[0]
    m = w.shape[1]
    for i in range(n):
        xv = x[i, 0]
        for j in range(m):
            out[i, j] = xv * w[0, j]


@cpu_op
def matmul(a, b, out):
    """out = a @ b, (N, K) @ (K, M) -> (N, M)."""
    np.matmul(a, b, out=out)


@cpu_op
def matmul_nt(a, b, out):
    """out = a @ b.T, (N, M) @ (K, M).T -> (N, K): the input gradient of a linear layer."""
    np.matmul(a, b.T, out=out)


@cpu_op
def matmul_tn_acc(a, b, out):
    """out += a.T @ b, (N, K).T @ (N, M) -> (K, M): the weight gradient, accumulated."""
    _tn_blocks(a, b, None, out)


def _tn_blocks(a, b, mask, out):
    """out += (a.T @ b) (* mask) as ``tn_acc`` does it, on numpy's BLAS: the op-by-op path keeps
    to numpy's library (the fused kernels' ``np.dot`` calls scipy's, a second OpenBLAS with its
    own thread pool; alternating between the two, each pool's spinning threads starve the other's,
    and a MAF step at batch 256 took 40-130 ms instead of 2)."""
    n = a.shape[0]
    rows = block_rows(n, a.shape[1], b.shape[1])
    tmp = pooled_empty(out.shape, out.dtype)
    for s in range(0, n, rows):
        np.matmul(a[s : s + rows].T, b[s : s + rows], out=tmp)
        if mask is None:
            out += tmp
        else:
            mask_mul_acc(tmp, mask, out)


#: OpenBLAS's small-matrix GEMM kernels (x86 cores with AVX-512) take products of at most this many
#: multiply-adds (M N K); past it a weight gradient a^T g, whose reduction runs over the rows, falls
#: to the general path at about half the speed. Summed over blocks of rows below it, a 64x64
#: layer's gradient runs 1.5-2x faster from 256 rows up (benchmarks/RESULTS.md, "Session 11").
SMALL_GEMM_MACS = 1_000_000  # (the op-by-op path: _tn_blocks; the fused kernels: tn_acc)
#: blocks of fewer rows than this lose more to the extra calls than they gain (a 128x128 layer)
MIN_BLOCK_ROWS = 128


@_jit
def block_rows(n, k, m):
    """Rows per block of a product over n rows with a (k, m) weight (its gradient a^T g; with one
    BLAS thread, a @ w too): n when one call is best."""
    rows = SMALL_GEMM_MACS // max(1, k * m) // 16 * 16
    return rows if MIN_BLOCK_ROWS <= rows < n else n


@_jit
def tn_acc(a, b, mask, masked, out, tmp):
    """out += a.T @ b, (N, K).T @ (N, M), times ``mask`` (K, M) when ``masked`` (a masked weight's
    gradient), as a sum over blocks of ``block_rows`` rows (tmp: scratch shaped like out)."""
    n = a.shape[0]
    rows = block_rows(n, a.shape[1], b.shape[1])
    kk, m = out.shape
    for s in range(0, n, rows):
        e = min(n, s + rows)
        np.dot(a[s:e].T, b[s:e], tmp)
        for i in range(kk):
            for j in range(m):
                out[i, j] += tmp[i, j] * mask[i, j] if masked else tmp[i, j]


@cpu_op
def bias_act(h, b, code, alpha):
    """h[n, j] = phi(h[n, j] + b[j]) in place; h is (N, M), b is (M,).

    The branch on ``code`` is loop-invariant: LLVM unswitches it, so each activation runs
    a branch-free loop (vectorised where the math allows; libm calls stay scalar). alpha is
    cast to the array's dtype so float32 math never promotes to float64.
    """
    _bias_act(h, b, code, h.dtype.type(alpha))


@cpu_op
def bias_act_bwd(dy, y, code, alpha, dh, db):
    """dh = dy * phi'(x) (phi' written through the output y = phi(x)); db += sum_n dh.

    ReLU (MADE's and the MLPs' default) runs one fused pass with a per-column accumulator. Other
    activations take two passes: their kernel selects phi' by ``code``, and an accumulator in
    that loop stops LLVM from unswitching and vectorising it; the column sum is then its own
    vectorised pass (figures: benchmarks/RESULTS.md, "Measurements behind the code").
    """
    if code == ACT_RELU:
        _relu_bwd_colsum(dy, y, dh, db)
        return
    _bias_act_bwd(dy, y, code, y.dtype.type(alpha), dh)
    colsum_acc(dh, db)


@_jit
def _relu_bwd_colsum(dy, y, dh, db):
    n, m = y.shape
    acc = np.zeros(m, dtype=db.dtype)
    for i in range(n):
        for j in range(m):
            v = relu_vjp(dy[i, j], y[i, j], 0.0)
            dh[i, j] = v
            acc[j] += v
    for j in range(m):
        db[j] += acc[j]


@_jit
def _bias_act(h, b, code, alpha):
    n, m = h.shape
    for i in range(n):
        for j in range(m):
            h[i, j] = act_fwd(h[i, j] + b[j], code, alpha)


@_jit
def _bias_act_bwd(dy, y, code, alpha, dh):
    n, m = y.shape
    for i in range(n):
        for j in range(m):
            dh[i, j] = act_vjp(dy[i, j], y[i, j], code, alpha)


@cpu_kernel
def colsum_acc(a, out):
    """out[j] += sum_n a[n, j]: the bias gradient (rows reduced serially, no race)."""
    n, m = a.shape
    for i in range(n):
        for j in range(m):
            out[j] += a[i, j]


@cpu_kernel
def add_inplace(a, b):
    """a += b element-wise (2-D)."""
    n, m = a.shape
    for i in range(n):
        for j in range(m):
            a[i, j] += b[i, j]


@cpu_kernel
def gather_cols(x, idx, out, offset):
    """out[n, offset + j] = x[n, idx[j]] (assembles a conditioner input in place)."""
    n = x.shape[0]
    k = idx.shape[0]
    for i in range(n):
        for j in range(k):
            out[i, offset + j] = x[i, idx[j]]


@cpu_kernel
def scatter_add_cols(src, idx, out):
    """out[n, idx[j]] += src[n, j] for j < len(idx) (idx distinct; extra src columns ignored)."""
    n = out.shape[0]
    k = idx.shape[0]
    for i in range(n):
        for j in range(k):
            out[i, idx[j]] += src[i, j]


# -- block-sparse GEMMs for masked weights (MADE) ------------------------------------------------
# A plan lists rectangles that hold every nonzero of a masked weight w (K, M):
#   column blocks (c0, c1, r0, r1): columns c0:c1 of w are zero outside rows r0:r1;
#   row blocks    (r0, r1, c0, c1): rows r0:r1 of w are zero outside columns c0:c1.
# Each rectangle is one BLAS call on strided views (numpy passes views with a unit inner
# stride straight to BLAS, out= included), so no copy is made. ``nfcore.nn.made.block_plan``
# builds the plans; None means dense.

_BLOCK_MIN_ROWS = 16  # below this the extra calls cost more than the multiply-adds they save
#: with several BLAS threads, blocks pay only when they are big enough for BLAS to split them too:
#: a mean of at least this many multiply-adds per block; with one thread, blocks win from 16 rows
#: (figures: benchmarks/RESULTS.md, "Measurements behind the code")
_THREADED_BLOCK_MACS = 1 << 20


@lru_cache(maxsize=256)
def _mean_block_area(blocks):
    return sum((a1 - a0) * (b1 - b0) for a0, a1, b0, b1 in blocks) / len(blocks)


def _blocks_pay(rows, blocks):
    """Whether the block-sparse product beats the dense one for this many rows."""
    if blocks is None or rows < _BLOCK_MIN_ROWS:
        return False
    return blas_threads() == 1 or rows * _mean_block_area(blocks) >= _THREADED_BLOCK_MACS


@cpu_op
def masked_linear_act(x, w, b, col_blocks, code, alpha, out):
    """out = phi(x @ w + b), touching only the column blocks' rectangles of w."""
    if not _blocks_pay(x.shape[0], col_blocks):
        linear_act(x, w, b, code, alpha, out)
        return
    for c0, c1, r0, r1 in col_blocks:
        if r1 > r0:
            np.matmul(x[:, r0:r1], w[r0:r1, c0:c1], out=out[:, c0:c1])
        else:
            out[:, c0:c1] = 0
    _bias_act(out, b, code, out.dtype.type(alpha))


@cpu_op
def masked_matmul_nt(a, w, row_blocks, out):
    """out = a @ w.T, (N, M) @ (K, M).T -> (N, K), touching only the row blocks' rectangles."""
    if not _blocks_pay(a.shape[0], row_blocks):
        matmul_nt(a, w, out)
        return
    for r0, r1, c0, c1 in row_blocks:
        if c1 > c0:
            np.matmul(a[:, c0:c1], w[r0:r1, c0:c1].T, out=out[:, r0:r1])
        else:
            out[:, r0:r1] = 0


@cpu_op
def masked_matmul_tn_acc(a, b, mask, col_blocks, out):
    """out += (a.T @ b) * mask: a masked weight's gradient, the products only on the column
    blocks' rectangles (the plan covers every nonzero of the mask)."""
    if not _blocks_pay(a.shape[0], col_blocks):
        _tn_blocks(a, b, mask, out)
        return
    for c0, c1, r0, r1 in col_blocks:
        if r1 > r0:
            tmp = pooled_empty((r1 - r0, c1 - c0), out.dtype)
            np.matmul(a[:, r0:r1].T, b[:, c0:c1], out=tmp)
            mask_mul_acc(tmp, mask[r0:r1, c0:c1], out[r0:r1, c0:c1])
