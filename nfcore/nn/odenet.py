"""The dynamics network of continuous flows: concat-squash layers (FFJORD), evaluated as one."""

import numpy as np

from .._checks import check_int
from ..core.module import Module, Parameter, widths_text
from ..errors import ConfigError
from ..kernels._scalar import ACT_SOFTPLUS, ACT_SWISH, ACT_TANH

__all__ = ["ConcatSquash", "ODENet", "ODE_ACTIVATIONS"]

#: the dynamics' activations: smooth, since the trace's gradient needs phi''
ODE_ACTIVATIONS = {"tanh": ACT_TANH, "softplus": ACT_SOFTPLUS, "swish": ACT_SWISH}


class ConcatSquash(Module):
    """y = (h W + b) sigmoid(a t + e) + c t: a dense layer whose outputs the time gates and shifts.

    FFJORD's concat-squash layer. W (in, out) and b as a dense layer; a, e (the gate) and c (the
    shift) one per output. ``ODENet`` evaluates a stack of them in one kernel call.
    """

    def __init__(self, in_features, out_features, zero_init=False, rng=None, dtype=np.float64):
        rng = np.random.default_rng(rng)
        bound = 1.0 / np.sqrt(in_features)
        shape = (in_features, out_features)
        w = np.zeros(shape) if zero_init else rng.uniform(-bound, bound, shape)
        self.weight = Parameter(np.ascontiguousarray(w, dtype=dtype))
        self.bias = Parameter(np.zeros(out_features, dtype=dtype))
        # the time functions start as torch's Linear(1, out) would: U(-1, 1)
        self.gate_weight = Parameter(rng.uniform(-1, 1, out_features).astype(dtype))
        self.gate_bias = Parameter(rng.uniform(-1, 1, out_features).astype(dtype))
        shift = np.zeros(out_features) if zero_init else rng.uniform(-1, 1, out_features)
        self.shift = Parameter(shift.astype(dtype))

    def extra_repr(self):
        return f"{self.weight.shape[0]} -> {self.weight.shape[1]}"


class ODENet(Module):
    """f(z, t) = L_K(phi(... phi(L_1([z, context], t)) ...), t), L_k concat-squash layers.

    Arguments:
        dim: D, the width of z and of f.
        hidden: the hidden widths.
        activation: ``tanh``, ``softplus`` or ``swish`` (smooth: the trace's gradient needs phi'').
        context_dim: width of a context appended to z at the input.
        zero_last: start with the last layer's W, b and shift at zero (f = 0: the identity flow).
    """

    def __init__(self, dim, hidden=(64, 64), activation="tanh", context_dim=0, zero_last=True, rng=None,
                 dtype=np.float64):
        if activation not in ODE_ACTIVATIONS:
            raise ConfigError(f"the ODE dynamics' activation must be one of {sorted(ODE_ACTIVATIONS)} (smooth: the "
                              f"trace's gradient needs its second derivative), got {activation!r}")
        rng = np.random.default_rng(rng)
        self.dim = int(dim)
        self.context_dim = int(context_dim)
        self.activation = activation
        self.act_code = ODE_ACTIVATIONS[activation]
        widths = [self.dim + self.context_dim, *[check_int("hidden width", h, 1) for h in hidden], self.dim]
        self.dims = np.array(widths, dtype=np.int64)
        self.layers = [ConcatSquash(a, b, zero_init=zero_last and k == len(widths) - 2, rng=rng, dtype=dtype)
                       for k, (a, b) in enumerate(zip(widths[:-1], widths[1:]))]

    def extra_repr(self):
        return widths_text(list(self.dims), (self.activation, "concat-squash"))

    def theta(self):
        """The parameters as the kernels' one flat vector: per layer W, b, gate a, gate e, shift c."""
        parts = []
        for layer in self.layers:
            parts += [layer.weight.data.ravel(), layer.bias.data, layer.gate_weight.data, layer.gate_bias.data,
                      layer.shift.data]
        return np.concatenate(parts)

    def add_grad(self, dtheta):
        """Add a flat gradient (``theta``'s layout) into the parameters' ``grad``."""
        o = 0
        for layer in self.layers:
            for p in (layer.weight, layer.bias, layer.gate_weight, layer.gate_bias, layer.shift):
                p.grad += dtheta[o : o + p.data.size].reshape(p.data.shape)
                o += p.data.size
