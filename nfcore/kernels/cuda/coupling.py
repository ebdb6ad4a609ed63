"""CUDA coupling ops: the element-wise map of a coupling layer fused with its log-det.

The conditioner output ``h`` is ``(N, 2B)`` for affine coupling (shift in columns
``[0, B)``, raw log-scale in ``[B, 2B)``) and ``(N, B)`` for additive coupling; ``idx_b``
lists the B transformed columns of the ``(N, D)`` input. Untransformed columns are copied.

One thread per sample (row): it copies the row, overwrites the transformed columns and sums
their log-scales into ``logdet[n]``, so the copy-then-overwrite order and the per-sample
sum need no synchronisation. The row bodies are the CPU twin's: ``nfcore.kernels._rows``.
"""

import sys

from numba import cuda

from .. import _rows
from .._scalar import for_cuda

affine_fwd_row = for_cuda(_rows.affine_fwd_row)
affine_inv_row = for_cuda(_rows.affine_inv_row)
affine_fwd_bwd_row = for_cuda(_rows.affine_fwd_bwd_row)
affine_inv_bwd_row = for_cuda(_rows.affine_inv_bwd_row)
additive_row = for_cuda(_rows.additive_row)
additive_bwd_row = for_cuda(_rows.additive_bwd_row)

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
def _affine_fwd_kernel(x, h, idx_b, bound, z, logdet, ls):
    i = cuda.grid(1)
    if i < x.shape[0]:
        affine_fwd_row(x, h, idx_b, bound, z, logdet, ls, i)


@cuda.jit(cache=True)
def _affine_inv_kernel(z, h, idx_b, bound, x, logdet, ls):
    i = cuda.grid(1)
    if i < z.shape[0]:
        affine_inv_row(z, h, idx_b, bound, x, logdet, ls, i)


@cuda.jit(cache=True)
def _affine_fwd_bwd_kernel(dz, dlogdet, x, ls, idx_b, bound, dx, dh):
    i = cuda.grid(1)
    if i < x.shape[0]:
        affine_fwd_bwd_row(dz, dlogdet, x, ls, idx_b, bound, dx, dh, i)


@cuda.jit(cache=True)
def _affine_inv_bwd_kernel(dx, dlogdet, x, ls, idx_b, bound, dz, dh):
    i = cuda.grid(1)
    if i < x.shape[0]:
        affine_inv_bwd_row(dx, dlogdet, x, ls, idx_b, bound, dz, dh, i)


@cuda.jit(cache=True)
def _additive_kernel(x, h, idx_b, sign, out):
    i = cuda.grid(1)
    if i < x.shape[0]:
        additive_row(x, h, idx_b, sign, out, i)


@cuda.jit(cache=True)
def _additive_bwd_kernel(dout, idx_b, sign, din, dh):
    i = cuda.grid(1)
    if i < dout.shape[0]:
        additive_bwd_row(dout, idx_b, sign, din, dh, i)


def affine_coupling_fwd(x, h, idx_b, bound, z, logdet, ls):
    """z_b = x_b * exp(ls) + t, ls = bound * tanh(h_s / bound); logdet[n] = sum_b ls."""
    _affine_fwd_kernel[_pkg._grid(x.shape[0])](x, h, idx_b, bound, z, logdet, ls)


def affine_coupling_inv(z, h, idx_b, bound, x, logdet, ls):
    """x_b = (z_b - t) * exp(-ls); logdet[n] = -sum_b ls."""
    _affine_inv_kernel[_pkg._grid(z.shape[0])](z, h, idx_b, bound, x, logdet, ls)


def affine_coupling_fwd_bwd(dz, dlogdet, x, ls, idx_b, bound, dx, dh):
    """VJP of affine_coupling_fwd.

    dx_a = dz_a; dx_b = dz_b * s; dt = dz_b; d raw = (dz_b * x_b * s + dlogdet) * (1 - (ls/bound)^2).
    """
    _affine_fwd_bwd_kernel[_pkg._grid(x.shape[0])](dz, dlogdet, x, ls, idx_b, bound, dx, dh)


def affine_coupling_inv_bwd(dx, dlogdet, x, ls, idx_b, bound, dz, dh):
    """VJP of affine_coupling_inv, given its *output* x.

    x_b = (z_b - t) e^{-ls}: dz_b = dx_b e^{-ls}; dt = -dx_b e^{-ls};
    d ls = -dx_b * x_b - dlogdet; d raw = d ls * (1 - (ls/bound)^2).
    """
    _affine_inv_bwd_kernel[_pkg._grid(x.shape[0])](dx, dlogdet, x, ls, idx_b, bound, dz, dh)


def additive_coupling(x, h, idx_b, sign, out):
    """out = x with out_b = x_b + sign * t (sign = +1 forward, -1 inverse); log-det 0."""
    _additive_kernel[_pkg._grid(x.shape[0])](x, h, idx_b, sign, out)


def additive_coupling_bwd(dout, idx_b, sign, din, dh):
    """VJP of additive_coupling: din = dout; dt = sign * dout_b."""
    _additive_bwd_kernel[_pkg._grid(dout.shape[0])](dout, idx_b, sign, din, dh)
