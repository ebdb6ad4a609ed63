"""CUDA twins of the continuous-flow ops (``nfcore.kernels.ode``): one thread per row.

``cnf_field``: each thread runs its row through the network with the probes' tangents
(``math.field_row``) in the CPU op's workspace layout. ``cnf_field_vjp``: the same forward, then
each thread's reverse pass keeps its per-row terms (``math.field_vjp_row``), one thread per
parameter sums them over the rows in a fixed order (``math.field_vjp_param``: no atomics, the
same result every run), and one thread the time derivative. The per-row terms live in a scratch
array of the op's own (cached per size).
"""

import numpy as np
from numba import cuda

from .. import launch as _launch
from .._scalar import device_maths
from ..array.cuda import to_host
from ..elementwise.cuda import total
from ..registry import cuda_op
from . import math as _maths
from .cpu import _offsets, _param_offsets

_maths = device_maths(_maths)

_SCRATCH = {}


def _layout(y, probes, dims):
    """(host dims, off, poff, roff, rev size, widest) for n rows and ``dims`` (a device array)."""
    dims_h = np.ascontiguousarray(to_host(dims), dtype=np.int64)
    n, p, d = y.shape[0], probes.shape[1], probes.shape[2]
    layers = dims_h.size - 1
    roff = np.empty((layers + 1, 4), np.int64)
    o = 0
    for k in range(layers):
        b = int(dims_h[k + 1])
        roff[k] = (o, o + n * b, o + 2 * n * b, o + 3 * n * b)
        o += 3 * n * b + n * p * b
    widest = int(dims_h.max())
    roff[layers] = (o, o + 2 * n * widest, 0, 0)
    size = o + 2 * n * widest + 2 * n * p * widest
    return dims_h, _offsets(n, p, dims_h, d), _param_offsets(dims_h), roff, size, widest


def _device(*arrays):
    return [cuda.to_device(a) for a in arrays]


@cuda.jit(cache=True)
def _field_kernel(y, t, ctx, theta, dims, code, probes, w, dy, work, off, poff):
    i = cuda.grid(1)
    if i < y.shape[0]:
        _maths.field_row(i, y, t, ctx, theta, dims, code, probes, w, dy, work, off, poff)


@cuda.jit(cache=True)
def _field_vjp_rows_kernel(y, t, ctx, theta, dims, code, probes, w, gy, dy, dz, dctx, work, off, poff, rev, roff,
                           widest):
    i = cuda.grid(1)
    if i < y.shape[0]:
        _maths.field_row(i, y, t, ctx, theta, dims, code, probes, w, dy, work, off, poff)
        _maths.field_vjp_row(i, t, theta, dims, code, probes, w, gy, dy, dz, dctx, work, off, poff, rev, roff, widest)


@cuda.jit(cache=True)
def _field_vjp_param_kernel(t, theta, dims, p, d, n, work, off, poff, rev, roff, dtheta):
    e = cuda.grid(1)
    if e < theta.shape[0]:
        _maths.field_vjp_param(e, t, theta, dims, p, d, n, work, off, poff, rev, roff, dtheta)


@cuda.jit(cache=True)
def _field_vjp_time_kernel(t, theta, dims, n, poff, rev, roff, dt):
    if cuda.grid(1) == 0:
        _maths.field_vjp_time(t, theta, dims, n, poff, rev, roff, dt)


@cuda_op
def cnf_field(y, t, ctx, theta, dims, code, probes, w, dy, work):
    """dy = [f(z, t), w sum_p u_p . J u_p, |f|^2, w sum_p |J u_p|^2] (see the CPU twin)."""
    _, off, poff, _, _, _ = _layout(y, probes, dims)
    off, poff = _device(off, poff)
    _field_kernel[_launch.grid(y.shape[0])](y, float(t), ctx, theta, dims, int(code), probes, float(w), dy, work,
                                            off, poff)


@cuda_op
def cnf_field_vjp(y, t, ctx, theta, dims, code, probes, w, gy, dy, dz, dtheta, dctx, dt, work):
    """The field (into dy) and its VJP for the cotangent gy: dz, dtheta, dctx, dt (see the CPU twin)."""
    _, off, poff, roff, size, widest = _layout(y, probes, dims)
    key = (size, np.dtype(theta.dtype).str)
    rev = _SCRATCH.get(key)
    if rev is None:
        _SCRATCH.clear()
        rev = _SCRATCH[key] = cuda.device_array(size, theta.dtype)
    off, poff, roff = _device(off, poff, roff)
    n, t = y.shape[0], float(t)
    _field_vjp_rows_kernel[_launch.grid(n)](y, t, ctx, theta, dims, int(code), probes, float(w), gy, dy, dz, dctx,
                                            work, off, poff, rev, roff, widest)
    _field_vjp_param_kernel[_launch.grid(theta.shape[0])](t, theta, dims, probes.shape[1], probes.shape[2], n, work,
                                                          off, poff, rev, roff, dtheta)
    _field_vjp_time_kernel[1, 1](t, theta, dims, n, poff, rev, roff, dt)


@cuda.jit(cache=True)
def _error_sq_kernel(err, y0, y1, cols, rtol, atol, out):
    t = cuda.grid(1)
    if t < out.shape[0]:
        i, j = t // cols, t % cols
        out[t] = _maths.scaled_error_sq(err[i, j], y0[i, j], y1[i, j], rtol, atol)


@cuda_op
def rk_error_sumsq(err, y0, y1, cols, rtol, atol):
    """sum over every row i and the first ``cols`` columns j of
    (err_ij / (atol + rtol max(|y0_ij|, |y1_ij|)))^2 (float64): a thread per entry, then ``total``."""
    out = cuda.device_array(err.shape[0] * cols, dtype=np.float64)
    if out.shape[0] == 0:
        return 0.0
    _error_sq_kernel[_launch.grid(out.shape[0])](err, y0, y1, cols, rtol, atol, out)
    return total(out)


def parity_cases(c):
    """The continuous-flow ops' parity inputs (``nfcore.kernels.parity``): a row per thread over
    several blocks, a context, two probes per row, every smooth activation, three layers (the
    first and the last special in the VJP)."""
    from .math import field_work_size, layer_sizes

    r, nan, dt = c.r, c.nan, c.dt
    n, d, ctx, p = c.n, 3, 2, 2
    dims = np.array([d + ctx, 5, 4, d], dtype=np.int64)
    theta = r(sum(layer_sizes(list(dims))), scale=0.5)

    def common():
        return [r(n, d + 3), 0.3, r(n, ctx), theta.copy(), dims]

    work = field_work_size(n, p, list(dims), d)
    return {
        "cnf_field": [(f"code={code}", [*common(), code, r(n, p, d), 0.5, nan(n, d + 3), np.zeros(work, dt)], [8])
                      for code in (3, 5, 7)],
        "cnf_field_vjp": [
            (f"code={code}", [*common(), code, r(n, p, d), 0.5, r(n, d + 3), nan(n, d + 3), nan(n, d),
                              nan(*theta.shape), nan(n, ctx), nan(1), np.zeros(work, dt)],
             [9, 10, 11, 12, 13]) for code in (3, 5, 7)],
        "rk_error_sumsq": [(f"cols={cols}", [r(n, d + 3), r(n, d + 3), r(n, d + 3), cols, 1e-3, 1e-4], [])
                           for cols in (d + 1, d + 3)],
    }
