"""CPU coupling ops: the element-wise map of a coupling layer fused with its log-det.

The conditioner output ``h`` is ``(N, 2B)`` for affine coupling (shift in columns
``[0, B)``, raw log-scale in ``[B, 2B)``) and ``(N, B)`` for additive coupling; ``idx_b``
lists the B transformed columns of the ``(N, D)`` input. Untransformed columns are copied.
The forward and inverse maps also write the clamped log-scales ``ls`` (N, B), which their
backward passes read instead of recomputing them (one exp per element instead of three
transcendentals). The per-row math lives in ``nfcore.kernels._rows`` (shared with CUDA).
"""

from numba import njit

from .._rows import (
    additive_bwd_row,
    additive_row,
    affine_fwd_bwd_row,
    affine_fwd_row,
    affine_inv_bwd_row,
    affine_inv_row,
)

__all__ = [
    "affine_coupling_fwd",
    "affine_coupling_inv",
    "affine_coupling_fwd_bwd",
    "affine_coupling_inv_bwd",
    "additive_coupling",
    "additive_coupling_bwd",
]

_jit = njit(cache=True, error_model="numpy")  # numpy semantics: no zero-division branch, loops vectorise


@_jit
def affine_coupling_fwd(x, h, idx_b, bound, z, logdet, ls):
    """z_b = x_b * exp(ls) + t, ls = bound * tanh(h_s / bound); logdet[n] = sum_b ls."""
    for i in range(x.shape[0]):
        affine_fwd_row(x, h, idx_b, bound, z, logdet, ls, i)


@_jit
def affine_coupling_inv(z, h, idx_b, bound, x, logdet, ls):
    """x_b = (z_b - t) * exp(-ls); logdet[n] = -sum_b ls."""
    for i in range(z.shape[0]):
        affine_inv_row(z, h, idx_b, bound, x, logdet, ls, i)


@_jit
def affine_coupling_fwd_bwd(dz, dlogdet, x, ls, idx_b, bound, dx, dh):
    """VJP of affine_coupling_fwd.

    dx_a = dz_a; dx_b = dz_b * s; dt = dz_b; d raw = (dz_b * x_b * s + dlogdet) * (1 - (ls/bound)^2).
    """
    for i in range(x.shape[0]):
        affine_fwd_bwd_row(dz, dlogdet, x, ls, idx_b, bound, dx, dh, i)


@_jit
def affine_coupling_inv_bwd(dx, dlogdet, x, ls, idx_b, bound, dz, dh):
    """VJP of affine_coupling_inv, given its *output* x.

    x_b = (z_b - t) e^{-ls}: dz_b = dx_b e^{-ls}; dt = -dx_b e^{-ls};
    d ls = -dx_b * x_b - dlogdet; d raw = d ls * (1 - (ls/bound)^2).
    """
    for i in range(x.shape[0]):
        affine_inv_bwd_row(dx, dlogdet, x, ls, idx_b, bound, dz, dh, i)


@_jit
def additive_coupling(x, h, idx_b, sign, out):
    """out = x with out_b = x_b + sign * t (sign = +1 forward, -1 inverse); log-det 0."""
    for i in range(x.shape[0]):
        additive_row(x, h, idx_b, sign, out, i)


@_jit
def additive_coupling_bwd(dout, idx_b, sign, din, dh):
    """VJP of additive_coupling: din = dout; dt = sign * dout_b."""
    for i in range(dout.shape[0]):
        additive_bwd_row(dout, idx_b, sign, din, dh, i)
