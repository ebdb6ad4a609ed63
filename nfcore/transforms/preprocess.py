"""Preprocessing as transforms, with their log-dets: dequantisation of K-level data and the logit map.

With ``Dequantize`` first in a flow, ``flow.log_prob(x)`` of integer-valued data is the
dequantisation lower bound on the discrete log-probability,
``log P(x) >= E_u[log p(y)] - D log K`` with ``y = (x + u) / K``, one noise draw per call,
and ``bits_per_dim = -log_prob / (D log 2)`` is directly comparable across models.
"""

import math
from typing import NamedTuple

import numpy as np

from ..core.transform import Transform
from ..errors import ConfigError, InputOutsideDomain, ShapeError
from ..kernels import backend_of, is_device_array

__all__ = ["Dequantize", "DequantizeColumns", "Logit"]


def _event(shape):
    shape = (int(shape),) if np.isscalar(shape) else tuple(int(s) for s in shape)
    if not shape or min(shape) < 1:
        raise ShapeError(f"bad event shape {shape}")
    return shape


def _check(x, shape, name):
    if tuple(x.shape[1:]) != shape:
        raise ShapeError(f"{name} expected input of shape (N, {', '.join(map(str, shape))}), got {tuple(x.shape)}")


class _DirCache(NamedTuple):
    inverse: bool


class Dequantize(Transform):
    """y = (x + u) / K, u ~ U[0, 1)^D: K-level data {0, ..., K-1} to [0, 1); log|det| = -D log K.

    The inverse is ``x = floor(K y)`` (clipped to the levels), exact on the data. The noise
    is drawn afresh on every forward call from the layer's own generator (``seed``), in
    training and in evaluation alike (the bound above holds for one draw in expectation);
    ``noise="midpoint"`` uses u = 1/2 instead (deterministic, for study). On host arrays the
    input is checked: values must be integers in [0, K-1].

    Arguments:
        shape: the event shape, e.g. (H, W, C).
        levels: K (17 for the 8x8 digits, 256 for 8-bit images).
    """

    def __init__(self, shape, levels, noise="uniform", seed=None):
        self.shape = _event(shape)
        self.levels = int(levels)
        if self.levels < 2:
            raise ConfigError(f"levels must be >= 2, got {levels}")
        if noise not in ("uniform", "midpoint"):
            raise ConfigError(f"noise must be uniform or midpoint, got {noise!r}")
        self.noise = noise
        self.dim = int(np.prod(self.shape))
        self._rng = np.random.default_rng(seed)

    def _logdet(self, x, sign):
        ops = backend_of(x)
        ld = ops.empty((x.shape[0],), x.dtype)
        ops.fill(ld, -sign * self.dim * math.log(self.levels))
        return ld

    def forward(self, x, context=None, need_grad=True):
        _check(x, self.shape, "Dequantize")
        if not is_device_array(x):
            xh = np.asarray(x)
            if xh.size and (xh.min() < 0 or xh.max() > self.levels - 1 or np.any(xh != np.floor(xh))):
                raise InputOutsideDomain(
                    f"Dequantize expects integer values in [0, {self.levels - 1}] ({self.levels} levels); "
                    f"got values in [{xh.min()}, {xh.max()}]" + ("" if np.all(xh == np.floor(xh)) else ", not integers")
                )
        ops = backend_of(x)
        if self.noise == "uniform":
            u = self._rng.random(x.shape).astype(x.dtype)
        else:
            u = np.full(x.shape, 0.5, dtype=x.dtype)
        y = ops.copy(x)
        ops.iadd(y, ops.asarray(u))
        ops.scale_inplace(ops.reshape(y, (y.size,)), 1.0 / self.levels)
        return y, self._logdet(x, 1), _DirCache(False)

    def inverse(self, z, context=None, need_grad=True):
        _check(z, self.shape, "Dequantize.inverse")
        ops = backend_of(z)
        zh = np.asarray(ops.to_host(z))
        x = np.clip(np.floor(zh * self.levels), 0, self.levels - 1).astype(zh.dtype)
        return ops.asarray(x), self._logdet(z, -1), _DirCache(True)

    def backward(self, dout, dlogabsdet, cache):
        """dy/dx = 1/K (and dx/dy = K, a.e., for the inverse); the log-det is constant."""
        ops = backend_of(dout)
        din = ops.copy(dout)
        ops.scale_inplace(ops.reshape(din, (din.size,)), float(self.levels) if cache.inverse else 1.0 / self.levels)
        return din

    def extra_repr(self):
        return f"{super().extra_repr()}, {self.levels} levels"

    def config(self):
        return {"type": "Dequantize", "shape": list(self.shape), "levels": self.levels}


class DequantizeColumns(Transform):
    """y_j = x_j + u_j, u_j ~ U[0, 1), on the integer-valued columns j of a table; log|det| = 0.

    For a column of integers (a binary code, a count) a continuous density would put a spike
    on every value; with the noise added, ``flow.log_prob(x)`` is, in expectation over u, a lower
    bound on the log-probability of the discrete values times the density of the continuous
    columns (unit bins: ``log P(x_j) >= E_u log p(x_j + u)``). Fresh noise on every forward call
    from the layer's own generator (``seed``); the inverse is ``floor`` on those columns. On host
    arrays the input is checked: those columns must hold integers.

    Arguments:
        dim: D, the number of columns.
        columns: the indices of the integer-valued columns.
    """

    def __init__(self, dim, columns, seed=None):
        self.dim = int(dim)
        cols = sorted({int(c) for c in columns})
        if not cols or cols[0] < 0 or cols[-1] >= self.dim:
            raise ConfigError(f"discrete columns must be a non-empty list of indices in [0, {self.dim - 1}], "
                              f"got {list(columns)}")
        self.columns = np.array(cols, dtype=np.int64)
        self._rng = np.random.default_rng(seed)

    def forward(self, x, context=None, need_grad=True):
        _check(x, (self.dim,), "DequantizeColumns")
        ops = backend_of(x)
        if not is_device_array(x):
            sub = np.asarray(x)[:, self.columns]
            bad = np.flatnonzero(np.any(sub != np.floor(sub), axis=0))
            if bad.size:
                raise InputOutsideDomain(f"column {int(self.columns[bad[0]])} was integer-valued in training "
                                         "(dequantised) but holds non-integers here")
        u = np.zeros(x.shape, dtype=x.dtype)
        u[:, self.columns] = self._rng.random((x.shape[0], self.columns.size))
        y = ops.copy(x)
        ops.iadd(y, ops.asarray(u))
        return y, ops.zeros((x.shape[0],), x.dtype), _DirCache(False)

    def inverse(self, z, context=None, need_grad=True):
        _check(z, (self.dim,), "DequantizeColumns.inverse")
        ops = backend_of(z)
        x = np.array(ops.to_host(z))
        x[:, self.columns] = np.floor(x[:, self.columns])
        return ops.asarray(x), ops.zeros((z.shape[0],), z.dtype), _DirCache(True)

    def backward(self, dout, dlogabsdet, cache):
        """dy/dx = I (the noise is added; a.e. for the inverse's floor, whose derivative is 0 there:
        dx = dz is the straight-through convention, as for ``Dequantize``)."""
        return backend_of(dout).copy(dout)

    def extra_repr(self):
        return f"{super().extra_repr()}, integer columns {self.columns.tolist()}"

    def config(self):
        return {"type": "DequantizeColumns", "dim": self.dim, "columns": self.columns.tolist()}


class LogitCache(NamedTuple):
    inverse: bool
    y: object  # data-side values (N, D): the forward input or the inverse output


class Logit(Transform):
    """z = logit(a + (1 - 2a) y) for y in [0, 1]; log|det| = sum log((1 - 2a) / (u (1 - u))), u = a + (1-2a) y.

    RealNVP's preprocessing: maps the unit cube to the real line, the small ``alpha`` keeping
    the ends finite.

    References:
        Dinh et al. Real NVP (2017), section 4.1.
    """

    def __init__(self, shape, alpha=0.05):
        self.shape = _event(shape)
        self.alpha = float(alpha)
        if not 0 < self.alpha < 0.5:
            raise ConfigError(f"alpha must be in (0, 0.5), got {alpha}")
        self.dim = int(np.prod(self.shape))

    def _call(self, x, need_grad, inverse):
        _check(x, self.shape, "Logit.inverse" if inverse else "Logit")
        if not inverse and not is_device_array(x):
            xh = np.asarray(x)
            if xh.size and (xh.min() < 0 or xh.max() > 1):
                raise InputOutsideDomain(f"Logit expects values in [0, 1], got [{xh.min()}, {xh.max()}]")
        ops = backend_of(x)
        n = x.shape[0]
        rows = ops.reshape(x, (n, self.dim))
        out = ops.empty((n, self.dim), x.dtype)
        ld = ops.empty((n,), x.dtype)
        ops.logit_map(rows, x.dtype.type(self.alpha), -1 if inverse else 1, out, ld)
        cache = LogitCache(inverse, out if inverse else rows) if need_grad else None
        return ops.reshape(out, x.shape), ld, cache

    def forward(self, x, context=None, need_grad=True):
        return self._call(x, need_grad, inverse=False)

    def inverse(self, z, context=None, need_grad=True):
        return self._call(z, need_grad, inverse=True)

    def backward(self, dout, dlogabsdet, cache):
        """With g = dL/d(out), c = dL/dlog|det| and u = a + (1 - 2a) y:

        forward z = logit(u): dL/dy = g (1 - 2a) / (u (1 - u)) + c (1 - 2a) (2u - 1) / (u (1 - u));
        inverse y = (sigmoid(z) - a) / (1 - 2a): dL/dz = g u (1 - u) / (1 - 2a) + c (1 - 2u).
        """
        self._require_cache(cache, "Logit")
        ops = backend_of(dout)
        n = dout.shape[0]
        din = ops.empty((n, self.dim), dout.dtype)
        ops.logit_map_bwd(ops.reshape(dout, (n, self.dim)), dlogabsdet, cache.y, dout.dtype.type(self.alpha),
                          -1 if cache.inverse else 1, din)
        return ops.reshape(din, dout.shape)

    def config(self):
        return {"type": "Logit", "shape": list(self.shape), "alpha": self.alpha}
