"""Convolutions with hand-written backward, channels last: Conv2d and Glow's coupling network.

A k x k 'same' convolution (stride 1, zero padding k // 2) of an ``(N, H, W, C_in)`` image,
``y = phi(sum_t shift_t(x) W_t + b)`` over the k^2 taps t (``W_t`` the (C_in, C_out) block t
of ``W``, shape ``(k k C_in, C_out)``), is computed one of two ways, both one GEMM over the
``N H W`` pixels:

* input side (``C_in <= C_out``, and every 1x1 conv): ``y = phi(im2col(x) @ W + b)``, a
  ``Linear`` on the im2col rows; backward is the ``Linear`` backward, then col2im;
* output side (``C_in > C_out``, e.g. Glow's last conv, 512 -> 2 C_b): ``T = x @ W'`` with the
  taps side by side, ``W' = [W_{k^2-1}, ..., W_0]`` of shape ``(C_in, k^2 C_out)``, then
  ``y = phi(col2im(T) + b)``: the shifts act on the k^2 C_out-wide result instead of a
  k^2 C_in-wide copy of the input. Backward: ``dT = im2col(dh)``, ``dW' = x^T dT``,
  ``dx = dT W'^T``.

The side with the narrower k^2 x C matrix is taken, which is what the data movement costs.
The input side's cache keeps its im2col rows (k^2 C_in <= k^2 C_out wide: the narrow side)
for the weight gradient; the output side keeps no column matrix (backward builds im2col(dh)).
"""

from typing import NamedTuple

import numpy as np

from ..core.module import Module, widths_text
from ..errors import ConfigError, ShapeError
from ..kernels import backend_of
from ..kernels._scalar import ACT_IDENTITY
from .linear import Linear, LinearCache

__all__ = ["Conv2d", "ConvNet"]


class ConvCache(NamedTuple):
    x: object  # (N, H, W, C_in) input
    y: object  # (N H W, C_out) output rows, phi(.): phi' is read from it
    col: object  # the input side's im2col rows (k > 1), kept for the weight gradient; else None


class Conv2d(Module):
    """y = phi(conv_k(x; W) + b): 'same' padding, stride 1, images (N, H, W, C) channels last.

    Arguments:
        in_channels, out_channels: channel counts.
        kernel_size: odd k (1 and 3 in Glow).
        activation, alpha, zero_init, rng, dtype: as for ``Linear`` (fan-in k k C_in).

    Example:
        >>> import numpy as np
        >>> conv = Conv2d(2, 4, 3, activation="relu", rng=0)
        >>> y, cache = conv.forward(np.ones((1, 5, 5, 2)))
        >>> y.shape
        (1, 5, 5, 4)
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, activation="identity", alpha=None,
                 zero_init=False, rng=None, dtype=np.float64):
        k = int(kernel_size)
        if k < 1 or k % 2 == 0:
            raise ConfigError(f"kernel_size must be odd and >= 1 ('same' padding), got {kernel_size}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = k
        self.linear = Linear(k * k * self.in_channels, self.out_channels, activation=activation, alpha=alpha,
                             zero_init=zero_init, rng=rng, dtype=dtype)
        self.output_side = k > 1 and self.in_channels > self.out_channels
        self._after_load()

    def _after_load(self):
        if not getattr(self, "output_side", False):
            return
        # W'[c, t C_out + o] = W[(k^2 - 1 - t) C_in + c, o], as a gather over the flattened arrays
        k2, cin, cout = self.kernel_size**2, self.in_channels, self.out_channels
        c, t, o = np.meshgrid(np.arange(cin), np.arange(k2), np.arange(cout), indexing="ij")
        idx = ((k2 - 1 - t) * cin + c) * cout + o
        self._tap_idx = backend_of(self.linear.weight.data).asarray(idx.reshape(-1).astype(np.int64))

    def _taps_weight(self):
        """W' (C_in, k^2 C_out): the taps side by side, in reverse order."""
        w = self.linear.weight.data
        ops = backend_of(w)
        wt = ops.empty((self.in_channels, self.kernel_size**2 * self.out_channels), w.dtype)
        ops.gather_cols(ops.reshape(w, (1, w.size)), self._tap_idx, ops.reshape(wt, (1, wt.size)), 0)
        return wt

    def _columns(self, x):
        n, h, w, c = x.shape
        ops = backend_of(x)
        if self.kernel_size == 1:
            return ops.reshape(x, (n * h * w, c))
        col = ops.empty((n * h * w, self.kernel_size * self.kernel_size * c), x.dtype)
        ops.im2col(x, self.kernel_size, col)
        return col

    def forward(self, x, need_grad=True):
        """(N, H, W, C_in) -> ((N, H, W, C_out), cache)."""
        if x.ndim != 4 or x.shape[3] != self.in_channels:
            raise ShapeError(f"Conv2d expected x of shape (N, H, W, {self.in_channels}), got {tuple(x.shape)}")
        n, h, w, _ = x.shape
        if self.output_side:
            return self._forward_output_side(x, need_grad)
        col = self._columns(x)
        y, lc = self.linear.forward(col, need_grad)
        out = backend_of(y).reshape(y, (n, h, w, self.out_channels))
        return out, (ConvCache(x, lc.y, col if self.kernel_size > 1 else None) if need_grad else None)

    def _forward_output_side(self, x, need_grad):
        n, h, w, c = x.shape
        ops = backend_of(x)
        t = ops.empty((n * h * w, self.kernel_size**2 * self.out_channels), x.dtype)
        ops.matmul(ops.reshape(x, (n * h * w, c)), self._taps_weight(), t)
        out = ops.zeros((n, h, w, self.out_channels), x.dtype)
        ops.col2im_acc(t, self.kernel_size, out)
        y = ops.reshape(out, (n * h * w, self.out_channels))
        lin = self.linear
        ops.bias_act(y, lin.bias.data, lin.act_code, lin.alpha)
        return out, (ConvCache(x, y, None) if need_grad else None)

    def _backward_output_side(self, dy, cache, need_input_grad):
        x = cache.x
        n, h, w, c = x.shape
        ops = backend_of(dy)
        lin = self.linear
        dy2 = ops.reshape(dy, (n * h * w, self.out_channels))
        if lin.act_code == ACT_IDENTITY:
            dh = dy2
            ops.colsum_acc(dh, lin.bias.grad)
        else:
            dh = ops.empty(dy2.shape, dy2.dtype)
            ops.bias_act_bwd(dy2, cache.y, lin.act_code, lin.alpha, dh, lin.bias.grad)
        dt = ops.empty((n * h * w, self.kernel_size**2 * self.out_channels), dy.dtype)
        ops.im2col(ops.reshape(dh, (n, h, w, self.out_channels)), self.kernel_size, dt)
        x2 = ops.reshape(x, (n * h * w, c))
        dwt = ops.zeros((c, dt.shape[1]), dy.dtype)
        ops.matmul_tn_acc(x2, dt, dwt)
        g = lin.weight.grad
        ops.scatter_add_cols(ops.reshape(dwt, (1, dwt.size)), self._tap_idx, ops.reshape(g, (1, g.size)))
        if not need_input_grad:
            return None
        dx = ops.empty((n * h * w, c), dy.dtype)
        ops.matmul_nt(dt, self._taps_weight(), dx)
        return ops.reshape(dx, (n, h, w, c))

    def backward(self, dy, cache, need_input_grad=True):
        """Linear's VJP on the im2col rows (dW += col^T dh, db += sum dh), then dx = col2im(dh W^T)."""
        if self.output_side:
            return self._backward_output_side(dy, cache, need_input_grad)
        x = cache.x
        n, h, w, c = x.shape
        ops = backend_of(dy)
        dy2 = ops.reshape(dy, (n * h * w, self.out_channels))
        col = cache.col if cache.col is not None else self._columns(x)
        dcol = self.linear.backward(dy2, LinearCache(col, cache.y), need_input_grad)
        if not need_input_grad:
            return None
        if self.kernel_size == 1:
            return ops.reshape(dcol, (n, h, w, c))
        dx = ops.zeros((n, h, w, c), dy.dtype)
        ops.col2im_acc(dcol, self.kernel_size, dx)
        return dx

    def extra_repr(self):
        act = self.linear.activation
        return widths_text([self.in_channels, self.out_channels],
                           [f"{self.kernel_size}x{self.kernel_size}", act if act != "identity" else ""])


class ConvNetCache(NamedTuple):
    layers: tuple


class ConvNet(Module):
    """Glow's coupling network: conv3x3 -> phi -> [conv1x1 -> phi]* -> zero-initialised conv3x3.

    ``hidden=[512, 512]`` is Glow's NN (3x3 to 512 channels, 1x1 to 512, 3x3 out); ``hidden=[]``
    is a single zero-initialised 3x3 convolution (Glow's split prior). The last layer starts
    at zero, so a coupling layer built on it starts as the identity.
    """

    def __init__(self, in_channels, out_channels, hidden=(64, 64), activation="relu", rng=None, dtype=np.float64):
        rng = np.random.default_rng(rng)
        sizes = [int(in_channels), *[int(h) for h in hidden], int(out_channels)]
        self.convs = []
        for i in range(len(sizes) - 1):
            last = i == len(sizes) - 2
            k = 3 if (i == 0 or last) else 1
            self.convs.append(Conv2d(sizes[i], sizes[i + 1], k, activation="identity" if last else activation,
                                     zero_init=last, rng=rng, dtype=dtype))

    def extra_repr(self):
        sizes = [self.convs[0].in_channels, *(conv.out_channels for conv in self.convs)]
        kernels = "/".join(f"{c.kernel_size}x{c.kernel_size}" for c in self.convs)
        return widths_text(sizes, [kernels, self.convs[0].linear.activation if len(self.convs) > 1 else ""])

    def forward(self, x, need_grad=True):
        caches = []
        for conv in self.convs:
            x, c = conv.forward(x, need_grad)
            caches.append(c)
        return x, (ConvNetCache(tuple(caches)) if need_grad else None)

    def backward(self, dy, cache, need_input_grad=True):
        """dx (N, H, W, C_in), or None without ``need_input_grad``: the Conv2d VJPs in reverse.

        h_0 = x, h_i = phi(conv(h_(i-1); W_i) + b_i); for i = L down to 1 (``Conv2d.backward``):
            da = dh_i * phi'; dW_i += col(h_(i-1))^T da; db_i += sum da; dh_(i-1) = col2im(da W_i^T),
        and dx = dh_0.
        """
        for i in range(len(self.convs) - 1, -1, -1):
            dy = self.convs[i].backward(dy, cache.layers[i], need_input_grad=i > 0 or need_input_grad)
        return dy
