"""The layers' side of the fused kernels (``kernels.fused``): one call per direction for a
conditioner network and its element-wise map, shared by coupling layers and MAF/IAF."""

from typing import NamedTuple

from ..kernels import backend_of
from ..threads import blas_now

#: the widest hidden layer the fused kernels take; wider networks run op by op (measured:
#: benchmarks/RESULTS.md, "Fused layers")
FUSED_MAX_WIDTH = 128

#: rows a fused run's density or sampling call maps at a time (``kernels.fused.cpu.chain_map``'s
#: tile): its scratch is then a fixed ~4 MB for RealNVP D=2 (8 x 2x64), not 4.3 KB per row. Per
#: row a RealNVP D=2 run costs least from ~1024 rows (benchmarks/RESULTS.md, "Session 15")
EVAL_TILE_ROWS = 1024


class FusedCache(NamedTuple):
    """What ``net_map_vjp`` reads: the weights the call used (W * M for a MADE) and the workspace
    holding the network's input and every layer's output."""

    weights: tuple
    buf: object


def narrow(layers, residual):
    """The network is one the fused kernels take: plain (not residual), no wider than ``FUSED_MAX_WIDTH``
    (on the CPU, or on a GPU through their CUDA twins, ``kernels.fused.cuda``)."""
    return not residual and max(layer.out_features for layer in layers[:-1]) <= FUSED_MAX_WIDTH


def _blocked():
    """The forward products run in row blocks (``kernels.dense.cpu.block_rows``) when BLAS runs
    one thread (a worker's shard): measured 1.2-1.45x faster there for a 64x64 layer from 256
    rows, and slower than one call that BLAS splits across threads (benchmarks/RESULTS.md,
    "Session 11")."""
    return blas_now() == 1


def _flat(x, idx_b):
    """Every column mapped (MAF, IAF): the float32 map may run as one flat loop (it checks the order)."""
    return idx_b.shape[0] == x.shape[1] and x.flags["C_CONTIGUOUS"]  # (a device array's flags are a dict)


def net_map(x, context, idx_a, idx_b, layers, masked, bound, affine, expand, need_grad):
    """(out, logdet, ls, FusedCache or None): h = net([x[:, idx_a], context]) (the ``layers``:
    ``Linear`` or, ``masked``, ``MaskedLinear``), then the affine (or additive) map of x's
    columns ``idx_b`` by h, expand or contract (``kernels.fused.cpu.net_map``)."""
    ops = backend_of(x)
    n, dtype = x.shape[0], x.dtype
    ws = tuple(lay.weight.data for lay in layers)
    buf = ops.empty((n * (ws[0].shape[0] + sum(w.shape[1] for w in ws)),), dtype)  # fused.cpu.net_size, any backend
    out = ops.empty(x.shape, dtype)
    logdet = ops.empty((n,), dtype)
    ls = ops.empty((n, idx_b.shape[0] if affine else 0), dtype)
    ctx = context if context is not None else ops.empty((n, 0), dtype)
    masks = tuple(lay.mask.data for lay in layers) if masked else ws
    weff = tuple(ops.empty(w.shape, dtype) for w in ws) if masked else ws
    ops.net_map(x, ctx, idx_a, idx_b, ws, tuple(lay.bias.data for lay in layers), masks, masked, weff,
                layers[0].act_code, float(layers[0].alpha), dtype.type(bound), affine, expand, _flat(x, idx_b),
                _blocked(), buf, out, logdet, ls)
    return out, logdet, ls, (FusedCache(weff, buf) if need_grad else None)


def net_map_vjp(dout, dlogabsdet, x, ls, idx_a, idx_b, layers, masked, bound, affine, expand, cache):
    """d input of ``net_map``'s call (x its data side); accumulates the layers' weight and bias
    gradients (``kernels.fused.cpu.net_map_vjp``)."""
    ops = backend_of(dout)
    gbuf = ops.empty(cache.buf.shape, dout.dtype)
    din = ops.empty(dout.shape, dout.dtype)
    masks = tuple(lay.mask.data for lay in layers) if masked else cache.weights
    ops.net_map_vjp(dout, dlogabsdet, x, idx_a, idx_b, cache.weights, masks, masked, layers[0].act_code,
                    float(layers[0].alpha), dout.dtype.type(bound), affine, expand, _flat(x, idx_b), cache.buf, ls,
                    gbuf, din, tuple(lay.weight.grad for lay in layers), tuple(lay.bias.grad for lay in layers))
    return din


class RunCache(NamedTuple):
    """What ``FusedRun.backward`` reads: the run's input and output, its direction, the workspace."""

    x: object
    out: object
    expand: bool
    buf: object


class FusedRun:
    """Consecutive coupling layers of a chain run as one kernel call per direction
    (``kernels.fused.cpu.chain_map``): the same maths as the layers one by one, one dispatch.

    Made by ``fused_segments``; ``layers`` in the order the call runs them."""

    def __init__(self, layers):
        self.layers = tuple(layers)
        first = self.layers[0]
        self.affine = first._affine
        self.bound = getattr(first, "scale_bound", 1.0)
        lin = first.net.linears[0]
        self.code, self.alpha = lin.act_code, float(lin.alpha)
        # per layer, its network's weight and bias Parameters (their arrays are read at each call:
        # an optimiser's flattening rebinds them)
        self.weights = tuple(tuple(lin.weight for lin in t.net.linears) for t in self.layers)
        self.biases = tuple(tuple(lin.bias for lin in t.net.linears) for t in self.layers)
        # the workspaces' elements per row, from the weights' shapes (fixed): chain_map's buffer holds,
        # per layer, its network's input and outputs (``kernels.fused.cpu.net_size``), its log-det and
        # log-scales, and every inner x_k (dim each); chain_map_vjp's scratch the largest layer's
        # network plus two rows of dim. Computed here, not by the Numba ``net_size`` at each call: a
        # call with a tuple of arrays costs ~10 us
        widths = [ws[0].data.shape[0] + sum(p.data.shape[1] for p in ws) for ws in self.weights]
        self._run_row = (sum(widths) + len(widths) + (sum(t.idx_b.shape[0] for t in self.layers) if self.affine else 0)
                         + (len(widths) - 1) * self.layers[0].dim)
        self._scratch_row = max(widths)

    def call(self, x, context, need_grad, expand):
        """(out, logdet, RunCache or None): x_(k+1) = f_k(x_k) through the run's layers (``expand``:
        their forward maps, else their inverses), logdet = sum_k log|det| of each."""
        for t in self.layers:
            t._check(x, context)
        ops = backend_of(x)
        x = ops.asarray(x)  # C-contiguous (the kernel maps it in tiles of rows); no copy when it is
        n, dtype = x.shape[0], x.dtype
        wss = tuple(tuple(p.data for p in ws) for ws in self.weights)
        idx_as = tuple(t.idx_a for t in self.layers)
        idx_bs = tuple(t.idx_b for t in self.layers)
        tile = n if need_grad else min(n, EVAL_TILE_ROWS)  # a density or a sample: scratch for one tile
        buf = ops.empty((tile * self._run_row,), dtype)
        out = ops.empty(x.shape, dtype)
        logdet = ops.empty((n,), dtype)
        ctx = ops.asarray(context) if context is not None else ops.empty((n, 0), dtype)
        bss = tuple(tuple(p.data for p in bs) for bs in self.biases)
        ops.chain_map(x, ctx, idx_as, idx_bs, wss, bss, self.code, self.alpha, dtype.type(self.bound), self.affine,
                      expand, _blocked(), max(tile, 1), buf, out, logdet)
        return out, logdet, (RunCache(x, out, expand, buf) if need_grad else None)

    def backward(self, dout, dlogabsdet, cache):
        """d input of the run's call: for k from the last layer down, with c = dL/dlog|det| (the same
        for every layer, the log-dets add up),
            dL/dx_k = J_k^T dL/dx_(k+1) + c d logdet_k / dx_k,
        each layer's VJP as ``Coupling.backward`` states it (the map's VJP gives dL/dx_b and dL/dh,
        then J_h(x_a)^T dL/dh goes into the pass-through columns), accumulating every layer's
        weight and bias gradients."""
        ops = backend_of(dout)
        n, d = dout.shape
        wss = tuple(tuple(p.data for p in ws) for ws in self.weights)
        gbuf = ops.empty((n * (self._scratch_row + 2 * d),), dout.dtype)
        din = ops.empty(dout.shape, dout.dtype)
        ops.chain_map_vjp(dout, dlogabsdet, cache.x, cache.out, tuple(t.idx_a for t in self.layers),
                          tuple(t.idx_b for t in self.layers), wss, self.code, self.alpha,
                          dout.dtype.type(self.bound), self.affine, cache.expand, cache.buf, gbuf, din,
                          tuple(tuple(p.grad for p in ws) for ws in self.weights),
                          tuple(tuple(p.grad for p in bs) for bs in self.biases))
        return din


#: methods a layer in a FusedRun must not override on its instance (a run never calls them)
_RUN_BYPASSES = frozenset(("forward", "inverse", "backward", "_call", "_map", "_map_bwd"))


def overridden(t):
    """Whether the instance ``t`` replaces a method a FusedRun bypasses (a wrapper, a test's patch).
    (Every call's segment key asks it of every layer: a set test, not a loop in Python.)"""
    return not _RUN_BYPASSES.isdisjoint(t.__dict__)


def _run_key(t, x):
    """What consecutive layers must share to run as one FusedRun (None: t does not fuse). Only the
    stock coupling classes, unpatched: a subclass or an instance that replaces ``forward`` (say)
    keeps its own calls."""
    from .coupling import AdditiveCoupling, AffineCoupling

    if not (type(t) in (AffineCoupling, AdditiveCoupling) and t.fused and not overridden(t)
            and backend_of(x).name == "cpu" and narrow(t.net.linears, t.net.residual)):  # chain_map: CPU only
        return None
    lin = t.net.linears[0]
    return (type(t), len(t.net.linears), lin.act_code, lin.alpha, getattr(t, "scale_bound", None), t.context_dim)


def fused_segments(transforms, x):
    """``transforms`` (in the order a call runs them) with every run of two or more consecutive
    coupling layers that the fused kernels take, and that share their kind, depth, activation,
    bound and context, replaced by one ``FusedRun``."""
    segments, run, key = [], [], None

    def flush():
        if len(run) >= 2:
            segments.append(FusedRun(run))
        else:
            segments.extend(run)

    for t in transforms:
        k = _run_key(t, x)
        if k is not None and k == key:
            run.append(t)
            continue
        flush()
        run, key = ([t], k) if k is not None else ([], None)
        if k is None:
            segments.append(t)
    flush()
    return segments
