"""CUDA coupling ops: the element-wise map of a coupling layer fused with its log-det.

The conditioner output ``h`` is ``(N, 2B)`` for affine coupling (shift in columns
``[0, B)``, raw log-scale in ``[B, 2B)``) and ``(N, B)`` for additive coupling; ``idx_b``
lists the B transformed columns of the ``(N, D)`` input. Untransformed columns are copied.

One thread per sample (row): it copies the row, overwrites the transformed columns and sums
their log-scales into ``logdet[n]``, so the copy-then-overwrite order and the per-sample
sum need no synchronisation. The row bodies are the CPU loops' (``coupling.math``).
"""


import numpy as np
from numba import cuda

from .. import launch as _launch
from .._scalar import device_maths
from ..registry import cuda_op
from . import math as _maths

_maths = device_maths(_maths)



@cuda.jit(cache=True)
def _affine_map_kernel(a, h, idx_b, bound, b, logdet, ls, expand):
    i = cuda.grid(1)
    if i < a.shape[0]:
        _maths.affine_map_row(a, h, idx_b, bound, b, logdet, ls, i, expand)


@cuda.jit(cache=True)
def _affine_map_vjp_kernel(db, dlogdet, x, ls, idx_b, bound, da, dh, expand):
    i = cuda.grid(1)
    if i < x.shape[0]:
        _maths.affine_map_vjp_row(db, dlogdet, x, ls, idx_b, bound, da, dh, i, expand)


@cuda.jit(cache=True)
def _additive_kernel(x, h, idx_b, sign, out):
    i = cuda.grid(1)
    if i < x.shape[0]:
        _maths.additive_row(x, h, idx_b, sign, out, i)


@cuda.jit(cache=True)
def _additive_bwd_kernel(dout, idx_b, sign, din, dh):
    i = cuda.grid(1)
    if i < dout.shape[0]:
        _maths.additive_bwd_row(dout, idx_b, sign, din, dh, i)


@cuda_op
def affine_map(a, h, idx_b, bound, expand, b, logdet, ls):
    """expand: b_B = a_B e^ls + t, logdet = sum ls; else b_B = (a_B - t) e^-ls, logdet = -sum ls
    (ls = bound tanh(h_s / bound), written to ``ls``)."""
    _affine_map_kernel[_launch.grid(a.shape[0])](a, h, idx_b, bound, b, logdet, ls, bool(expand))


@cuda_op
def affine_map_vjp(db, dlogdet, x, ls, idx_b, bound, expand, da, dh):
    """VJP of affine_map from its saved ls (x: the map's input when expand, its output otherwise)."""
    _affine_map_vjp_kernel[_launch.grid(x.shape[0])](db, dlogdet, x, ls, idx_b, bound, da, dh, bool(expand))


@cuda_op
def additive_coupling(x, h, idx_b, sign, out):
    """out = x with out_b = x_b + sign * t (sign = +1 forward, -1 inverse); log-det 0."""
    _additive_kernel[_launch.grid(x.shape[0])](x, h, idx_b, sign, out)


@cuda_op
def additive_coupling_bwd(dout, idx_b, sign, din, dh):
    """VJP of additive_coupling: din = dout; dt = sign * dout_b."""
    _additive_bwd_kernel[_launch.grid(dout.shape[0])](dout, idx_b, sign, din, dh)


def parity_cases(c):
    """The coupling ops' parity inputs (``nfcore.kernels.parity``): an unsorted index set, both
    directions, log-scales past the soft clamp."""
    r, nan = c.r, c.nan
    n, d = c.n, c.d
    idx_b = np.array([3, 0], dtype=np.int64)  # unsorted on purpose
    nb = idx_b.size
    return {
        "affine_map": [(f"expand={e}", [r(n, d), r(n, 2 * nb, scale=3.0), idx_b, 2.0, e, nan(n, d), nan(n),
                                        nan(n, nb)], [5, 6, 7]) for e in (True, False)],
        "affine_map_vjp": [(f"expand={e}", [r(n, d), r(n), r(n, d), r(n, nb, scale=1.5), idx_b, 2.0, e, nan(n, d),
                                            nan(n, 2 * nb)], [7, 8]) for e in (True, False)],
        "additive_coupling": [(f"sign={sg}", [r(n, d), r(n, nb), idx_b, sg, nan(n, d)], [4]) for sg in (1.0, -1.0)],
        "additive_coupling_bwd": [(f"sign={sg}", [r(n, d), idx_b, sg, nan(n, d), nan(n, nb)], [3, 4])
                                  for sg in (1.0, -1.0)],
    }
