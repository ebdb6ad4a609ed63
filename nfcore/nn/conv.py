"""Convolutions with hand-written backward, channels last: Conv2d and Glow's coupling network.

A k x k 'same' convolution (stride 1, zero padding k // 2) of an ``(N, H, W, C_in)`` image is
one GEMM over the ``N H W`` pixels: ``y = phi(im2col(x) @ W + b)`` with ``W`` of shape
``(k k C_in, C_out)``. So ``Conv2d`` is a ``Linear`` applied to the im2col rows; its backward
is the ``Linear`` backward followed by col2im (the adjoint of im2col). The cache keeps the
input, not the k^2-times larger column matrix: backward rebuilds it (a copy, no FLOPs).
"""

from typing import NamedTuple

import numpy as np

from ..core.module import Module
from ..errors import ConfigError, ShapeError
from ..kernels import backend_of
from .linear import Linear, LinearCache

__all__ = ["Conv2d", "ConvNet"]


class ConvCache(NamedTuple):
    x: object  # (N, H, W, C_in) input
    y: object  # (N H W, C_out) output rows, phi(.): phi' is read from it


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
        y, lc = self.linear.forward(self._columns(x), need_grad)
        out = backend_of(y).reshape(y, (n, h, w, self.out_channels))
        return out, (ConvCache(x, lc.y) if need_grad else None)

    def backward(self, dy, cache, need_input_grad=True):
        """Linear's VJP on the im2col rows (dW += col^T dh, db += sum dh), then dx = col2im(dh W^T)."""
        x = cache.x
        n, h, w, c = x.shape
        ops = backend_of(dy)
        dy2 = ops.reshape(dy, (n * h * w, self.out_channels))
        dcol = self.linear.backward(dy2, LinearCache(self._columns(x), cache.y), need_input_grad)
        if not need_input_grad:
            return None
        if self.kernel_size == 1:
            return ops.reshape(dcol, (n, h, w, c))
        dx = ops.zeros((n, h, w, c), dy.dtype)
        ops.col2im_acc(dcol, self.kernel_size, dx)
        return dx


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

    def forward(self, x, need_grad=True):
        caches = []
        for conv in self.convs:
            x, c = conv.forward(x, need_grad)
            caches.append(c)
        return x, (ConvNetCache(tuple(caches)) if need_grad else None)

    def backward(self, dy, cache, need_input_grad=True):
        for i in range(len(self.convs) - 1, -1, -1):
            dy = self.convs[i].backward(dy, cache.layers[i], need_input_grad=i > 0 or need_input_grad)
        return dy
