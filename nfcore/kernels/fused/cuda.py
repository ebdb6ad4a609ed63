"""CUDA fused layers: a conditioner network and its element-wise map in one launch forward and three
backward, the twins of ``fused.cpu``'s ``net_map`` and ``net_map_vjp``.

Op by op, a coupling or MADE layer's step on the GPU is ~20 launches per layer (gathers, GEMM
tiles, bias and activation passes, the map, their VJPs, column sums, scatters), each of a few
microseconds of launch latency; at the narrow widths the fused path takes (at most
``transforms._fused.FUSED_MAX_WIDTH`` = 128 hidden units) the arithmetic is smaller than that.
Here:

* ``net_map``: one block per tile of ``launch.TILE`` rows runs the whole network for its rows
  (gather of ``[x_a, context]``, every layer's product, bias and activation, the output head),
  its threads across each layer's (row, column) outputs with consecutive threads on consecutive
  columns, so the weight reads coalesce and the input reads broadcast; a barrier between layers;
  then the map with its log-det per row (``coupling.math``'s row functions, as the op-by-op
  kernels). A MADE's masked weights W * M are written first (``elementwise.mask_mul``, one small
  launch per layer), as the CPU kernel writes them into ``weff`` for the VJP.
* ``net_map_vjp``: the same tiles run the map's VJP per row, then every layer's VJP (g <- g phi',
  then g W^T, threads across the input columns); then every weight and bias gradient of every
  layer in two launches: one thread per (parameter element, chunk of ``launch.ROWS_PER_CHUNK``
  rows) sums its chunk in row order, one thread per element sums the chunks in chunk order:
  deterministic, no atomics, the same bits run to run.

The layout is the CPU kernels' (``fused.cpu``'s module docstring): the workspace ``buf`` holds the
network's input and every layer's output, row-major, one after the other; the kernels see them as
a tuple of 2-D views (``_acts``). Each output element is one thread's dot product, in the dtype
of the data. ``flat`` and ``blocked`` are CPU-only hints and are ignored here. Never timed on a
GPU yet: ``benchmarks/bench_gpu.py`` compares them with the op-by-op path.
The chained op ``chain_map`` stays CPU-only: on a GPU each layer makes its own calls.
"""

import numpy as np
from numba import cuda

from .. import _scalar
from .. import launch as _launch
from .._scalar import device_maths
from ..array import cuda as _array
from ..coupling import math as _coupling_math
from ..elementwise.cuda import mask_mul
from ..registry import cuda_op
from . import math as _index_maths

_act = device_maths(_scalar)
_map = device_maths(_coupling_math)
_index = device_maths(_index_maths)


@cuda.jit(cache=True)
def _net_fwd_kernel(x, context, idx_a, idx_b, ws, bs, acts, code, alpha, bound, affine, expand, sign, zero, rows,
                    out, logdet, ls):
    # one block per tile of ``rows`` rows; its threads share each layer's (row, column) outputs,
    # consecutive threads on consecutive columns: the weight reads coalesce, the input's broadcast
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    r0 = cuda.blockIdx.x * rows
    r1 = min(x.shape[0], r0 + rows)
    nr = r1 - r0
    xa = acts[0]
    na = idx_a.shape[0]
    nc = context.shape[1]
    for e in range(tid, nr * (na + nc), nt):
        i = r0 + e // (na + nc)
        k = e % (na + nc)
        xa[i, k] = x[i, idx_a[k]] if k < na else context[i, k - na]
    cuda.syncthreads()
    last = len(ws) - 1
    for layer in range(last + 1):
        w = ws[layer]
        b = bs[layer]
        a = acts[layer]
        y = acts[layer + 1]
        m = w.shape[1]
        for e in range(tid, nr * m, nt):
            i = r0 + e // m
            j = e % m
            acc = zero
            for k in range(w.shape[0]):
                acc += a[i, k] * w[k, j]
            if layer < last:
                y[i, j] = _act.act_fwd(acc + b[j], code, alpha)
            else:
                y[i, j] = acc + b[j]
        cuda.syncthreads()
    h = acts[last + 1]
    for i in range(r0 + tid, r1, nt):
        if affine:
            _map.affine_map_row(x, h, idx_b, bound, out, logdet, ls, i, expand)
        else:
            _map.additive_row(x, h, idx_b, sign, out, i)
            logdet[i] = zero


@cuda.jit(cache=True)
def _net_vjp_rows_kernel(dout, dlogdet, x, idx_a, idx_b, ws, acts, gacts, code, alpha, bound, affine, expand, sign,
                         zero, rows, ls, din):
    # tiles of rows as in _net_fwd_kernel; each layer's input gradient with consecutive threads on
    # consecutive input columns
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    r0 = cuda.blockIdx.x * rows
    r1 = min(x.shape[0], r0 + rows)
    nr = r1 - r0
    last = len(ws) - 1
    dh = gacts[last + 1]
    for i in range(r0 + tid, r1, nt):
        if affine:
            _map.affine_map_vjp_row(dout, dlogdet, x, ls, idx_b, bound, din, dh, i, expand)
        else:
            _map.additive_bwd_row(dout, idx_b, sign, din, dh, i)
    cuda.syncthreads()
    for layer in range(last, -1, -1):
        w = ws[layer]
        g = gacts[layer + 1]
        ga = gacts[layer]
        m = w.shape[1]
        kk = w.shape[0]
        if layer < last:
            y = acts[layer + 1]
            for e in range(tid, nr * m, nt):
                i = r0 + e // m
                j = e % m
                g[i, j] = _act.act_vjp(g[i, j], y[i, j], code, alpha)
            cuda.syncthreads()
        for e in range(tid, nr * kk, nt):
            i = r0 + e // kk
            k = e % kk
            acc = zero
            for j in range(m):
                acc += g[i, j] * w[k, j]
            ga[i, k] = acc
        cuda.syncthreads()
    g0 = gacts[0]
    for i in range(r0 + tid, r1, nt):
        for k in range(idx_a.shape[0]):
            din[i, idx_a[k]] += g0[i, k]


@cuda.jit(cache=True)
def _net_grads_kernel(ws, acts, gacts, zero, chunk, partial):
    # thread (c, p): parameter p's gradient summed over the rows of chunk c, in row order
    t = cuda.grid(1)
    total = partial.shape[1]
    if t >= partial.shape[0] * total:
        return
    c = t // total
    p = t - c * total
    layer, k, j = _index.locate(ws, p)
    g = gacts[layer + 1]
    a = acts[layer]
    r1 = min(g.shape[0], (c + 1) * chunk)
    acc = zero
    if k >= 0:
        for r in range(c * chunk, r1):
            acc += a[r, k] * g[r, j]
    else:
        for r in range(c * chunk, r1):
            acc += g[r, j]
    partial[c, p] = acc


@cuda.jit(cache=True)
def _net_grads_reduce_kernel(ws, partial, masks, masked, zero, dws, dbs):
    # thread p: the chunks' sums in chunk order (deterministic), masked, added into the gradient
    p = cuda.grid(1)
    if p >= partial.shape[1]:
        return
    acc = zero
    for c in range(partial.shape[0]):
        acc += partial[c, p]
    layer, k, j = _index.locate(ws, p)
    if k >= 0:
        if masked:
            acc *= masks[layer][k, j]
        dws[layer][k, j] += acc
    else:
        dbs[layer][j] += acc


def _rows():
    """Rows per block of the row kernels: ``launch.TILE`` (16; a test shrinks it)."""
    return int(_launch.TILE)


def _tiles(n, rows):
    """(blocks, threads): one block of ``launch.THREADS_PER_BLOCK`` threads per tile of ``rows`` rows."""
    return max(1, -(-int(n) // rows)), int(_launch.THREADS_PER_BLOCK)


def _acts(buf, n, ws):
    """The network's input and every layer's output as (n, width) views of the workspace ``buf``
    (``fused.cpu.net_size`` elements, in the CPU kernels' order)."""
    views, off = [], 0
    for width in [ws[0].shape[0]] + [w.shape[1] for w in ws]:
        views.append(buf[off : off + n * width].reshape((n, width)))
        off += n * width
    return tuple(views)


@cuda_op
def net_map(x, context, idx_a, idx_b, ws, bs, masks, masked, weff, code, alpha, bound, affine, expand, flat,
            blocked, buf, out, logdet, ls):
    """A conditioned layer in one launch (the twin of ``fused.cpu.net_map``: the same arguments and
    outputs; ``flat`` and ``blocked`` are CPU hints): h = net([x_a, context]) (with ``masked``, the
    weights W_l * M_l, written to ``weff``), then the affine or additive map of x by h and its log-det."""
    if masked:
        for w, m, we in zip(ws, masks, weff):
            mask_mul(w, m, we)
        ws = weff
    n = x.shape[0]
    dt = x.dtype.type
    rows = _rows()
    _net_fwd_kernel[_tiles(n, rows)](x, context, idx_a, idx_b, tuple(ws), tuple(bs), _acts(buf, n, ws), int(code),
                                     dt(alpha), dt(bound), bool(affine), bool(expand), dt(1.0 if expand else -1.0),
                                     dt(0), rows, out, logdet, ls)


@cuda_op
def net_map_vjp(dout, dlogdet, x, idx_a, idx_b, ws, masks, masked, code, alpha, bound, affine, expand, flat, buf,
                ls, gbuf, din, dws, dbs):
    """The VJP of ``net_map``'s call (the twin of ``fused.cpu.net_map_vjp``): din = dL/dx, and every
    layer's weight (times its mask when ``masked``) and bias gradients accumulated into dws, dbs:
    one launch over tiles of rows (the map's VJP, then per layer g <- g phi', g_(l-1) = g W_l^T), two
    over the parameters (dW_l += a_l^T g_l, db_l += sum_n g_l: chunk sums, then their sum)."""
    n = x.shape[0]
    dt = x.dtype.type
    ws = tuple(ws)
    acts = _acts(buf, n, ws)
    gacts = _acts(gbuf, n, ws)
    rows = _rows()
    _net_vjp_rows_kernel[_tiles(n, rows)](dout, dlogdet, x, idx_a, idx_b, ws, acts, gacts, int(code), dt(alpha),
                                          dt(bound), bool(affine), bool(expand), dt(1.0 if expand else -1.0), dt(0),
                                          rows, ls, din)
    total = sum(w.shape[0] * w.shape[1] + w.shape[1] for w in ws)
    chunk = int(_launch.ROWS_PER_CHUNK)
    partial = _array.empty((max(1, -(-n // chunk)), total), x.dtype)
    _net_grads_kernel[_launch.grid(partial.size)](ws, acts, gacts, dt(0), chunk, partial)
    _net_grads_reduce_kernel[_launch.grid(total)](ws, partial, tuple(masks), bool(masked), dt(0), tuple(dws),
                                                  tuple(dbs))


def parity_cases(c):
    """The fused ops' parity inputs (``nfcore.kernels.parity``): a coupling's network (unsorted
    column sets, a context, tanh and ReLU, affine both ways and additive) and a MADE's (masked)."""
    r, nan, n, d = c.r, c.nan, c.n, c.d
    idx_a = np.array([4, 1, 2], dtype="int64")  # unsorted on purpose
    idx_b = np.array([3, 0], dtype="int64")
    every = np.arange(d, dtype="int64")
    cases = {"net_map": [], "net_map_vjp": []}

    def net(k0, hidden, k_out, masked):
        widths = [k0, *hidden, k_out]
        ws = tuple(r(widths[l], widths[l + 1], scale=0.7) for l in range(len(widths) - 1))
        bs = tuple(r(widths[l + 1], scale=0.3) for l in range(len(widths) - 1))
        ms = tuple((c.u(*w.shape) < 0.6).astype(c.dt) for w in ws) if masked else ws
        return widths, ws, bs, ms

    variants = [  # (label, idx_a, idx_b, context columns, code, alpha, affine, expand, masked)
        ("affine expand relu ctx", idx_a, idx_b, 2, 1, 0.0, True, True, False),
        ("affine contract tanh", idx_a, idx_b, 0, 3, 0.0, True, False, False),
        ("additive expand elu", idx_a, idx_b, 0, 4, 1.0, False, True, False),
        ("additive contract leaky ctx", idx_a, idx_b, 1, 2, 0.1, False, False, False),
        ("made contract relu", every, every, 0, 1, 0.0, True, False, True),
        ("made expand softplus ctx", every, every, 2, 5, 0.0, True, True, True),
    ]
    for label, ia, ib, nc, code, alpha, affine, expand, masked in variants:
        nb = ib.size
        widths, ws, bs, ms = net(ia.size + nc, [c.s.cols, 3], (2 if affine else 1) * nb, masked)
        size = n * sum(widths)
        weff = tuple(nan(*w.shape) for w in ws) if masked else ws
        cases["net_map"].append((label, [r(n, d), r(n, nc), ia, ib, ws, bs, ms, masked, weff, code, alpha, 2.0,
                                         affine, expand, False, False, nan(size), nan(n, d), nan(n),
                                         nan(n, nb if affine else 0)], [8, 16, 17, 18, 19]))
        used = tuple(w * m for w, m in zip(ws, ms)) if masked else ws
        acts = r(size)
        cases["net_map_vjp"].append((label, [r(n, d), r(n), r(n, d), ia, ib, used, ms, masked, code, alpha, 2.0,
                                             affine, expand, False, acts, r(n, nb if affine else 0, scale=1.5),
                                             nan(size), nan(n, d), tuple(r(*w.shape) for w in ws),
                                             tuple(r(*b.shape) for b in bs)], [16, 17, 18, 19]))
    return cases
