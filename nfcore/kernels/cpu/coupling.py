"""CPU coupling ops: the element-wise map of a coupling layer fused with its log-det.

The conditioner output ``h`` is ``(N, 2B)`` for affine coupling (shift in columns
``[0, B)``, raw log-scale in ``[B, 2B)``) and ``(N, B)`` for additive coupling; ``idx_b``
lists the B transformed columns of the ``(N, D)`` input. Untransformed columns are copied.
"""

import math

from numba import njit

from .._scalar import softclamp, softclamp_grad

_jit = njit(cache=True, error_model="numpy")  # numpy semantics: no zero-division branch, loops vectorise

__all__ = [
    "affine_coupling_fwd",
    "affine_coupling_inv",
    "affine_coupling_fwd_bwd",
    "affine_coupling_inv_bwd",
    "additive_coupling",
    "additive_coupling_bwd",
]


@_jit
def affine_coupling_fwd(x, h, idx_b, bound, z, logdet):
    """z_b = x_b * exp(ls) + t, ls = bound * tanh(h_s / bound); logdet[n] = sum_b ls."""
    n, d = x.shape
    nb = idx_b.shape[0]
    for i in range(n):
        for j in range(d):
            z[i, j] = x[i, j]
        acc = 0.0
        for j in range(nb):
            c = idx_b[j]
            ls = softclamp(h[i, nb + j], bound)
            z[i, c] = x[i, c] * math.exp(ls) + h[i, j]
            acc += ls
        logdet[i] = acc


@_jit
def affine_coupling_inv(z, h, idx_b, bound, x, logdet):
    """x_b = (z_b - t) * exp(-ls); logdet[n] = -sum_b ls."""
    n, d = z.shape
    nb = idx_b.shape[0]
    for i in range(n):
        for j in range(d):
            x[i, j] = z[i, j]
        acc = 0.0
        for j in range(nb):
            c = idx_b[j]
            ls = softclamp(h[i, nb + j], bound)
            x[i, c] = (z[i, c] - h[i, j]) * math.exp(-ls)
            acc -= ls
        logdet[i] = acc


@_jit
def affine_coupling_fwd_bwd(dz, dlogdet, x, h, idx_b, bound, dx, dh):
    """VJP of affine_coupling_fwd.

    dx_a = dz_a; dx_b = dz_b * s; dt = dz_b; d raw = (dz_b * x_b * s + dlogdet) * (1 - (ls/bound)^2).
    """
    n, d = x.shape
    nb = idx_b.shape[0]
    for i in range(n):
        for j in range(d):
            dx[i, j] = dz[i, j]
        for j in range(nb):
            c = idx_b[j]
            ls = softclamp(h[i, nb + j], bound)
            s = math.exp(ls)
            g = dz[i, c]
            dx[i, c] = g * s
            dh[i, j] = g
            dh[i, nb + j] = (g * x[i, c] * s + dlogdet[i]) * softclamp_grad(ls, bound)


@_jit
def affine_coupling_inv_bwd(dx, dlogdet, x, h, idx_b, bound, dz, dh):
    """VJP of affine_coupling_inv, given its *output* x.

    x_b = (z_b - t) e^{-ls}: dz_b = dx_b e^{-ls}; dt = -dx_b e^{-ls};
    d ls = -dx_b * x_b - dlogdet; d raw = d ls * (1 - (ls/bound)^2).
    """
    n, d = x.shape
    nb = idx_b.shape[0]
    for i in range(n):
        for j in range(d):
            dz[i, j] = dx[i, j]
        for j in range(nb):
            c = idx_b[j]
            ls = softclamp(h[i, nb + j], bound)
            g = dx[i, c] * math.exp(-ls)
            dz[i, c] = g
            dh[i, j] = -g
            dh[i, nb + j] = (-dx[i, c] * x[i, c] - dlogdet[i]) * softclamp_grad(ls, bound)


@_jit
def additive_coupling(x, h, idx_b, sign, out):
    """out = x with out_b = x_b + sign * t (sign = +1 forward, -1 inverse); log-det 0."""
    n, d = x.shape
    nb = idx_b.shape[0]
    for i in range(n):
        for j in range(d):
            out[i, j] = x[i, j]
        for j in range(nb):
            c = idx_b[j]
            out[i, c] = x[i, c] + sign * h[i, j]


@_jit
def additive_coupling_bwd(dout, idx_b, sign, din, dh):
    """VJP of additive_coupling: din = dout; dt = sign * dout_b."""
    n, d = dout.shape
    nb = idx_b.shape[0]
    for i in range(n):
        for j in range(d):
            din[i, j] = dout[i, j]
        for j in range(nb):
            dh[i, j] = sign * dout[i, idx_b[j]]
