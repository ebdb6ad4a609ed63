"""A learnable full affine map of vectors with an LU-parameterised matrix: the best Gaussian as a layer.

``AffineLU`` is the first layer of nfcore's tabular flows: initialised with ``whitening(x)``
it maps the training data to zero mean and identity covariance, so a flow whose other layers
start at the identity on a standard normal base scores exactly the maximum-likelihood
full-covariance Gaussian before any training step.
"""

from typing import NamedTuple

import numpy as np
import scipy.linalg

from ..core.module import Buffer, Parameter
from ..errors import ConfigError
from ..kernels import backend_of
from .invconv import InvConv1x1LU, InvConvCache, _InvConv

__all__ = ["AffineLU", "whitening"]


class AffineCache(NamedTuple):
    inverse: bool
    product: InvConvCache  # the cache of the product with W (forward) or W^-1 (inverse)


def whitening(x, ridge=1e-6):
    """(mean (D,), C (D, D) lower-triangular) with C C^T the covariance of ``x`` (N, D).

    The covariance is the maximum-likelihood one (divided by N) plus ``ridge`` times its mean
    diagonal, so that constant or collinear columns still give a finite, invertible factor.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).multivariate_normal([1, 2], [[4, 1], [1, 1]], 20_000)
        >>> mean, chol = whitening(x)
        >>> np.round(chol @ chol.T, 1)
        array([[4., 1.],
               [1., 1.]])
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ConfigError(f"whitening needs (N, D) data with N >= 2, got shape {x.shape}")
    mean = x.mean(axis=0)
    cov = np.atleast_2d(np.cov(x, rowvar=False, bias=True))
    cov = cov + (ridge * max(float(np.mean(np.diag(cov))), 1e-300)) * np.eye(cov.shape[0])
    return mean, np.linalg.cholesky(cov)


class AffineLU(_InvConv):
    """z = (x - b) W, W = L (U + diag(e^s)); log|det| = sum_d s_d.

    ``b`` (the location), the unit-lower-triangular L, the strictly upper-triangular U and
    the log-diagonal s are learned (the entries of ``lower`` and ``upper`` outside their
    triangles are ignored and get no gradient). Every invertible matrix with positive leading
    minors is reachable; the determinant is the product of the diagonal, so the log-det costs
    D additions. ``diagonal=True`` keeps L and U at zero (a learned diagonal affine map).

    Arguments:
        dim: D.
        loc: initial b (D,), default zeros.
        scale_tril: initial lower-triangular C (D, D): then W = C^-T, so that data with mean
            ``loc`` and covariance C C^T leave with mean 0 and covariance I. Default: identity.
        diagonal: learn only b and s.

    Example:
        >>> import numpy as np
        >>> layer = AffineLU(2, loc=[1.0, 2.0], scale_tril=[[2.0, 0.0], [1.0, 1.0]])
        >>> z, ld, _ = layer.forward(np.array([[3.0, 4.0]]), need_grad=False)
        >>> z.round(6), ld.round(6)
        (array([[1., 1.]]), array([-0.693147]))

    References:
        Kingma, Dhariwal. Glow (2018), section 3.2 (the LU parameterisation).
    """

    def __init__(self, dim, loc=None, scale_tril=None, diagonal=False, dtype=np.float64):
        super().__init__((int(dim),))
        d = self.channels
        self.diagonal = bool(diagonal)
        loc = np.zeros(d) if loc is None else np.asarray(loc, dtype=np.float64)
        w = np.eye(d) if scale_tril is None else _whitening_matrix(scale_tril, d)
        if self.diagonal:
            w = np.diag(np.diag(w))
        if loc.shape != (d,):
            raise ConfigError(f"AffineLU: loc must have shape ({d},), got {loc.shape}")
        self.loc = Parameter(np.ascontiguousarray(loc, dtype=dtype))
        # W is upper triangular with a positive diagonal: P = I, L = I, U' = W
        self.perm = Buffer(np.arange(d, dtype=np.int64))
        self.sign = Buffer(np.ones(d, dtype=dtype))
        factors = (Buffer if self.diagonal else Parameter)
        self.lower = factors(np.zeros((d, d), dtype=dtype))
        self.upper = factors(np.ascontiguousarray(np.triu(w, 1), dtype=dtype))
        self.log_s = Parameter(np.log(np.diag(w)).astype(dtype))
        self._zeros = {}  # a zero log-scale for diag_affine, per (backend, dtype): not state, not walked

    _matrix = InvConv1x1LU._matrix
    _logdet_fill = InvConv1x1LU._logdet_fill
    weight = InvConv1x1LU.weight

    def _matrix_grad(self, dw, dlogabsdet, inverse):
        ops = backend_of(dw)
        if self.diagonal:  # the factors are fixed: their gradients go to scratch
            dlower = ops.zeros(self.lower.data.shape, dw.dtype)
            dupper = ops.zeros(self.upper.data.shape, dw.dtype)
        else:
            dlower, dupper = self.lower.grad, self.upper.grad
        ops.lu_compose_bwd(dw, self.lower.data, self.upper.data, self.log_s.data, self.sign.data, self.perm.data,
                           dlogabsdet, -1 if inverse else 1, dlower, dupper, self.log_s.grad)

    def _shift(self, x, sign):
        """x - b (sign -1) or x + b (sign +1), as a new array."""
        ops = backend_of(x)
        key = (ops.name, np.dtype(x.dtype))
        if key not in self._zeros:
            self._zeros[key] = ops.zeros((self.channels,), x.dtype)
        out = ops.empty(x.shape, x.dtype)
        ops.diag_affine(x, self.loc.data, self._zeros[key], sign, out)
        return out

    def forward(self, x, context=None, need_grad=True):
        self._rows(x, "AffineLU")
        z, ld, cache = self._call(self._shift(x, -1), need_grad, inverse=False)
        return z, ld, (AffineCache(False, cache) if need_grad else None)

    def inverse(self, z, context=None, need_grad=True):
        self._rows(z, "AffineLU.inverse")
        y, ld, cache = self._call(z, need_grad, inverse=True)
        return self._shift(y, 1), ld, (AffineCache(True, cache) if need_grad else None)

    def backward(self, dout, dlogabsdet, cache):
        """Forward z = (x - b) W: dx = dz W^T, db = -sum_n dx_n, dW = (x - b)^T dz; the log-det adds
        sum_n dlogabsdet_n to ds. Inverse x = z W^-1 + b: db = sum_n dx_n, dz = dx W^-T,
        dW = -W^-T z^T dx W^-T, and ds gets -sum_n dlogabsdet_n."""
        self._require_cache(cache, "AffineLU")
        ops = backend_of(dout)
        din = _InvConv.backward(self, dout, dlogabsdet, cache.product)
        if cache.inverse:
            ops.colsum_acc(dout, self.loc.grad)
        else:
            dloc = ops.zeros((self.channels,), dout.dtype)
            ops.colsum_acc(din, dloc)
            ops.axpy(-1.0, dloc, self.loc.grad)
        return din

    def config(self):
        return {"type": "AffineLU", "dim": self.channels, "diagonal": self.diagonal}


def _whitening_matrix(scale_tril, d):
    """W = C^-T for a lower-triangular C with a positive diagonal (checked)."""
    c = np.asarray(scale_tril, dtype=np.float64)
    if c.shape != (d, d):
        raise ConfigError(f"AffineLU: scale_tril must have shape ({d}, {d}), got {c.shape}")
    c = np.tril(c)
    if not np.all(np.diag(c) > 0) or not np.all(np.isfinite(c)):
        raise ConfigError("AffineLU: scale_tril must be lower triangular with a positive, finite diagonal")
    return scipy.linalg.solve_triangular(c, np.eye(d), lower=True).T
