"""CUDA image ops (channels last), twins of ``nfcore.kernels.image`` (same layouts and meaning).

One thread per output element for the data-movement ops (squeeze, im2col; col2im: one thread
per pixel, gathering its taps, so no atomics), one thread per row for the logit map (its per-sample log-det is that
thread's sum), one thread per weight entry for the LU composition and its VJP.
"""


import numpy as np
from numba import cuda

from .. import launch as _launch
from .._scalar import device_maths
from ..registry import cuda_op
from . import math as _maths

_maths = device_maths(_maths)



@cuda.jit(cache=True)
def _squeeze_kernel(x, out, inverse):
    # one thread per element of the squeezed array (N, H/2, W/2, 4C)
    t = cuda.grid(1)
    n, h2, w2, c4 = out.shape if inverse == 0 else x.shape
    if t < n * h2 * w2 * c4:
        q = t % c4
        r = t // c4
        j = r % w2
        r = r // w2
        i = r % h2
        _maths.squeeze_element(x, out, inverse != 0, r // h2, i, j, q)


@cuda_op
def squeeze2x2(x, out):
    """(N, H, W, C) -> (N, H/2, W/2, 4C), channel group 2a+b holds pixel (2i+a, 2j+b)."""
    _squeeze_kernel[_launch.grid(out.size)](x, out, 0)


@cuda_op
def unsqueeze2x2(z, out):
    """The inverse of squeeze2x2: (N, H/2, W/2, 4C) -> (N, H, W, C)."""
    _squeeze_kernel[_launch.grid(z.size)](z, out, 1)


@cuda.jit(cache=True)
def _im2col_kernel(x, k, col):
    t = cuda.grid(1)
    n, h, w, c = x.shape
    kc = k * k * c
    if t < n * h * w * kc:
        r = t // kc
        m = t - r * kc
        tap = m // c
        q = m - tap * c
        a = tap // k
        b = tap - a * k
        j = r % w
        i = (r // w) % h
        s = r // (w * h)
        ii = i + a - k // 2
        jj = j + b - k // 2
        if 0 <= ii < h and 0 <= jj < w:
            col[r, m] = x[s, ii, jj, q]
        else:
            col[r, m] = 0


@cuda_op
def im2col(x, k, col):
    """col[(n H + i) W + j, (a k + b) C + c] = x[n, i + a - k//2, j + b - k//2, c] (0 outside)."""
    _im2col_kernel[_launch.grid(col.size)](x, k, col)


@cuda.jit(cache=True)
def _col2im_kernel(dcol, k, dx):
    # one thread per pixel (its C channels)
    t = cuda.grid(1)
    n, h, w = dx.shape[0], dx.shape[1], dx.shape[2]
    if t < n * h * w:
        _maths.col2im_pixel(dcol, k, dx, t // (w * h), (t // w) % h, t % w)


@cuda_op
def col2im_acc(dcol, k, dx):
    """dx += im2col^T dcol (each dx element gathers its k^2 taps)."""
    _col2im_kernel[_launch.grid(dx.shape[0] * dx.shape[1] * dx.shape[2])](dcol, k, dx)


@cuda.jit(cache=True)
def _logit_kernel(x, alpha, sign, out, logdet):
    i = cuda.grid(1)
    if i < x.shape[0]:
        _maths.logit_row(x, alpha, sign, out, logdet, i)


@cuda_op
def logit_map(x, alpha, sign, out, logdet):
    """sign=+1: out = logit(alpha + (1-2alpha) x); sign=-1: its inverse; per-row log-det."""
    _logit_kernel[_launch.grid(x.shape[0])](x, alpha, sign, out, logdet)


@cuda.jit(cache=True)
def _logit_bwd_kernel(dout, dlogdet, y, alpha, sign, din):
    t = cuda.grid(1)
    if t < dout.size:
        i, j = t // dout.shape[1], t % dout.shape[1]
        _maths.logit_bwd_element(dout, dlogdet, y, alpha, sign, din, i, j)


@cuda_op
def logit_map_bwd(dout, dlogdet, y, alpha, sign, din):
    """VJP of logit_map given the data-side values y."""
    _logit_bwd_kernel[_launch.grid(dout.size)](dout, dlogdet, y, alpha, sign, din)


@cuda.jit(cache=True)
def _lu_compose_kernel(lower, upper, logs, sign, perm, w):
    t = cuda.grid(1)
    c = w.shape[0]
    if t < c * c:
        _maths.lu_compose_element(lower, upper, logs, sign, perm, w, t // c, t % c)


@cuda_op
def lu_compose(lower, upper, logs, sign, perm, w):
    """w = P L U' (see the CPU twin)."""
    _lu_compose_kernel[_launch.grid(w.size)](lower, upper, logs, sign, perm, w)


@cuda.jit(cache=True)
def _lu_compose_bwd_kernel(dw, lower, upper, logs, sign, inv, dlogdet, rows_per_sample, dlower, dupper, dlogs):
    t = cuda.grid(1)
    c = dw.shape[0]
    if t < c * c:
        r, q = t // c, t % c
        if q < r:
            dlower[r, q] += _maths.lu_lower_grad(dw, upper, _maths.lu_diag(logs, sign, q), inv, r, q)
        elif q > r:
            dupper[r, q] += _maths.lu_upper_grad(dw, lower, inv, r, q)
        else:
            dld = 0.0
            for s in range(dlogdet.shape[0]):
                dld += dlogdet[s]
            grad = _maths.lu_upper_grad(dw, lower, inv, r, r)
            dlogs[r] += grad * _maths.lu_diag(logs, sign, r) + rows_per_sample * dld


@cuda.jit(cache=True)
def _invert_perm_kernel(perm, inv):
    i = cuda.grid(1)
    if i < perm.shape[0]:
        inv[perm[i]] = i


@cuda_op
def lu_compose_bwd(dw, lower, upper, logs, sign, perm, dlogdet, rows_per_sample, dlower, dupper, dlogs):
    """Accumulate the VJP of lu_compose plus the log-det term (see the CPU twin)."""
    inv = cuda.device_array(perm.shape, dtype=perm.dtype)
    _invert_perm_kernel[_launch.grid(perm.shape[0])](perm, inv)
    _lu_compose_bwd_kernel[_launch.grid(dw.size)](dw, lower, upper, logs, sign, inv, dlogdet, rows_per_sample,
                                                dlower, dupper, dlogs)


def parity_cases(c):
    """The image ops' parity inputs (``nfcore.kernels.parity``): several blocks of threads, ragged
    edges, both kernel sizes, logits both ways, a permuted LU with signs."""
    r, nan, dt = c.r, c.nan, c.dt
    n, d = c.n, c.d
    k = 5
    perm = np.array([2, 0, 4, 1, 3], dtype=np.int64)
    sign = np.array([1, -1, -1, 1, 1], dtype=dt)
    lu = [r(k, k), r(k, k), r(k, scale=0.5), sign, perm]
    return {
        "squeeze2x2": [("", [r(2, 4, 6, 3), nan(2, 2, 3, 12)], [1])],
        "unsqueeze2x2": [("", [r(2, 2, 3, 12), nan(2, 4, 6, 3)], [1])],
        "im2col": [(f"k={ks}", [r(2, 3, 4, 2), ks, nan(24, ks * ks * 2)], [2]) for ks in (1, 3)],
        "col2im_acc": [(f"k={ks}", [r(24, ks * ks * 2), ks, r(2, 3, 4, 2)], [2]) for ks in (1, 3)],
        "logit_map": [("sign=1", [c.u(n, d, low=0.01, high=0.99), dt(0.05), 1, nan(n, d), nan(n)], [3, 4]),
                      ("sign=-1", [r(n, d, scale=2.0), dt(0.05), -1, nan(n, d), nan(n)], [3, 4])],
        "logit_map_bwd": [(f"sign={sg}", [r(n, d), r(n), c.u(n, d, low=0.01, high=0.99), dt(0.05), sg, nan(n, d)], [5])
                          for sg in (1, -1)],
        "lu_compose": [("", [*lu, nan(k, k)], [5])],
        "lu_compose_bwd": [(f"rps={rps}", [r(k, k), *lu, r(n), rps, r(k, k), r(k, k), r(k)], [8, 9, 10])
                           for rps in (3, -2)],
    }
