"""CUDA coupling ops: the element-wise map of a coupling layer fused with its log-det.

The conditioner output ``h`` is ``(N, 2B)`` for affine coupling (shift in columns
``[0, B)``, raw log-scale in ``[B, 2B)``) and ``(N, B)`` for additive coupling; ``idx_b``
lists the B transformed columns of the ``(N, D)`` input. Untransformed columns are copied.

One thread per sample (row): it copies the row, overwrites the transformed columns and sums
their log-scales into ``logdet[n]``, so the copy-then-overwrite order and the per-sample
sum need no synchronisation. The math is the CPU twin's, through the same ``softclamp``.
"""

import math
import sys

from numba import cuda

from .._scalar import softclamp, softclamp_grad

__all__ = [
    "affine_coupling_fwd",
    "affine_coupling_inv",
    "affine_coupling_fwd_bwd",
    "affine_coupling_inv_bwd",
    "additive_coupling",
    "additive_coupling_bwd",
]

# the package (nfcore.kernels.cuda) holds the launch settings; read them at call time so tests can shrink them
_pkg = sys.modules[__package__]


@cuda.jit(cache=True)
def _affine_fwd_kernel(x, h, idx_b, bound, z, logdet):
    i = cuda.grid(1)
    if i < x.shape[0]:
        nb = idx_b.shape[0]
        for j in range(x.shape[1]):
            z[i, j] = x[i, j]
        acc = 0.0
        for j in range(nb):
            c = idx_b[j]
            ls = softclamp(h[i, nb + j], bound)
            z[i, c] = x[i, c] * math.exp(ls) + h[i, j]
            acc += ls
        logdet[i] = acc


@cuda.jit(cache=True)
def _affine_inv_kernel(z, h, idx_b, bound, x, logdet):
    i = cuda.grid(1)
    if i < z.shape[0]:
        nb = idx_b.shape[0]
        for j in range(z.shape[1]):
            x[i, j] = z[i, j]
        acc = 0.0
        for j in range(nb):
            c = idx_b[j]
            ls = softclamp(h[i, nb + j], bound)
            x[i, c] = (z[i, c] - h[i, j]) * math.exp(-ls)
            acc -= ls
        logdet[i] = acc


@cuda.jit(cache=True)
def _affine_fwd_bwd_kernel(dz, dlogdet, x, h, idx_b, bound, dx, dh):
    i = cuda.grid(1)
    if i < x.shape[0]:
        nb = idx_b.shape[0]
        for j in range(x.shape[1]):
            dx[i, j] = dz[i, j]
        for j in range(nb):
            c = idx_b[j]
            ls = softclamp(h[i, nb + j], bound)
            s = math.exp(ls)
            g = dz[i, c]
            dx[i, c] = g * s
            dh[i, j] = g
            dh[i, nb + j] = (g * x[i, c] * s + dlogdet[i]) * softclamp_grad(ls, bound)


@cuda.jit(cache=True)
def _affine_inv_bwd_kernel(dx, dlogdet, x, h, idx_b, bound, dz, dh):
    i = cuda.grid(1)
    if i < x.shape[0]:
        nb = idx_b.shape[0]
        for j in range(x.shape[1]):
            dz[i, j] = dx[i, j]
        for j in range(nb):
            c = idx_b[j]
            ls = softclamp(h[i, nb + j], bound)
            g = dx[i, c] * math.exp(-ls)
            dz[i, c] = g
            dh[i, j] = -g
            dh[i, nb + j] = (-dx[i, c] * x[i, c] - dlogdet[i]) * softclamp_grad(ls, bound)


@cuda.jit(cache=True)
def _additive_kernel(x, h, idx_b, sign, out):
    i = cuda.grid(1)
    if i < x.shape[0]:
        for j in range(x.shape[1]):
            out[i, j] = x[i, j]
        for j in range(idx_b.shape[0]):
            c = idx_b[j]
            out[i, c] = x[i, c] + sign * h[i, j]


@cuda.jit(cache=True)
def _additive_bwd_kernel(dout, idx_b, sign, din, dh):
    i = cuda.grid(1)
    if i < dout.shape[0]:
        for j in range(dout.shape[1]):
            din[i, j] = dout[i, j]
        for j in range(idx_b.shape[0]):
            dh[i, j] = sign * dout[i, idx_b[j]]


def affine_coupling_fwd(x, h, idx_b, bound, z, logdet):
    """z_b = x_b * exp(ls) + t, ls = bound * tanh(h_s / bound); logdet[n] = sum_b ls."""
    _affine_fwd_kernel[_pkg._grid(x.shape[0])](x, h, idx_b, bound, z, logdet)


def affine_coupling_inv(z, h, idx_b, bound, x, logdet):
    """x_b = (z_b - t) * exp(-ls); logdet[n] = -sum_b ls."""
    _affine_inv_kernel[_pkg._grid(z.shape[0])](z, h, idx_b, bound, x, logdet)


def affine_coupling_fwd_bwd(dz, dlogdet, x, h, idx_b, bound, dx, dh):
    """VJP of affine_coupling_fwd.

    dx_a = dz_a; dx_b = dz_b * s; dt = dz_b; d raw = (dz_b * x_b * s + dlogdet) * (1 - (ls/bound)^2).
    """
    _affine_fwd_bwd_kernel[_pkg._grid(x.shape[0])](dz, dlogdet, x, h, idx_b, bound, dx, dh)


def affine_coupling_inv_bwd(dx, dlogdet, x, h, idx_b, bound, dz, dh):
    """VJP of affine_coupling_inv, given its *output* x.

    x_b = (z_b - t) e^{-ls}: dz_b = dx_b e^{-ls}; dt = -dx_b e^{-ls};
    d ls = -dx_b * x_b - dlogdet; d raw = d ls * (1 - (ls/bound)^2).
    """
    _affine_inv_bwd_kernel[_pkg._grid(x.shape[0])](dx, dlogdet, x, h, idx_b, bound, dz, dh)


def additive_coupling(x, h, idx_b, sign, out):
    """out = x with out_b = x_b + sign * t (sign = +1 forward, -1 inverse); log-det 0."""
    _additive_kernel[_pkg._grid(x.shape[0])](x, h, idx_b, sign, out)


def additive_coupling_bwd(dout, idx_b, sign, din, dh):
    """VJP of additive_coupling: din = dout; dt = sign * dout_b."""
    _additive_bwd_kernel[_pkg._grid(dout.shape[0])](dout, idx_b, sign, din, dh)
