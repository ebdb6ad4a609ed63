"""The layers' side of the fused kernels (``kernels.fused``): one call per direction for a
conditioner network and its element-wise map, shared by coupling layers and MAF/IAF."""

from typing import NamedTuple

from ..kernels import backend_of

#: the widest hidden layer the fused kernels take; wider networks run op by op (measured:
#: benchmarks/RESULTS.md, "Fused layers")
FUSED_MAX_WIDTH = 128


class FusedCache(NamedTuple):
    """What ``net_map_vjp`` reads: the weights the call used (W * M for a MADE), the network's
    input and every layer's output."""

    weights: tuple
    acts: tuple


def _flat(x, idx_b):
    """Every column mapped (MAF, IAF): the float32 map may run as one flat loop (it checks the order)."""
    return idx_b.shape[0] == x.shape[1] and x.flags.c_contiguous


def fusable(layers, residual, x):
    """The fused kernels apply: a CPU array, a plain (not residual) network no wider than
    ``FUSED_MAX_WIDTH``."""
    return (not residual and backend_of(x).name == "cpu"
            and max(layer.out_features for layer in layers[:-1]) <= FUSED_MAX_WIDTH)


def net_map(x, context, idx_a, idx_b, layers, masked, bound, affine, expand, need_grad):
    """(out, logdet, ls, FusedCache or None): h = net([x[:, idx_a], context]) (the ``layers``:
    ``Linear`` or, ``masked``, ``MaskedLinear``), then the affine (or additive) map of x's
    columns ``idx_b`` by h, expand or contract (``kernels.fused.cpu.net_map``)."""
    ops = backend_of(x)
    n, dtype = x.shape[0], x.dtype
    acts = tuple(ops.empty((n, w), dtype) for w in (layers[0].in_features, *(lay.out_features for lay in layers)))
    out = ops.empty(x.shape, dtype)
    logdet = ops.empty((n,), dtype)
    ls = ops.empty((n, idx_b.shape[0] if affine else 0), dtype)
    ctx = context if context is not None else ops.empty((n, 0), dtype)
    ws = tuple(lay.weight.data for lay in layers)
    masks = tuple(lay.mask.data for lay in layers) if masked else ws
    weff = tuple(ops.empty(w.shape, dtype) for w in ws) if masked else ws
    ops.net_map(x, ctx, idx_a, idx_b, ws, tuple(lay.bias.data for lay in layers), masks, masked, weff,
                layers[0].act_code, float(layers[0].alpha), dtype.type(bound), affine, expand, _flat(x, idx_b), acts,
                out, logdet, ls)
    return out, logdet, ls, (FusedCache(weff, acts) if need_grad else None)


def net_map_vjp(dout, dlogabsdet, x, ls, idx_a, idx_b, layers, masked, bound, affine, expand, cache):
    """d input of ``net_map``'s call (x its data side); accumulates the layers' weight and bias
    gradients (``kernels.fused.cpu.net_map_vjp``)."""
    ops = backend_of(dout)
    grads = tuple(ops.empty(a.shape, dout.dtype) for a in cache.acts)
    din = ops.empty(dout.shape, dout.dtype)
    masks = tuple(lay.mask.data for lay in layers) if masked else cache.weights
    ops.net_map_vjp(dout, dlogabsdet, x, idx_a, idx_b, cache.weights, masks, masked, layers[0].act_code,
                    float(layers[0].alpha), dout.dtype.type(bound), affine, expand, _flat(x, idx_b), cache.acts, ls,
                    grads, din,
                    tuple(lay.weight.grad for lay in layers), tuple(lay.bias.grad for lay in layers))
    return din
