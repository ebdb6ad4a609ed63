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
from ..dense.cpu import block_rows, tn_acc
from ..registry import cpu_kernel, cpu_only_kernel

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
def _dense_act(a, w, b, code, alpha, blocked, out):
    """out = phi(a @ w + b) (phi by ``code``; the identity for the output layer); ``blocked``: the
    product in blocks of ``block_rows`` rows (faster when BLAS runs one thread: a worker's shard)."""
    n, m = out.shape
    rows = block_rows(n, w.shape[0], m) if blocked else n
    for s in range(0, n, rows):
        np.dot(a[s : s + rows], w, out[s : s + rows])
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
    tmp = np.empty(dw.shape, dtype=dw.dtype)
    tn_acc(a, g, mask, masked, dw, tmp)
    np.dot(g, w.T, da)


@_jit
def _view(buf, off, rows, cols):
    """buf[off : off + rows cols] as a (rows, cols) array (a view)."""
    return buf[off : off + rows * cols].reshape((rows, cols))


@_jit
def net_size(rows, ws):
    """Elements of one layer's workspace: the network's input and every layer's output, rows each."""
    size = rows * ws[0].shape[0]
    for w in ws:
        size += rows * w.shape[1]
    return size


@_jit
def _net_fwd(x, context, idx_a, idx_b, ws, bs, masks, masked, weff, code, alpha, bound, affine, expand, flat,
             blocked, buf, off, out, logdet, ls):
    """One conditioned layer; its activations go to buf[off:] (``net_size``): the network's input,
    then each layer's output, the last one h."""
    n = x.shape[0]
    na = idx_a.shape[0]
    xa = _view(buf, off, n, ws[0].shape[0])
    for i in range(n):
        for k in range(na):
            xa[i, k] = x[i, idx_a[k]]
        for k in range(context.shape[1]):
            xa[i, na + k] = context[i, k]
    last = len(ws) - 1
    a = xa
    off += n * ws[0].shape[0]
    for layer in range(last + 1):
        w = ws[layer]
        if masked:
            w = weff[layer]
            m = masks[layer]
            src = ws[layer]
            for k in range(w.shape[0]):
                for j in range(w.shape[1]):
                    w[k, j] = src[k, j] * m[k, j]
        y = _view(buf, off, n, w.shape[1])
        _dense_act(a, w, bs[layer], code if layer < last else ACT_IDENTITY, alpha, blocked, y)
        off += n * w.shape[1]
        a = y
    if affine:
        _affine(x, a, idx_b, bound, out, logdet, ls, flat, expand)
    else:
        sign = 1.0 if expand else -1.0
        for i in range(n):
            additive_row(x, a, idx_b, sign, out, i)
            logdet[i] = 0.0


@_jit
def _net_vjp(dout, dlogdet, x, idx_a, idx_b, ws, masks, masked, code, alpha, bound, affine, expand, flat, buf, off,
             ls, gbuf, din, dws, dbs):
    """The VJP of ``_net_fwd``'s call (its activations at buf[off:]); gbuf: scratch of ``net_size``."""
    n = x.shape[0]
    last = len(ws) - 1
    offs = np.empty(last + 2, dtype=np.int64)  # where each activation starts, relative to off
    offs[0] = 0
    offs[1] = n * ws[0].shape[0]
    for layer in range(last + 1):
        if layer + 2 <= last + 1:
            offs[layer + 2] = offs[layer + 1] + n * ws[layer].shape[1]
    width_out = ws[last].shape[1]
    dh = _view(gbuf, offs[last + 1], n, width_out)
    if affine:
        _affine_vjp(dout, dlogdet, x, ls, idx_b, bound, din, dh, flat, expand)
    else:
        sign = 1.0 if expand else -1.0
        for i in range(n):
            additive_bwd_row(dout, idx_b, sign, din, dh, i)
    for layer in range(last, -1, -1):
        k_in, k_out = ws[layer].shape
        _dense_act_vjp(_view(gbuf, offs[layer + 1], n, k_out), _view(buf, off + offs[layer + 1], n, k_out),
                       _view(buf, off + offs[layer], n, k_in), ws[layer], masks[layer], masked,
                       code if layer < last else ACT_IDENTITY, alpha, dws[layer], dbs[layer],
                       _view(gbuf, offs[layer], n, k_in))
    dxa = _view(gbuf, 0, n, ws[0].shape[0])
    for i in range(n):
        for k in range(idx_a.shape[0]):
            din[i, idx_a[k]] += dxa[i, k]


@cpu_kernel
def net_map(x, context, idx_a, idx_b, ws, bs, masks, masked, weff, code, alpha, bound, affine, expand, flat,
            blocked, buf, out, logdet, ls):
    """A conditioned layer in one call: h = net([x_a, context]), then the element-wise map of x by h.

    affine, expand: out_b = x_b e^ls + t, logdet = sum ls (ls = softclamp(h_s, bound));
    affine, not expand: out_b = (x_b - t) e^-ls, logdet = -sum ls; additive: out_b = x_b +- t,
    logdet = 0. Columns outside idx_b are copied. Writes the network's input and every layer's
    output into ``buf`` (``net_size`` elements), which the VJP reads. ``blocked``: the products
    in blocks of rows (``dense.cpu.block_rows``; the caller's choice, by BLAS's thread count).
    """
    _net_fwd(x, context, idx_a, idx_b, ws, bs, masks, masked, weff, code, alpha, bound, affine, expand, flat,
             blocked, buf, np.int64(0), out, logdet, ls)  # np.int64: not a literal 0 (a second compiled signature)


@cpu_kernel
def net_map_vjp(dout, dlogdet, x, idx_a, idx_b, ws, masks, masked, code, alpha, bound, affine, expand, flat, buf,
                ls, gbuf, din, dws, dbs):
    """The VJP of ``net_map`` (x: the data side, the map's input when expand, its output
    otherwise; ``ws`` the weights that call used (``weff`` when masked); ``buf`` and ``ls`` as
    it wrote them; ``gbuf`` scratch of the same size):
    the map's VJP gives din and dL/dh (``coupling.cpu``'s affine and additive VJPs), then for
    the net's layers in reverse, with g_l = dL/d(layer l's output):
        g_l <- g_l phi'_l;  dW_l += a_l^T g_l (* M_l);  db_l += sum_n g_l;  g_(l-1) = g_l W_l^T,
    and dL/dx_a += g_(-1)'s first |a| columns (the context's gradient is not returned).
    """
    _net_vjp(dout, dlogdet, x, idx_a, idx_b, ws, masks, masked, code, alpha, bound, affine, expand, flat, buf,
             np.int64(0), ls, gbuf, din, dws, dbs)


@_jit
def _rows(a, s, e):
    """Rows s .. e-1 of the C-contiguous 2-D ``a`` (a view of the same layout)."""
    cols = a.shape[1]
    return _view(a.reshape(a.shape[0] * cols), s * cols, e - s, cols)


@_jit
def _chain_rows(x, context, idx_as, idx_bs, wss, bss, code, alpha, bound, affine, expand, blocked, buf, out, logdet):
    """``chain_map`` on all of x's rows at once (the layout ``chain_map_vjp`` reads)."""
    n, d = x.shape
    cur = x
    off = np.int64(0)
    no = np.bool_(False)  # not literals: the layer helpers keep the one signature net_map compiles
    for i in range(n):
        logdet[i] = 0.0
    for k in range(len(wss)):
        ws = wss[k]
        nb = idx_bs[k].shape[0] if affine else 0
        acts = off
        off += net_size(n, ws)
        ls = _view(buf, off, n, nb)
        off += n * nb
        ld = buf[off : off + n]
        off += n
        if k == len(wss) - 1:
            nxt = out
        else:
            nxt = _view(buf, off, n, d)
            off += n * d
        _net_fwd(cur, context, idx_as[k], idx_bs[k], ws, bss[k], ws, no, ws, code, alpha, bound, affine, expand,
                 no, blocked, buf, acts, nxt, ld, ls)
        for i in range(n):
            logdet[i] += ld[i]
        cur = nxt


@cpu_only_kernel
def chain_map(x, context, idx_as, idx_bs, wss, bss, code, alpha, bound, affine, expand, blocked, tile, buf, out,
              logdet):
    """A run of K coupling layers in one call: layer k maps x_k to x_(k+1) as ``net_map`` does
    (x_0 = x, x_K = out), logdet = sum_k logdet_k, ``tile`` rows at a time. ``buf`` keeps, for
    ``tile`` rows, per layer its network's activations (``net_size``), its log-scales (affine) and
    log-det, and its output x_(k+1) but for the last; ``chain_map_vjp`` reads it after a call with
    ``tile`` >= N, the rows in one piece (``transforms._fused.FusedRun`` sizes it). A density or a
    sample, which keeps nothing, takes a fixed tile: its scratch does not grow with N."""
    n = x.shape[0]
    for s in range(0, n, tile):
        e = min(n, s + tile)
        _chain_rows(_rows(x, s, e), _rows(context, s, e), idx_as, idx_bs, wss, bss, code, alpha, bound, affine,
                    expand, blocked, buf, _rows(out, s, e), logdet[s:e])


@cpu_only_kernel
def chain_map_vjp(dout, dlogdet, x, out, idx_as, idx_bs, wss, code, alpha, bound, affine, expand, buf, gbuf, din,
                  dwss, dbss):
    """The VJP of ``chain_map``'s call (x its input, out its output, ``buf`` as it wrote it): the
    layers' VJPs (``net_map_vjp``) from the last to the first, every layer with the same
    dL/dlogdet; gbuf: scratch of the largest layer's ``net_size`` plus 2 rows x dim."""
    n, d = x.shape
    kk = len(wss)
    no = np.bool_(False)  # not a literal (see chain_map)
    starts = np.empty(kk + 1, dtype=np.int64)  # where layer k's workspace starts
    starts[0] = 0
    for k in range(kk):
        nb = idx_bs[k].shape[0] if affine else 0
        starts[k + 1] = starts[k] + net_size(n, wss[k]) + n * nb + n + (n * d if k < kk - 1 else 0)
    g_a = _view(gbuf, gbuf.shape[0] - 2 * n * d, n, d)
    g_b = _view(gbuf, gbuf.shape[0] - n * d, n, d)
    g = dout
    for k in range(kk - 1, -1, -1):
        ws = wss[k]
        nb = idx_bs[k].shape[0] if affine else 0
        acts = starts[k]
        ls = _view(buf, acts + net_size(n, ws), n, nb)
        x_in = x if k == 0 else _view(buf, starts[k] - n * d, n, d)
        x_out = out if k == kk - 1 else _view(buf, starts[k + 1] - n * d, n, d)
        dst = din if k == 0 else (g_a if (kk - 1 - k) % 2 == 0 else g_b)
        _net_vjp(g, dlogdet, x_in if expand else x_out, idx_as[k], idx_bs[k], ws, ws, no, code, alpha, bound,
                 affine, expand, no, buf, acts, ls, gbuf, dst, dwss[k], dbss[k])
        g = dst
