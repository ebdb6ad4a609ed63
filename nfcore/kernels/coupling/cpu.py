"""CPU coupling ops: the element-wise map of a coupling layer fused with its log-det.

The conditioner output ``h`` is ``(N, 2B)`` for affine coupling (shift in columns
``[0, B)``, raw log-scale in ``[B, 2B)``) and ``(N, B)`` for additive coupling; ``idx_b``
lists the B transformed columns of the ``(N, D)`` input. Untransformed columns are copied.
The forward and inverse maps also write the clamped log-scales ``ls`` (N, B), which their
backward passes read instead of recomputing them (one exp per element instead of three
transcendentals). The per-row maths is above the loops (shared with CUDA).

float32 takes a second route (``_affine_map32``, ``_affine_*_bwd32``): its exponentials run in flat, vectorised loops
with ``fast32.exp32_wide`` (libm's expf does not vectorise); with every column transformed in order
(MAF, IAF) the whole map is one flat loop. Same formulas, less than half the time
(figures: benchmarks/RESULTS.md, "Measurements behind the code").
"""


import numpy as np
from numba import njit

from .._scalar import softclamp_grad
from ..registry import cpu_kernel, cpu_op
from .fast32 import exp32_wide, softclamp32
from .math import additive_bwd_row, additive_row, affine_map_row, affine_map_vjp_row

_jit = njit(cache=True, nogil=True, error_model="numpy")  # numpy semantics: no zero-division branch, loops vectorise


def _fast32(ls):
    return ls.dtype == np.float32 and ls.flags.c_contiguous


def _flat(a, b, idx_b):
    """Whether the float32 kernels may treat a and b (N, D) as flat arrays (every column
    transformed, both contiguous: MAF's and IAF's maps); the kernel checks the order too."""
    return idx_b.shape[0] == a.shape[1] and a.flags.c_contiguous and b.flags.c_contiguous


@cpu_op
def affine_map(a, h, idx_b, bound, expand, b, logdet, ls):
    """The affine coupling map, ls = bound tanh(h_s / bound) (written to ``ls``), t = h_t:
    expand: b_B = a_B e^ls + t, logdet[n] = sum_B ls; else b_B = (a_B - t) e^-ls, logdet[n] = -sum_B ls."""
    if _fast32(ls):
        _affine_map32(a, h, idx_b, bound, b, logdet, ls, _flat(a, b, idx_b), expand)
    else:
        _affine_map(a, h, idx_b, bound, b, logdet, ls, expand)


@cpu_op
def affine_map_vjp(db, dlogdet, x, ls, idx_b, bound, expand, da, dh):
    """VJP of affine_map from its saved ls; x is the map's input when expand, its output otherwise:
    expand: da_B = db_B e^ls, dt = db_B, d raw = (db_B x_B e^ls + dlogdet) (1 - (ls/bound)^2);
    else:   da_B = db_B e^-ls, dt = -da_B, d raw = (-db_B x_B - dlogdet) (1 - (ls/bound)^2).
    """
    if _fast32(ls):
        vjp32 = _affine_fwd_bwd32 if expand else _affine_inv_bwd32
        vjp32(db, dlogdet, x, ls, idx_b, bound, da, dh, _flat(db, da, idx_b))
    else:
        _affine_map_vjp(db, dlogdet, x, ls, idx_b, bound, da, dh, expand)


@_jit
def _affine_map(a, h, idx_b, bound, b, logdet, ls, expand):
    for i in range(a.shape[0]):
        affine_map_row(a, h, idx_b, bound, b, logdet, ls, i, expand)


@_jit
def _affine_map_vjp(db, dlogdet, x, ls, idx_b, bound, da, dh, expand):
    for i in range(x.shape[0]):
        affine_map_vjp_row(db, dlogdet, x, ls, idx_b, bound, da, dh, i, expand)


# -- float32: flat exponential passes (fast32.exp32_wide), then row loops ---------------------------
# Every column transformed in order (MAF, IAF) and contiguous arrays ("flat"): the whole map
# runs as one flat loop over the N x D elements, the row loops only split h and sum ls.
# Otherwise the exponentials go to a flat scratch array and a row loop gathers the columns.
# Outputs must not alias inputs (the op API's rule; the flat route parks the shift in the output).


@_jit
def _in_order(idx_b, flat):
    if not flat:
        return False
    for j in range(idx_b.shape[0]):
        if idx_b[j] != j:
            return False
    return True


@_jit
def _split_h(h, t, ls):
    """t = h's shift half, ls = its raw log-scale half (N, B each)."""
    n, nb = ls.shape
    for i in range(n):
        for j in range(nb):
            t[i, j] = h[i, j]
            ls[i, j] = h[i, nb + j]


@_jit
def _row_sums(ls, sign, logdet):
    for i in range(ls.shape[0]):
        acc = 0.0
        for j in range(ls.shape[1]):
            acc += ls[i, j]
        logdet[i] = sign * acc


@_jit
def _clamped_scales32(h, bound, sign, ls):
    """ls = softclamp(h's log-scale half), and e = exp(sign * ls), both (N, B)."""
    n, nb = ls.shape
    for i in range(n):
        for j in range(nb):
            ls[i, j] = h[i, nb + j]
    flat = ls.reshape(n * nb)
    e = np.empty(n * nb, dtype=ls.dtype)
    for k in range(n * nb):
        v = softclamp32(flat[k], bound)
        flat[k] = v
        e[k] = exp32_wide(sign * v)
    return e.reshape((n, nb))


@_jit
def _scales32(ls, sign):
    """e = exp(sign * ls) for saved log-scales (N, B)."""
    n, nb = ls.shape
    flat = ls.reshape(n * nb)
    e = np.empty(n * nb, dtype=ls.dtype)
    for k in range(n * nb):
        e[k] = exp32_wide(sign * flat[k])
    return e.reshape((n, nb))


@_jit
def _affine_map32(a, h, idx_b, bound, b, logdet, ls, flat, expand):
    """expand: b = a e^ls + t (the forward map), logdet = sum ls; else b = (a - t) e^-ls (the
    inverse), logdet = -sum ls."""
    n, nb = ls.shape
    sign = np.float32(1.0) if expand else np.float32(-1.0)
    if _in_order(idx_b, flat):
        _split_h(h, b, ls)  # b holds the shift until the flat loop overwrites it
        lf, af, bf = ls.reshape(n * nb), a.reshape(n * nb), b.reshape(n * nb)
        if expand:  # two loops: a branch inside the loop stops it vectorising
            for k in range(n * nb):
                v = softclamp32(lf[k], bound)
                lf[k] = v
                bf[k] = af[k] * exp32_wide(v) + bf[k]
        else:
            for k in range(n * nb):
                v = softclamp32(lf[k], bound)
                lf[k] = v
                bf[k] = (af[k] - bf[k]) * exp32_wide(-v)
    else:
        e = _clamped_scales32(h, bound, sign, ls)
        for i in range(n):
            for j in range(a.shape[1]):
                b[i, j] = a[i, j]
            for j in range(nb):
                c = idx_b[j]
                if expand:
                    b[i, c] = a[i, c] * e[i, j] + h[i, j]
                else:
                    b[i, c] = (a[i, c] - h[i, j]) * e[i, j]
    _row_sums(ls, 1.0 if expand else -1.0, logdet)


@_jit
def _affine_fwd_bwd32(dz, dlogdet, x, ls, idx_b, bound, dx, dh, flat):
    n, nb = ls.shape
    if _in_order(idx_b, flat):
        lf, dzf, dxf = ls.reshape(n * nb), dz.reshape(n * nb), dx.reshape(n * nb)
        for k in range(n * nb):
            dxf[k] = dzf[k] * exp32_wide(lf[k])
        for i in range(n):
            g = dlogdet[i]
            for j in range(nb):
                dh[i, j] = dz[i, j]
                dh[i, nb + j] = (dx[i, j] * x[i, j] + g) * softclamp_grad(ls[i, j], bound)
        return
    s = _scales32(ls, np.float32(1.0))
    for i in range(n):
        for j in range(x.shape[1]):
            dx[i, j] = dz[i, j]
        for j in range(nb):
            c = idx_b[j]
            g = dz[i, c]
            dx[i, c] = g * s[i, j]
            dh[i, j] = g
            dh[i, nb + j] = (g * x[i, c] * s[i, j] + dlogdet[i]) * softclamp_grad(ls[i, j], bound)


@_jit
def _affine_inv_bwd32(dx, dlogdet, x, ls, idx_b, bound, dz, dh, flat):
    n, nb = ls.shape
    if _in_order(idx_b, flat):
        lf, dxf, dzf = ls.reshape(n * nb), dx.reshape(n * nb), dz.reshape(n * nb)
        for k in range(n * nb):
            dzf[k] = dxf[k] * exp32_wide(-lf[k])
        for i in range(n):
            g = dlogdet[i]
            for j in range(nb):
                dh[i, j] = -dz[i, j]
                dh[i, nb + j] = (-dx[i, j] * x[i, j] - g) * softclamp_grad(ls[i, j], bound)
        return
    e = _scales32(ls, np.float32(-1.0))
    for i in range(n):
        for j in range(x.shape[1]):
            dz[i, j] = dx[i, j]
        for j in range(nb):
            c = idx_b[j]
            g = dx[i, c] * e[i, j]
            dz[i, c] = g
            dh[i, j] = -g
            dh[i, nb + j] = (-dx[i, c] * x[i, c] - dlogdet[i]) * softclamp_grad(ls[i, j], bound)


@cpu_kernel
def additive_coupling(x, h, idx_b, sign, out):
    """out = x with out_b = x_b + sign * t (sign = +1 forward, -1 inverse); log-det 0."""
    for i in range(x.shape[0]):
        additive_row(x, h, idx_b, sign, out, i)


@cpu_kernel
def additive_coupling_bwd(dout, idx_b, sign, din, dh):
    """VJP of additive_coupling: din = dout; dt = sign * dout_b."""
    for i in range(dout.shape[0]):
        additive_bwd_row(dout, idx_b, sign, din, dh, i)
