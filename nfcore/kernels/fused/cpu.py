"""CPU fused layers: a conditioner network, its activations and the element-wise map in one call.

A coupling layer's step op by op is ~22 kernel calls from Python per layer (gathers, GEMMs,
bias and activation passes, the map, their VJPs, column sums, scatters); at small batches the
dispatch costs more than the arithmetic, and with worker threads every call is a hand-over of
the GIL. Here the forward pass is one call and its VJP another: the GEMMs still run on BLAS
(``np.dot`` inside the kernel), the bias, activation and map passes are loops over the same rows.

Layout, shared with the op-by-op path: the network's input is ``[x[:, idx_a], context]``; its
layers are ``ws[l]`` (K_l, M_l) and ``bs[l]`` (M_l,), the hidden ones followed by the activation
``code``; with ``masked`` (MADE) layer l's weight is ``ws[l] * masks[l]`` (written into
``weff[l]``, which the VJP reads) and its gradient is masked too. The output ``h`` is (N, 2B)
for the affine map (shift, raw log-scale of the B columns ``idx_b``) and (N, B) for the additive
one. ``acts`` holds the network's input and every layer's output (``acts[0]`` .. ``acts[L]``,
``acts[L]`` = h), which the VJP reads. Coupling layers (``idx_a`` the pass-through columns) and
MAF/IAF's one-pass direction (``idx_a`` = ``idx_b`` = every column, a MADE) use the same ops.
"""

import numpy as np
from numba import njit, types
from numba.extending import overload

from .._scalar import ACT_IDENTITY, ACT_RELU, act_fwd, act_vjp
from ..coupling.cpu import _affine_fwd_bwd32, _affine_inv_bwd32, _affine_map, _affine_map32, _affine_map_vjp
from ..coupling.math import additive_bwd_row, additive_row
from ..registry import cpu_only_kernel

_jit = njit(cache=True, nogil=True, error_model="numpy")  # the helpers (not ops): compiled as the ops are


def _affine(x, h, idx_b, bound, out, logdet, ls, flat, expand):
    """The affine map of ``coupling.cpu.affine_map``, its float32 route chosen when compiling."""


@overload(_affine)
def _affine_routes(x, h, idx_b, bound, out, logdet, ls, flat, expand):
    if x.dtype == types.float32:
        return lambda x, h, idx_b, bound, out, logdet, ls, flat, expand: _affine_map32(
            x, h, idx_b, bound, out, logdet, ls, flat, expand)
    return lambda x, h, idx_b, bound, out, logdet, ls, flat, expand: _affine_map(
        x, h, idx_b, bound, out, logdet, ls, expand)


def _affine_vjp(dout, dlogdet, x, ls, idx_b, bound, din, dh, flat, expand):
    """The VJP of ``coupling.cpu.affine_map_vjp``, its float32 routes chosen when compiling."""


@overload(_affine_vjp)
def _affine_vjp_routes(dout, dlogdet, x, ls, idx_b, bound, din, dh, flat, expand):
    if x.dtype == types.float32:
        def vjp32(dout, dlogdet, x, ls, idx_b, bound, din, dh, flat, expand):
            if expand:
                _affine_fwd_bwd32(dout, dlogdet, x, ls, idx_b, bound, din, dh, flat)
            else:
                _affine_inv_bwd32(dout, dlogdet, x, ls, idx_b, bound, din, dh, flat)
        return vjp32
    return lambda dout, dlogdet, x, ls, idx_b, bound, din, dh, flat, expand: _affine_map_vjp(
        dout, dlogdet, x, ls, idx_b, bound, din, dh, expand)


@_jit
def _dense_act(a, w, b, code, alpha, out):
    """out = phi(a @ w + b) (phi by ``code``; the identity for the output layer)."""
    np.dot(a, w, out)
    n, m = out.shape
    zero = out.dtype.type(0)
    if code == ACT_RELU:
        for i in range(n):
            for j in range(m):
                out[i, j] = max(out[i, j] + b[j], zero)
    elif code == ACT_IDENTITY:
        for i in range(n):
            for j in range(m):
                out[i, j] += b[j]
    else:
        for i in range(n):
            for j in range(m):
                out[i, j] = act_fwd(out[i, j] + b[j], code, alpha)


@_jit
def _dense_act_vjp(g, y, a, w, mask, masked, code, alpha, dw, db, da):
    """The VJP of y = phi(a @ w + b) given g = dL/dy (overwritten with dL/d(a w + b)):
    g <- g phi'; dw += a^T g (times the mask when ``masked``); db += sum_n g; da = g w^T."""
    n, m = g.shape
    zero = g.dtype.type(0)
    acc = np.zeros(m, dtype=db.dtype)
    if code == ACT_RELU:
        for i in range(n):
            for j in range(m):
                v = g[i, j] if y[i, j] > 0 else zero
                g[i, j] = v
                acc[j] += v
    elif code == ACT_IDENTITY:
        for i in range(n):
            for j in range(m):
                acc[j] += g[i, j]
    else:
        for i in range(n):
            for j in range(m):
                v = act_vjp(g[i, j], y[i, j], code, alpha)
                g[i, j] = v
                acc[j] += v
    for j in range(m):
        db[j] += acc[j]
    gw = np.dot(a.T, g)
    if masked:
        for k in range(dw.shape[0]):
            for j in range(m):
                dw[k, j] += gw[k, j] * mask[k, j]
    else:
        for k in range(dw.shape[0]):
            for j in range(m):
                dw[k, j] += gw[k, j]
    np.dot(g, w.T, da)


@cpu_only_kernel
def net_map(x, context, idx_a, idx_b, ws, bs, masks, masked, weff, code, alpha, bound, affine, expand, flat, acts,
            out, logdet, ls):
    """A conditioned layer in one call: h = net([x_a, context]), then the element-wise map of x by h.

    affine, expand: out_b = x_b e^ls + t, logdet = sum ls (ls = softclamp(h_s, bound));
    affine, not expand: out_b = (x_b - t) e^-ls, logdet = -sum ls; additive: out_b = x_b +- t,
    logdet = 0. Columns outside idx_b are copied. Writes every layer's output into ``acts``.
    """
    n = x.shape[0]
    na = idx_a.shape[0]
    xa = acts[0]
    for i in range(n):
        for k in range(na):
            xa[i, k] = x[i, idx_a[k]]
        for k in range(context.shape[1]):
            xa[i, na + k] = context[i, k]
    last = len(ws) - 1
    for layer in range(last + 1):
        w = ws[layer]
        if masked:
            w = weff[layer]
            m = masks[layer]
            src = ws[layer]
            for k in range(w.shape[0]):
                for j in range(w.shape[1]):
                    w[k, j] = src[k, j] * m[k, j]
        _dense_act(acts[layer], w, bs[layer], code if layer < last else ACT_IDENTITY, alpha, acts[layer + 1])
    h = acts[last + 1]
    if affine:
        _affine(x, h, idx_b, bound, out, logdet, ls, flat, expand)
    else:
        sign = 1.0 if expand else -1.0
        for i in range(n):
            additive_row(x, h, idx_b, sign, out, i)
            logdet[i] = 0.0


@cpu_only_kernel
def net_map_vjp(dout, dlogdet, x, idx_a, idx_b, ws, masks, masked, code, alpha, bound, affine, expand, flat, acts,
                ls, grads, din, dws, dbs):
    """The VJP of ``net_map`` (x: the data side, the map's input when expand, its output
    otherwise; ``ws`` the weights that call used (``weff`` when masked); ``acts`` and ``ls`` as
    it wrote them):
    the map's VJP gives din and dL/dh (``affine_map_vjp_row``, ``additive_bwd_row``), then for
    the net's layers in reverse, with g_l = dL/d(layer l's output) (``grads[l + 1]``):
        g_l <- g_l phi'_l;  dW_l += a_l^T g_l (* M_l);  db_l += sum_n g_l;  g_(l-1) = g_l W_l^T,
    and dL/dx_a += g_(-1)'s first |a| columns (the context's gradient is not returned).
    """
    n = x.shape[0]
    last = len(ws) - 1
    dh = grads[last + 1]
    if affine:
        _affine_vjp(dout, dlogdet, x, ls, idx_b, bound, din, dh, flat, expand)
    else:
        sign = 1.0 if expand else -1.0
        for i in range(n):
            additive_bwd_row(dout, idx_b, sign, din, dh, i)
    for layer in range(last, -1, -1):
        _dense_act_vjp(grads[layer + 1], acts[layer + 1], acts[layer], ws[layer], masks[layer], masked,
                       code if layer < last else ACT_IDENTITY, alpha, dws[layer], dbs[layer], grads[layer])
    dxa = grads[0]
    for i in range(n):
        for k in range(idx_a.shape[0]):
            din[i, idx_a[k]] += dxa[i, k]
