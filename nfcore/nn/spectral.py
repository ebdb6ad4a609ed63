"""Spectral normalisation of a linear layer, with the exact backward through the normalisation.

``W~ = W / max(1, sigma / c)``: the layer's operator norm is brought down to at most ``c``
(0 < c < 1) and left alone when already below. ``sigma = p^T W q`` is the power-iteration
estimate of the largest singular value of ``W`` (shape (in, out), row vectors: ``y = x W~``),
with persistent unit vectors ``p`` (in,) and ``q`` (out,) kept as buffers and advanced
``n_power_iterations`` times per training call (no gradient through them).

Backward: with ``s = min(1, c / sigma)`` and ``G = dL/dW~``,
``dL/dW = s G - (s / sigma) <G, W> p q^T`` when ``sigma > c`` (``d sigma / d W = p q^T``), else ``G``.

References:
    Miyato et al. Spectral Normalization for GANs (2018); Behrmann et al. Invertible Residual
    Networks (2019), section 3.
"""

from typing import NamedTuple

import numpy as np

from ..core.module import Buffer, Module, Parameter, widths_text
from ..errors import ConfigError
from ..kernels import backend_of

__all__ = ["SpectralLinear", "SpectralConv2d"]


class SNCache(NamedTuple):
    weight: object  # W~ (in, out)
    scale: float  # min(1, c / sigma)
    sigma: float
    p: object  # (in,) left singular vector estimate used
    q: object  # (out,)


def _unit(ops, a):
    """Normalise a in place; a zero vector (W = 0, e.g. a zero-initialised layer) becomes the
    uniform unit vector, so the iteration can pick up the direction once W moves."""
    flat = ops.reshape(a, (a.size,))
    norm = float(np.sqrt(ops.sumsq(flat)))
    if norm == 0.0 or not np.isfinite(norm):
        ops.fill(flat, 1.0)
        norm_one = float(np.sqrt(a.size))
        ops.scale_inplace(flat, 1.0 / norm_one)
        return 0.0
    ops.scale_inplace(flat, 1.0 / norm)
    return norm


class _Spectral(Module):
    """What both spectrally normalised layers share; subclasses give sigma() and dsigma_dw()."""

    def _start_at_bound(self):
        # start at the bound, not far beyond it: W~ = W, and W's gradient is not shrunk
        self.power_iteration(50)
        sigma = self.sigma()
        if sigma > self.coeff:
            self.weight.data[...] *= self.coeff / sigma

    def before_shards(self):
        if self.training and self.n_power_iterations:
            self.power_iteration(self.n_power_iterations)

    def normalized(self, update):
        """(W~, cache); ``update``: advance the power iteration first (training calls; on a worker's
        replica the flow ran it once before the split, ``before_shards``)."""
        if update and self.n_power_iterations and self._shard is None:
            self.power_iteration(self.n_power_iterations)
        w = self.weight.data
        ops = backend_of(w)
        sigma = self.sigma()
        scale = min(1.0, self.coeff / sigma) if sigma > 0 else 1.0
        wt = ops.copy(w)
        if scale < 1.0:
            ops.scale_inplace(ops.reshape(wt, (wt.size,)), scale)
        return wt, SNCache(wt, scale, sigma, self.p.data, self.q.data)

    def weight_backward(self, dwt, cache):
        """Accumulate dL/dW given dL/dW~ (see the module docstring)."""
        ops = backend_of(dwt)
        if cache.scale >= 1.0:
            ops.iadd(self.weight.grad, dwt)
            return
        prod = ops.empty(dwt.shape, dwt.dtype)
        ops.mask_mul(dwt, self.weight.data, prod)
        dot = ops.total(prod)
        ops.axpy(cache.scale, dwt, self.weight.grad)
        ops.axpy(-cache.scale / cache.sigma * dot, self.dsigma_dw(cache), self.weight.grad)


    def extra_repr(self):
        k = getattr(self, "kernel_size", None)
        return widths_text([self.in_features, self.out_features], [f"{k}x{k}" if k else "", f"Lip <= {self.coeff:g}"])


class SpectralLinear(_Spectral):
    """y = x W~ + b with W~ = W / max(1, sigma(W) / c), sigma by power iteration.

    Arguments:
        in_features, out_features: sizes.
        coeff: c, the bound on the operator norm of W~ (0 < c < 1 for i-ResNets).
        n_power_iterations: power iterations per training call (more on demand:
            ``power_iteration(n)``); 50 are run at construction, and W is then scaled down to
            sigma = c if it starts above (so that training starts with W~ = W).
        zero_init: start with W = 0 (a residual block's last layer: the block starts as the identity).
        rng, dtype: as for ``Linear``.
    """

    def __init__(self, in_features, out_features, coeff=0.97, n_power_iterations=1, zero_init=False, rng=None,
                 dtype=np.float64):
        if not 0 < coeff:
            raise ConfigError(f"coeff must be > 0, got {coeff}")
        rng = np.random.default_rng(rng)
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.coeff = float(coeff)
        self.n_power_iterations = int(n_power_iterations)
        bound = 1.0 / np.sqrt(in_features)
        shape = (in_features, out_features)
        w = np.zeros(shape) if zero_init else rng.uniform(-bound, bound, shape)
        self.weight = Parameter(w.astype(dtype))
        self.bias = Parameter(np.zeros(out_features, dtype=dtype))
        p = rng.standard_normal(in_features)
        q = rng.standard_normal(out_features)
        self.p = Buffer((p / np.linalg.norm(p)).astype(dtype))
        self.q = Buffer((q / np.linalg.norm(q)).astype(dtype))
        self._start_at_bound()

    def power_iteration(self, n=1):
        """Advance the singular-vector estimates n steps: q <- W^T p / |.|, p <- W q / |.|."""
        w = self.weight.data
        ops = backend_of(w)
        p = ops.reshape(ops.copy(self.p.data), (1, self.in_features))
        q = ops.empty((1, self.out_features), w.dtype)
        for _ in range(int(n)):
            ops.matmul(p, w, q)
            _unit(ops, q)
            ops.matmul_nt(q, w, p)
            _unit(ops, p)
        self.p.data = ops.reshape(p, (self.in_features,))
        self.q.data = ops.reshape(q, (self.out_features,))

    def sigma(self):
        """p^T W q: the current estimate of the largest singular value."""
        w = self.weight.data
        ops = backend_of(w)
        t = ops.empty((1, self.out_features), w.dtype)
        ops.matmul(ops.reshape(self.p.data, (1, self.in_features)), w, t)
        out = ops.zeros((1,), w.dtype)
        ops.rowdot_acc(t, ops.reshape(self.q.data, (1, self.out_features)), 1.0, out)
        return float(np.asarray(ops.to_host(out))[0])

    def dsigma_dw(self, cache):
        """d sigma / dW = p q^T."""
        ops = backend_of(cache.p)
        outer = ops.empty((self.in_features, self.out_features), cache.p.dtype)
        ops.matmul(ops.reshape(cache.p, (self.in_features, 1)), ops.reshape(cache.q, (1, self.out_features)), outer)
        return outer


class SpectralConv2d(_Spectral):
    """y = conv_k(x; W~) + b, W~ = W / max(1, sigma / c), sigma the norm of the whole convolution operator.

    sigma is the largest singular value of the linear map x -> conv_k(x; W) on images of the
    given size (zero 'same' padding), not of the reshaped kernel: the power iteration runs
    ``q = conv(p) / |.|``, ``p = conv^T(q) / |.|`` on an image ``p`` (1, H, W, C_in) and
    ``sigma = <q, conv(p)>``, whose gradient with respect to W is the convolution's weight
    gradient for input p and output cotangent q. The layout of W is ``Conv2d``'s
    ``(k k C_in, C_out)``; the layer works on images of that size only.

    Arguments:
        shape: (H, W) of the images. in_channels, out_channels, kernel_size (odd).
        coeff, n_power_iterations, zero_init, rng, dtype: as for ``SpectralLinear``.
    """

    def __init__(self, shape, in_channels, out_channels, kernel_size=3, coeff=0.97, n_power_iterations=1,
                 zero_init=False, rng=None, dtype=np.float64):
        k = int(kernel_size)
        if k < 1 or k % 2 == 0:
            raise ConfigError(f"kernel_size must be odd, got {kernel_size}")
        rng = np.random.default_rng(rng)
        self.hw = (int(shape[0]), int(shape[1]))
        self.in_features, self.out_features, self.kernel_size = int(in_channels), int(out_channels), k
        self.coeff = float(coeff)
        self.n_power_iterations = int(n_power_iterations)
        fan_in = k * k * self.in_features
        wshape = (fan_in, self.out_features)
        bound = 1.0 / np.sqrt(fan_in)
        w = np.zeros(wshape) if zero_init else rng.uniform(-bound, bound, wshape)
        self.weight = Parameter(w.astype(dtype))
        self.bias = Parameter(np.zeros(self.out_features, dtype=dtype))
        p = rng.standard_normal((1, *self.hw, self.in_features))
        self.p = Buffer((p / np.linalg.norm(p)).astype(dtype))
        self.q = Buffer(np.zeros((1, *self.hw, self.out_features), dtype=dtype))
        self._start_at_bound()

    # the convolution's linear part on images (N, H, W, C), through im2col and one GEMM
    def apply(self, x, w):
        """conv_k(x; w) without bias: (N, H, W, C_in) -> (N, H, W, C_out)."""
        ops = backend_of(x)
        n, h, wd, c = x.shape
        col = ops.empty((n * h * wd, self.kernel_size**2 * c), x.dtype)
        ops.im2col(x, self.kernel_size, col)
        y = ops.empty((n * h * wd, self.out_features), x.dtype)
        ops.matmul(col, w, y)
        return ops.reshape(y, (n, h, wd, self.out_features))

    def apply_t(self, dy, w):
        """The adjoint: (N, H, W, C_out) -> (N, H, W, C_in)."""
        ops = backend_of(dy)
        n, h, wd, c = dy.shape
        dcol = ops.empty((n * h * wd, w.shape[0]), dy.dtype)
        ops.matmul_nt(ops.reshape(dy, (n * h * wd, c)), w, dcol)
        dx = ops.zeros((n, h, wd, self.in_features), dy.dtype)
        ops.col2im_acc(dcol, self.kernel_size, dx)
        return dx

    def weight_grad_acc(self, x, dy, dw):
        """dw += d <dy, conv(x; W)> / dW = im2col(x)^T dy."""
        ops = backend_of(x)
        n, h, wd, c = x.shape
        col = ops.empty((n * h * wd, self.kernel_size**2 * c), x.dtype)
        ops.im2col(x, self.kernel_size, col)
        ops.matmul_tn_acc(col, ops.reshape(dy, (n * h * wd, self.out_features)), dw)

    def power_iteration(self, n=1):
        """Advance the operator's singular-vector estimates n steps."""
        w = self.weight.data
        ops = backend_of(w)
        p = self.p.data
        q = self.q.data
        for _ in range(int(n)):
            q = self.apply(p, w)
            _unit(ops, q)
            p = self.apply_t(q, w)
            _unit(ops, p)
        self.p.data, self.q.data = p, q

    def sigma(self):
        """<q, conv(p)>: the current estimate of the operator norm."""
        w = self.weight.data
        ops = backend_of(w)
        t = self.apply(self.p.data, w)
        out = ops.zeros((1,), w.dtype)
        ops.rowdot_acc(ops.reshape(t, (1, t.size)), ops.reshape(self.q.data, (1, t.size)), 1.0, out)
        return float(np.asarray(ops.to_host(out))[0])

    def dsigma_dw(self, cache):
        """d sigma / dW = im2col(p)^T q: the convolution's weight gradient for input p, cotangent q."""
        ops = backend_of(cache.p)
        out = ops.zeros(self.weight.data.shape, cache.p.dtype)
        self.weight_grad_acc(cache.p, cache.q, out)
        return out
