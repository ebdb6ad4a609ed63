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

from ..core.module import Buffer, Module, Parameter
from ..errors import ConfigError
from ..kernels import backend_of

__all__ = ["SpectralLinear"]


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


class SpectralLinear(Module):
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
        self.power_iteration(50)
        sigma = self.sigma()
        if sigma > self.coeff:  # start at the bound, not far beyond it: W~ = W, and W's gradient is not shrunk
            self.weight.data[...] *= self.coeff / sigma

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

    def normalized(self, update):
        """(W~, cache); ``update``: advance the power iteration first (training calls)."""
        if update and self.n_power_iterations:
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
        outer = ops.empty(dwt.shape, dwt.dtype)
        ops.matmul(ops.reshape(cache.p, (self.in_features, 1)), ops.reshape(cache.q, (1, self.out_features)), outer)
        ops.axpy(cache.scale, dwt, self.weight.grad)
        ops.axpy(-cache.scale / cache.sigma * dot, outer, self.weight.grad)
