"""CPU element-wise ops: diagonal affine maps, Gaussian log-densities, reductions.

A "diagonal affine" map ``out = x * exp(ls) + loc`` (and its inverse) serves NICE's scaling
layer, data standardisation and (on ``(N*H*W, C)`` rows) Glow's actnorm; ``rows_per_sample``
says how many rows belong to one sample so that the log-det gradient is routed right.
"""

import numpy as np
from numba import njit

from ..registry import cpu_kernel, cpu_op
from .math import (
    LOG_2PI,
    column_scale,
    diag_affine_grad,
    diag_affine_value,
    diag_normal_grad,
    diag_normal_term,
    normal_row,
)


@njit(cache=True, nogil=True, error_model="numpy")
def _column_scales(logscale, sign, like):
    """e[j] = e^(sign ls_j) in ``like``'s dtype: the exps once per column, not per element."""
    e = np.empty(logscale.shape[0], dtype=like.dtype)
    for j in range(logscale.shape[0]):
        e[j] = column_scale(logscale[j], sign)
    return e


@cpu_kernel
def diag_affine(x, loc, logscale, sign, out):
    """sign=+1: out = x * exp(ls) + loc; sign=-1: out = (x - loc) * exp(-ls). Rows of (R, C)."""
    r, c = x.shape
    e = _column_scales(logscale, sign, x)
    for i in range(r):
        for j in range(c):
            out[i, j] = diag_affine_value(x[i, j], loc[j], e[j], sign)


@cpu_kernel
def diag_affine_bwd(dout, dlogdet, out, loc, logscale, sign, rows_per_sample, din, dloc, dlogscale):
    """VJP of diag_affine, given its output; accumulates dloc, dlogscale (log-det included).

    Forward (sign=+1), out = x e^ls + loc, logdet = rps * sum ls:
        din = dout e^ls; dloc += sum dout; dls += sum dout (out - loc) + sum_n dlogdet.
    Inverse (sign=-1), out = (x - loc) e^-ls, logdet = -rps * sum ls:
        din = dout e^-ls; dloc -= sum dout e^-ls; dls -= sum dout out + sum_n dlogdet.
    The column sums run in float64 and are added to dloc, dlogscale once.
    """
    r, c = dout.shape
    e = _column_scales(logscale, sign, dout)
    acc_loc = np.zeros(c)
    acc_ls = np.zeros(c)
    for i in range(r):
        dl = dlogdet[i // rows_per_sample]
        for j in range(c):
            din[i, j], g_loc, g_ls = diag_affine_grad(dout[i, j], out[i, j], loc[j], e[j], dl, sign)
            acc_loc[j] += g_loc
            acc_ls[j] += g_ls
    for j in range(c):
        dloc[j] += acc_loc[j]
        dlogscale[j] += acc_ls[j]


@cpu_kernel
def normal_logprob(z, out):
    """out[n] = -0.5 * sum_d z[n, d]^2 - D/2 log(2 pi); z is (N, D)."""
    for i in range(z.shape[0]):
        out[i] = normal_row(z, i)


@cpu_kernel
def normal_logprob_bwd(z, dlp, dz):
    """dz[n, d] = -z[n, d] * dlp[n]."""
    n, d = z.shape
    for i in range(n):
        for j in range(d):
            dz[i, j] = -z[i, j] * dlp[i]


@cpu_kernel
def diag_normal_logprob(z, loc, logscale, out):
    """out[n] = sum_d [-0.5 ((z - mu)/s)^2 - log s] - D/2 log(2 pi), s = exp(logscale)."""
    n, d = z.shape
    inv_s = _column_scales(logscale, -1, z)
    const = -0.5 * d * LOG_2PI
    for i in range(n):
        acc = 0.0
        for j in range(d):
            acc += diag_normal_term(z[i, j], loc[j], inv_s[j], logscale[j])
        out[i] = acc + const


@cpu_kernel
def diag_normal_logprob_bwd(z, loc, logscale, dlp, dz, dloc, dlogscale):
    """VJP: with u = (z - mu)/s, dz = -u/s dlp; dmu += u/s dlp; dlogs += (u^2 - 1) dlp.
    The column sums run in float64 and are added to dloc, dlogscale once."""
    n, d = z.shape
    inv_s = _column_scales(logscale, -1, z)
    acc_loc = np.zeros(d)
    acc_ls = np.zeros(d)
    for i in range(n):
        for j in range(d):
            dz[i, j], g_loc, g_ls = diag_normal_grad(z[i, j], loc[j], inv_s[j], dlp[i])
            acc_loc[j] += g_loc
            acc_ls[j] += g_ls
    for j in range(d):
        dloc[j] += acc_loc[j]
        dlogscale[j] += acc_ls[j]


@cpu_kernel
def mask_mul(a, mask, out):
    """out = a * mask (2-D): a masked layer's effective weight."""
    r, c = a.shape
    for i in range(r):
        for j in range(c):
            out[i, j] = a[i, j] * mask[i, j]


@cpu_kernel
def mask_mul_acc(a, mask, out):
    """out += a * mask (2-D): a masked layer's weight gradient, masked entries never touched."""
    r, c = a.shape
    for i in range(r):
        for j in range(c):
            out[i, j] += a[i, j] * mask[i, j]


@cpu_kernel
def fill_sum(out, v, scale):
    """out[:] = scale * sum(v): a diagonal layer's per-sample log-det, with no host round trip."""
    acc = 0.0
    for j in range(v.shape[0]):
        acc += v[j]
    for i in range(out.shape[0]):
        out[i] = scale * acc


@cpu_op
@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})
def sumsq(a):
    """sum of squares of a 1-D array, accumulated in float64.

    Reassociation is allowed for this sum only (it vectorises; a gradient norm for clipping
    needs no particular summation order): four times faster.
    """
    acc = 0.0
    for i in range(a.shape[0]):
        acc += float(a[i]) * float(a[i])
    return acc


@cpu_op
def max_abs(a):
    """max |a| over every element as a Python float (0 for an empty array; NaN if any is NaN).
    numpy's reduction on the host (NaN propagates through np.max): nothing to compile, and the
    CUDA twin's per-element step is ``math.reduce_step``."""
    return float(np.max(np.abs(a))) if a.size else 0.0


@cpu_kernel
def scale_inplace(a, c):
    """a *= c for a 1-D array."""
    for i in range(a.shape[0]):
        a[i] *= c


@cpu_op
def total(a):
    """sum of all elements as a Python float (float64 accumulation)."""
    return float(np.sum(a, dtype=np.float64))
