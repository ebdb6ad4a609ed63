"""CUDA image ops (channels last), twins of ``nfcore.kernels.cpu.image`` (same layouts and meaning).

One thread per output element for the data-movement ops (squeeze, im2col, and col2im as a
gather, so no atomics), one thread per row for the logit map (its per-sample log-det is that
thread's sum), one thread per weight entry for the LU composition and its VJP.
"""

import math
import sys

from numba import cuda

__all__ = [
    "squeeze2x2",
    "unsqueeze2x2",
    "im2col",
    "col2im_acc",
    "logit_map",
    "logit_map_bwd",
    "lu_compose",
    "lu_compose_bwd",
]

_pkg = sys.modules[__package__]


@cuda.jit(cache=True)
def _squeeze_kernel(x, out, inverse):
    # one thread per element of the squeezed array (N, H/2, W/2, 4C)
    t = cuda.grid(1)
    n, h2, w2, c4 = out.shape if inverse == 0 else x.shape
    if t < n * h2 * w2 * c4:
        c = c4 // 4
        q = t % c4
        r = t // c4
        j = r % w2
        r = r // w2
        i = r % h2
        s = r // h2
        g = q // c
        k = q - g * c
        a = g // 2
        b = g - 2 * a
        if inverse == 0:
            out[s, i, j, q] = x[s, 2 * i + a, 2 * j + b, k]
        else:
            out[s, 2 * i + a, 2 * j + b, k] = x[s, i, j, q]


def squeeze2x2(x, out):
    """(N, H, W, C) -> (N, H/2, W/2, 4C), channel group 2a+b holds pixel (2i+a, 2j+b)."""
    _squeeze_kernel[_pkg._grid(out.size)](x, out, 0)


def unsqueeze2x2(z, out):
    """The inverse of squeeze2x2: (N, H/2, W/2, 4C) -> (N, H, W, C)."""
    _squeeze_kernel[_pkg._grid(z.size)](z, out, 1)


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


def im2col(x, k, col):
    """col[(n H + i) W + j, (a k + b) C + c] = x[n, i + a - k//2, j + b - k//2, c] (0 outside)."""
    _im2col_kernel[_pkg._grid(col.size)](x, k, col)


@cuda.jit(cache=True)
def _col2im_kernel(dcol, k, dx):
    t = cuda.grid(1)
    n, h, w, c = dx.shape
    if t < n * h * w * c:
        q = t % c
        r = t // c
        xx = r % w
        y = (r // w) % h
        s = r // (w * h)
        p = k // 2
        acc = dx[s, y, xx, q]
        for a in range(k):
            i = y - a + p
            if 0 <= i < h:
                for b in range(k):
                    j = xx - b + p
                    if 0 <= j < w:
                        acc += dcol[(s * h + i) * w + j, (a * k + b) * c + q]
        dx[s, y, xx, q] = acc


def col2im_acc(dcol, k, dx):
    """dx += im2col^T dcol (each dx element gathers its k^2 taps)."""
    _col2im_kernel[_pkg._grid(dx.size)](dcol, k, dx)


@cuda.jit(cache=True)
def _logit_kernel(x, alpha, sign, out, logdet):
    i = cuda.grid(1)
    if i < x.shape[0]:
        scale = 1.0 - 2.0 * alpha
        acc = 0.0
        for j in range(x.shape[1]):
            if sign > 0:
                u = alpha + scale * x[i, j]
                out[i, j] = math.log(u) - math.log1p(-u)
            else:
                t = x[i, j]
                if t >= 0:
                    u = 1.0 / (1.0 + math.exp(-t))
                else:
                    e = math.exp(t)
                    u = e / (1.0 + e)
                out[i, j] = (u - alpha) / scale
            acc += math.log(scale) - math.log(u) - math.log1p(-u)
        logdet[i] = sign * acc


def logit_map(x, alpha, sign, out, logdet):
    """sign=+1: out = logit(alpha + (1-2alpha) x); sign=-1: its inverse; per-row log-det."""
    _logit_kernel[_pkg._grid(x.shape[0])](x, alpha, sign, out, logdet)


@cuda.jit(cache=True)
def _logit_bwd_kernel(dout, dlogdet, y, alpha, sign, din):
    t = cuda.grid(1)
    d = dout.shape[1]
    if t < dout.shape[0] * d:
        i = t // d
        j = t - i * d
        scale = 1.0 - 2.0 * alpha
        u = alpha + scale * y[i, j]
        q = u * (1.0 - u)
        if sign > 0:
            din[i, j] = (dout[i, j] * scale + dlogdet[i] * scale * (2.0 * u - 1.0)) / q
        else:
            din[i, j] = dout[i, j] * q / scale + dlogdet[i] * (1.0 - 2.0 * u)


def logit_map_bwd(dout, dlogdet, y, alpha, sign, din):
    """VJP of logit_map given the data-side values y."""
    _logit_bwd_kernel[_pkg._grid(dout.size)](dout, dlogdet, y, alpha, sign, din)


@cuda.jit(cache=True)
def _lu_compose_kernel(lower, upper, logs, sign, perm, w):
    t = cuda.grid(1)
    c = w.shape[0]
    if t < c * c:
        i = t // c
        j = t - i * c
        r = perm[i]
        acc = 0.0
        if r == j:
            acc = sign[j] * math.exp(logs[j])
        elif r < j:
            acc = upper[r, j]
        for k in range(min(r, j + 1)):
            if k == j:
                u = sign[j] * math.exp(logs[j])
            else:
                u = upper[k, j]
            acc += lower[r, k] * u
        w[i, j] = acc


def lu_compose(lower, upper, logs, sign, perm, w):
    """w = P L U' (see the CPU twin)."""
    _lu_compose_kernel[_pkg._grid(w.size)](lower, upper, logs, sign, perm, w)


@cuda.jit(cache=True)
def _lu_compose_bwd_kernel(dw, lower, upper, logs, sign, perm, inv, dlogdet, rows_per_sample, dlower, dupper,
                           dlogs):
    t = cuda.grid(1)
    c = dw.shape[0]
    if t < c * c:
        r = t // c
        q = t - r * c
        if q < r:
            acc = 0.0
            for j in range(q, c):
                if j == q:
                    u = sign[j] * math.exp(logs[j])
                else:
                    u = upper[q, j]
                acc += dw[inv[r], j] * u
            dlower[r, q] += acc
        else:
            acc = dw[inv[r], q]
            for m in range(r + 1, c):
                acc += lower[m, r] * dw[inv[m], q]
            if q == r:
                dld = 0.0
                for s in range(dlogdet.shape[0]):
                    dld += dlogdet[s]
                dlogs[r] += acc * sign[r] * math.exp(logs[r]) + rows_per_sample * dld
            else:
                dupper[r, q] += acc


@cuda.jit(cache=True)
def _invert_perm_kernel(perm, inv):
    i = cuda.grid(1)
    if i < perm.shape[0]:
        inv[perm[i]] = i


def lu_compose_bwd(dw, lower, upper, logs, sign, perm, dlogdet, rows_per_sample, dlower, dupper, dlogs):
    """Accumulate the VJP of lu_compose plus the log-det term (see the CPU twin)."""
    inv = cuda.device_array(perm.shape, dtype=perm.dtype)
    _invert_perm_kernel[_pkg._grid(perm.shape[0])](perm, inv)
    _lu_compose_bwd_kernel[_pkg._grid(dw.size)](dw, lower, upper, logs, sign, perm, inv, dlogdet, rows_per_sample,
                                                dlower, dupper, dlogs)
