"""Dense layers with hand-written backward: Linear (with fused activation) and MLP."""

from typing import NamedTuple

import numpy as np

from ..core.module import Module, Parameter, widths_text
from ..errors import ConfigError, ShapeError
from ..kernels import backend_of
from ..kernels._scalar import ACT_IDENTITY
from .activations import activation_code

__all__ = ["Linear", "MLP"]


class LinearCache(NamedTuple):
    x: object  # (N, in) input
    y: object  # (N, out) output, phi(x W + b): phi' is read from it


class Linear(Module):
    """y = phi(x W + b), W of shape (in, out), phi an activation (identity by default).

    Arguments:
        in_features, out_features: sizes.
        activation: ``identity``, ``relu``, ``leaky_relu``, ``tanh``, ``elu``, ``softplus``.
        alpha: leaky slope or ELU scale (defaults 0.01 and 1).
        zero_init: start with W = 0 and b = 0 (a coupling layer then starts as the identity).
        rng: ``numpy.random.Generator`` or seed for W ~ U(-1/sqrt(in), 1/sqrt(in)).

    Example:
        >>> import numpy as np
        >>> lin = Linear(3, 2, activation="tanh", rng=0)
        >>> y, cache = lin.forward(np.ones((4, 3)))
        >>> y.shape
        (4, 2)
    """

    def __init__(self, in_features, out_features, activation="identity", alpha=None, zero_init=False,
                 rng=None, dtype=np.float64):
        if in_features < 1 or out_features < 1:
            raise ConfigError(f"Linear sizes must be >= 1, got ({in_features}, {out_features})")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.activation = activation
        self.act_code, self.alpha = activation_code(activation, alpha)
        rng = np.random.default_rng(rng)
        if zero_init:
            w = np.zeros((in_features, out_features))
        else:
            bound = 1.0 / np.sqrt(in_features)
            w = rng.uniform(-bound, bound, size=(in_features, out_features))
        self.weight = Parameter(np.ascontiguousarray(w, dtype=dtype))
        self.bias = Parameter(np.zeros(out_features, dtype=dtype))

    def forward(self, x, need_grad=True):
        """(N, in) -> ((N, out), cache)."""
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ShapeError(f"Linear expected x of shape (N, {self.in_features}), got {tuple(x.shape)}")
        ops = backend_of(x)
        y = ops.empty((x.shape[0], self.out_features), x.dtype)
        ops.linear_act(x, self.weight.data, self.bias.data, self.act_code, self.alpha, y)
        return y, (LinearCache(x, y) if need_grad else None)

    def backward(self, dy, cache, need_input_grad=True):
        """dh = dy * phi'(h); dW += x^T dh; db += sum_n dh; returns dx = dh W^T."""
        x, y = cache
        ops = backend_of(dy)
        if self.act_code == ACT_IDENTITY:
            dh = dy  # phi' = 1: no pass needed
            ops.colsum_acc(dh, self.bias.grad)
        else:
            dh = ops.empty(y.shape, y.dtype)
            ops.bias_act_bwd(dy, y, self.act_code, self.alpha, dh, self.bias.grad)
        ops.matmul_tn_acc(x, dh, self.weight.grad)
        if not need_input_grad:
            return None
        dx = ops.empty(x.shape, x.dtype)
        ops.matmul_nt(dh, self.weight.data, dx)
        return dx

    def extra_repr(self):
        return widths_text([self.in_features, self.out_features],
                           [self.activation if self.activation != "identity" else ""])


class MLPCache(NamedTuple):
    layers: tuple  # one LinearCache per layer


class MLP(Module):
    """x -> phi(x W1 + b1) -> ... -> h W_L + b_L, the conditioner of coupling layers.

    With ``residual=True`` the hidden-to-hidden layers are residual blocks
    ``h <- h + phi(h W + b)`` (all hidden widths must then be equal).

    Arguments:
        in_features, out_features: sizes.
        hidden: list of hidden widths, e.g. ``[64, 64]``.
        activation, alpha: the hidden activation (see ``Linear``).
        residual: residual hidden blocks.
        zero_last: zero-initialise the last layer (output 0 at start).
        rng: Generator or seed.
    """

    def __init__(self, in_features, out_features, hidden=(64, 64), activation="relu", alpha=None,
                 residual=False, zero_last=True, rng=None, dtype=np.float64):
        rng = np.random.default_rng(rng)
        hidden = [int(h) for h in hidden]
        if residual and len(set(hidden)) > 1:
            raise ConfigError(f"residual MLP needs equal hidden widths, got {hidden}")
        sizes = [int(in_features), *hidden, int(out_features)]
        self.residual = bool(residual)
        self.in_features = sizes[0]
        self.out_features = sizes[-1]
        self.linears = []
        for i in range(len(sizes) - 1):
            last = i == len(sizes) - 2
            self.linears.append(
                Linear(sizes[i], sizes[i + 1], activation="identity" if last else activation, alpha=alpha,
                       zero_init=last and zero_last, rng=rng, dtype=dtype)
            )

    def _is_residual(self, i):
        return self.residual and 0 < i < len(self.linears) - 1

    def extra_repr(self):
        sizes = [self.in_features, *(lin.out_features for lin in self.linears)]
        act = self.linears[0].activation if len(self.linears) > 1 else ""
        return widths_text(sizes, [act, "residual" if self.residual else ""])

    def forward(self, x, need_grad=True):
        """(N, in) -> ((N, out), cache)."""
        caches = []
        h = x
        for i, lin in enumerate(self.linears):
            a, c = lin.forward(h, need_grad)
            if self._is_residual(i):
                ops = backend_of(a)
                out = ops.copy(a)  # keep a = phi(.) intact: its backward reads phi' from it
                ops.add_inplace(out, h)
                a = out
            caches.append(c)
            h = a
        return h, (MLPCache(tuple(caches)) if need_grad else None)

    def backward(self, dy, cache, need_input_grad=True):
        """dx (N, in), or None without ``need_input_grad``: the Linear VJPs in reverse.

        h_0 = x, h_i = phi(h_(i-1) W_i + b_i) (+ h_(i-1) in a residual block); for i = L down to 1:
            da = dh_i * phi'; dW_i += h_(i-1)^T da; db_i += sum_n da; dh_(i-1) = da W_i^T (+ dh_i),
        the last term the skip connection's gradient; dx = dh_0.
        """
        dh = dy
        for i in range(len(self.linears) - 1, -1, -1):
            dx = self.linears[i].backward(dh, cache.layers[i], need_input_grad=i > 0 or need_input_grad)
            if self._is_residual(i):
                backend_of(dh).add_inplace(dx, dh)
            dh = dx
        return dh
