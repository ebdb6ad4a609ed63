"""CUDA element-wise ops: diagonal affine maps, Gaussian log-densities, reductions.

A "diagonal affine" map ``out = x * exp(ls) + loc`` (and its inverse) serves NICE's scaling
layer, data standardisation and (on ``(N*H*W, C)`` rows) Glow's actnorm; ``rows_per_sample``
says how many rows belong to one sample so that the log-det gradient is routed right.

Per-sample sums (log-densities) use one thread per row. Per-parameter sums (``dloc``,
``dlogscale``) use one thread per (column, chunk of rows), fused with the element-wise
gradient, then ``dense.colsum_acc`` over the chunk sums: deterministic, no atomics.
``total`` and ``sumsq`` reduce on the device in float64 (a grid-stride loop, then a tree in
shared memory per block, then one block over the block sums) and copy one float back.
"""

import numpy as np
from numba import cuda, float64

from .. import launch as _launch
from .._scalar import device_maths
from ..array import cuda as _array
from ..dense.cuda import _chunk_sums_target, _column_chunks, _column_grid, _finish_chunk_sums
from ..registry import cuda_op
from . import math as _maths

_maths = device_maths(_maths)


#: shared-memory slots of a reduction block, so the most threads a reduction block is launched with
_REDUCE_THREADS = 256


# -- diagonal affine -------------------------------------------------------------------------


@cuda.jit(cache=True)
def _diag_affine_kernel(x, loc, logscale, sign, out):
    t = cuda.grid(1)
    if t < x.size:
        i, j = t // x.shape[1], t % x.shape[1]
        out[i, j] = _maths.diag_affine_value(x[i, j], loc[j], _maths.column_scale(logscale[j], sign), sign)


@cuda.jit(cache=True)
def _diag_affine_bwd_kernel(
    dout, dlogdet, out, loc, logscale, sign, rows_per_sample, chunk, din, dloc_part, dls_part, accumulate
):
    j = cuda.grid(1)
    ch = cuda.blockIdx.y
    if j < dout.shape[1]:
        e = _maths.column_scale(logscale[j], sign)  # once per column
        acc_loc = 0.0
        acc_ls = 0.0
        for i in range(ch * chunk, min(dout.shape[0], (ch + 1) * chunk)):
            dl = dlogdet[i // rows_per_sample]
            din[i, j], g_loc, g_ls = _maths.diag_affine_grad(dout[i, j], out[i, j], loc[j], e, dl, sign)
            acc_loc += g_loc
            acc_ls += g_ls
        _maths.store_chunk_pair(dloc_part, dls_part, ch, j, acc_loc, acc_ls, accumulate)


@cuda_op
def diag_affine(x, loc, logscale, sign, out):
    """sign=+1: out = x * exp(ls) + loc; sign=-1: out = (x - loc) * exp(-ls). Rows of (R, C)."""
    _diag_affine_kernel[_launch.grid(x.size)](x, loc, logscale, sign, out)


@cuda_op
def diag_affine_bwd(dout, dlogdet, out, loc, logscale, sign, rows_per_sample, din, dloc, dlogscale):
    """VJP of diag_affine, given its output; accumulates dloc, dlogscale (log-det included).

    Forward (sign=+1), out = x e^ls + loc, logdet = rps * sum ls:
        din = dout e^ls; dloc += sum dout; dls += sum dout (out - loc) + sum_n dlogdet.
    Inverse (sign=-1), out = (x - loc) e^-ls, logdet = -rps * sum ls:
        din = dout e^-ls; dloc -= sum dout e^-ls; dls -= sum dout out + sum_n dlogdet.
    """
    rows, cols = dout.shape
    chunk, nchunks = _column_chunks(rows)
    loc_part, accumulate = _chunk_sums_target(dloc, nchunks)
    ls_part, _ = _chunk_sums_target(dlogscale, nchunks)
    _diag_affine_bwd_kernel[_column_grid(cols, nchunks)](
        dout, dlogdet, out, loc, logscale, sign, rows_per_sample, chunk, din, loc_part, ls_part, accumulate
    )
    _finish_chunk_sums(loc_part, dloc)
    _finish_chunk_sums(ls_part, dlogscale)


@cuda.jit(cache=True)
def _mask_mul_kernel(a, mask, out, accumulate):
    t = cuda.grid(1)
    if t < a.size:
        i, j = t // a.shape[1], t % a.shape[1]
        if accumulate:
            out[i, j] += a[i, j] * mask[i, j]
        else:
            out[i, j] = a[i, j] * mask[i, j]


@cuda_op
def mask_mul(a, mask, out):
    """out = a * mask (2-D): a masked layer's effective weight."""
    _mask_mul_kernel[_launch.grid(a.size)](a, mask, out, 0)


@cuda_op
def mask_mul_acc(a, mask, out):
    """out += a * mask (2-D): a masked layer's weight gradient, masked entries never touched."""
    _mask_mul_kernel[_launch.grid(a.size)](a, mask, out, 1)


@cuda.jit(cache=True)
def _fill_sum_kernel(out, v, scale):
    i = cuda.grid(1)
    if i < out.shape[0]:
        acc = 0.0
        for j in range(v.shape[0]):  # each thread sums the (short) vector itself: no sync needed
            acc += v[j]
        out[i] = scale * acc


@cuda_op
def fill_sum(out, v, scale):
    """out[:] = scale * sum(v): a diagonal layer's per-sample log-det, with no host round trip."""
    _fill_sum_kernel[_launch.grid(out.shape[0])](out, v, float(scale))


# -- Gaussian log-densities ------------------------------------------------------------------


@cuda.jit(cache=True)
def _normal_logprob_kernel(z, out):
    i = cuda.grid(1)
    if i < z.shape[0]:
        out[i] = _maths.normal_row(z, i)


@cuda.jit(cache=True)
def _normal_logprob_bwd_kernel(z, dlp, dz):
    t = cuda.grid(1)
    if t < z.size:
        i, j = t // z.shape[1], t % z.shape[1]
        dz[i, j] = -z[i, j] * dlp[i]


@cuda.jit(cache=True)
def _diag_normal_logprob_kernel(z, loc, logscale, out):
    i = cuda.grid(1)
    if i < z.shape[0]:
        acc = 0.0
        for j in range(z.shape[1]):
            acc += _maths.diag_normal_term(z[i, j], loc[j], _maths.column_scale(logscale[j], -1), logscale[j])
        out[i] = acc - 0.5 * z.shape[1] * _maths.LOG_2PI


@cuda.jit(cache=True)
def _diag_normal_logprob_bwd_kernel(z, loc, logscale, dlp, chunk, dz, dloc_part, dls_part, accumulate):
    j = cuda.grid(1)
    ch = cuda.blockIdx.y
    if j < z.shape[1]:
        inv_s = _maths.column_scale(logscale[j], -1)  # once per column
        acc_loc = 0.0
        acc_ls = 0.0
        for i in range(ch * chunk, min(z.shape[0], (ch + 1) * chunk)):
            dz[i, j], g_loc, g_ls = _maths.diag_normal_grad(z[i, j], loc[j], inv_s, dlp[i])
            acc_loc += g_loc
            acc_ls += g_ls
        _maths.store_chunk_pair(dloc_part, dls_part, ch, j, acc_loc, acc_ls, accumulate)


@cuda_op
def normal_logprob(z, out):
    """out[n] = -0.5 * sum_d z[n, d]^2 - D/2 log(2 pi); z is (N, D)."""
    _normal_logprob_kernel[_launch.grid(z.shape[0])](z, out)


@cuda_op
def normal_logprob_bwd(z, dlp, dz):
    """dz[n, d] = -z[n, d] * dlp[n]."""
    _normal_logprob_bwd_kernel[_launch.grid(z.size)](z, dlp, dz)


@cuda_op
def diag_normal_logprob(z, loc, logscale, out):
    """out[n] = sum_d [-0.5 ((z - mu)/s)^2 - log s] - D/2 log(2 pi), s = exp(logscale)."""
    _diag_normal_logprob_kernel[_launch.grid(z.shape[0])](z, loc, logscale, out)


@cuda_op
def diag_normal_logprob_bwd(z, loc, logscale, dlp, dz, dloc, dlogscale):
    """VJP: with u = (z - mu)/s, dz = -u/s dlp; dmu += u/s dlp; dlogs += (u^2 - 1) dlp."""
    rows, cols = z.shape
    chunk, nchunks = _column_chunks(rows)
    loc_part, accumulate = _chunk_sums_target(dloc, nchunks)
    ls_part, _ = _chunk_sums_target(dlogscale, nchunks)
    _diag_normal_logprob_bwd_kernel[_column_grid(cols, nchunks)](
        z, loc, logscale, dlp, chunk, dz, loc_part, ls_part, accumulate
    )
    _finish_chunk_sums(loc_part, dloc)
    _finish_chunk_sums(ls_part, dlogscale)


# -- reductions to one number, scaling -------------------------------------------------------


@cuda.jit(cache=True)
def _block_sums_kernel(a, mode, partial):
    """partial[block] = the reduction ``mode`` (``elementwise.reduce_step``: 0 sum, 1 sum of
    squares, 2 max |a|) of a[i] over the block's grid-stride share, in float64."""
    buf = cuda.shared.array(_REDUCE_THREADS, float64)
    tid = cuda.threadIdx.x
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    acc = float64(0.0)
    while i < a.shape[0]:
        acc = _maths.reduce_step(acc, float64(a[i]), mode)
        i += stride
    buf[tid] = acc
    cuda.syncthreads()
    # a tree over the block's threads, in a fixed order (any block size); partial results
    # combine by sum (modes 0, 1) or by max (mode 2)
    combine = 2 if mode == 2 else 0
    bd = cuda.blockDim.x
    s = 1
    while s < bd:
        if tid % (2 * s) == 0 and tid + s < bd:
            buf[tid] = _maths.reduce_step(buf[tid], buf[tid + s], combine)
        cuda.syncthreads()
        s *= 2
    if tid == 0:
        partial[cuda.blockIdx.x] = buf[0]


def _reduce(a, mode):
    flat = _launch.flat(a)
    threads = min(int(_launch.THREADS_PER_BLOCK), _REDUCE_THREADS)
    # at most `threads` blocks: enough to fill a GPU, and the second pass then strides only a little
    blocks = max(1, min(-(-flat.shape[0] // threads), threads))
    partial = cuda.device_array(blocks, dtype=np.float64)
    _block_sums_kernel[blocks, threads](flat, mode, partial)
    if blocks > 1:
        result = cuda.device_array(1, dtype=np.float64)
        _block_sums_kernel[1, threads](partial, 2 if mode == 2 else 0, result)
        partial = result
    return float(_array.to_host(partial)[0])


@cuda_op
def max_abs(a):
    """max |a| over every element as a Python float (0 for an empty array; NaN if any is NaN)."""
    return _reduce(a, 2)


@cuda_op
def sumsq(a):
    """sum of squares of a 1-D array, accumulated in float64 (a Python float)."""
    return _reduce(a, 1)


@cuda_op
def total(a):
    """sum of all elements as a Python float (float64 accumulation)."""
    return _reduce(a, 0)


@cuda.jit(cache=True)
def _scale_kernel(a, c):
    i = cuda.grid(1)
    if i < a.shape[0]:
        a[i] *= c


@cuda_op
def scale_inplace(a, c):
    """a *= c for a 1-D array."""
    _scale_kernel[_launch.grid(a.shape[0])](a, c)


def parity_cases(c):
    """The element-wise ops' parity inputs (``nfcore.kernels.parity``): both signs, column sums
    over several chunks and over two rows, long reductions."""
    r, nan, s = c.r, c.nan, c.s
    n, d, flat = c.n, c.d, s.flat

    def mask():
        return (c.u(n, d) < 0.5).astype(c.dt)

    return {
        "diag_affine": [(f"sign={sg}", [r(n, d), r(d), r(d), sg, nan(n, d)], [4]) for sg in (1, -1)],
        "diag_affine_bwd": [
            (f"sign={sg},rps={rps}", [r(rows, d), r(rows // rps), r(rows, d), r(d), r(d), sg, rps, nan(rows, d), r(d),
                                      r(d)], [7, 8, 9])
            for sg in (1, -1) for rows, rps in ((s.rows - s.rows % 3, 3), (2, 1))],
        "normal_logprob": [("", [r(n, d), nan(n)], [1])],
        "normal_logprob_bwd": [("", [r(n, d), r(n), nan(n, d)], [2])],
        "diag_normal_logprob": [("", [r(n, d), r(d), r(d, scale=0.5), nan(n)], [3])],
        "diag_normal_logprob_bwd": [
            (f"rows={rows}", [r(rows, d), r(d), r(d, scale=0.5), r(rows), nan(rows, d), r(d), r(d)], [4, 5, 6])
            for rows in (s.rows, 2)],
        "mask_mul": [("", [r(n, d), mask(), nan(n, d)], [2])],
        "mask_mul_acc": [("", [r(n, d), mask(), r(n, d)], [2])],
        "fill_sum": [(f"scale={sc}", [nan(n), r(d), sc], [0]) for sc in (1.0, -3.0)],
        "sumsq": [("", [r(flat)], [])],
        "max_abs": [("2-D", [r(n, d)], []), ("long", [r(40 * flat)], [])],
        "total": [("2-D", [r(n, d)], []), ("long", [r(40 * flat)], [])],
        "scale_inplace": [("", [r(flat), 0.37], [0])],
    }
