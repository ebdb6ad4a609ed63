"""Glow's invertible 1x1 convolution, plain and LU-parameterised.

On channels-last images a 1x1 convolution is one GEMM over the N H W pixel rows:
``z = x W`` with ``W`` of shape ``(C, C)``, and ``log|det| = H W log|det W|``. The small
C x C algebra (``det``, ``W^-1``) of the plain layer runs on the host with LAPACK (a C x C
round trip on the GPU); the LU layer's forward pass and its backward stay on the device.
"""

from typing import NamedTuple

import numpy as np
import scipy.linalg

from ..core.module import Buffer, Parameter
from ..core.transform import Transform
from ..errors import InputOutsideDomain
from ..kernels import backend_of
from ._shapes import channel_rows, image_shape

__all__ = ["InvConv1x1", "InvConv1x1LU"]


def random_rotation(c, rng):
    """A random orthogonal C x C matrix with det +1 (Glow's initialisation)."""
    q, r = np.linalg.qr(np.random.default_rng(rng).standard_normal((c, c)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


class InvConvCache(NamedTuple):
    inverse: bool
    x: object  # the call's input as (N H W, C) rows
    w: object  # the matrix that multiplied it: W (forward) or W^-1 (inverse)


class _InvConv(Transform):
    """z = x W row by row (per pixel on images), W (C, C) from the subclass; log|det| = H W log|det W|.

    Shared plumbing: shapes, the GEMM, the VJP through the matrix that was used.
    """

    def __init__(self, shape):
        shape = (int(shape),) if np.isscalar(shape) else tuple(int(s) for s in shape)
        self.shape = image_shape(shape) if len(shape) == 3 else shape
        self.channels = self.shape[-1]
        self.pixels = int(np.prod(self.shape[:-1]))

    def _rows(self, x, name):
        return channel_rows(x, self.shape, name)

    def _matrix(self):
        """W (C, C) on the parameters' device."""
        raise NotImplementedError

    def _logdet_fill(self, ld, sign):
        raise NotImplementedError

    def _call(self, x, need_grad, inverse):
        rows = self._rows(x, type(self).__name__ + (".inverse" if inverse else ""))
        ops = backend_of(rows)
        w = self._matrix()
        if inverse:
            w = ops.asarray(np.linalg.inv(np.asarray(ops.to_host(w), dtype=np.float64)), dtype=rows.dtype)
        out = ops.empty(rows.shape, rows.dtype)
        ops.matmul(rows, w, out)
        ld = ops.empty((x.shape[0],), x.dtype)
        self._logdet_fill(ld, -1.0 if inverse else 1.0)
        return ops.reshape(out, x.shape), ld, (InvConvCache(inverse, rows, w) if need_grad else None)

    def forward(self, x, context=None, need_grad=True):
        return self._call(x, need_grad, inverse=False)

    def inverse(self, z, context=None, need_grad=True):
        return self._call(z, need_grad, inverse=True)

    def _matrix_grad(self, dw, dlogabsdet, inverse):
        """Accumulate parameter gradients given dL/dW (C, C) of the product and the log-det cotangent."""
        raise NotImplementedError

    def backward(self, dout, dlogabsdet, cache):
        """out = x M: dx = dout M^T and dM = x^T dout, with M = W (forward) or W^-1 (inverse);
        for the inverse, dW = -W^-T dM W^-T. The log-det's share goes to the parameters."""
        self._require_cache(cache, type(self).__name__)
        ops = backend_of(dout)
        drows = ops.reshape(dout, cache.x.shape)
        din = ops.empty(cache.x.shape, dout.dtype)
        ops.matmul_nt(drows, cache.w, din)
        dm = ops.zeros((self.channels, self.channels), dout.dtype)
        ops.matmul_tn_acc(cache.x, drows, dm)
        if cache.inverse:
            winv_t = np.asarray(ops.to_host(cache.w), dtype=np.float64).T
            dm = ops.asarray(-winv_t @ np.asarray(ops.to_host(dm), dtype=np.float64) @ winv_t, dtype=dout.dtype)
        self._matrix_grad(dm, dlogabsdet, cache.inverse)
        return ops.reshape(din, dout.shape)


class InvConv1x1(_InvConv):
    """z = x W per pixel (W a learned C x C matrix); log|det| = H W log|det W|.

    ``W`` starts as a random rotation. Its gradient includes the log-det term
    ``H W sum_n dlogabsdet_n W^-T``.

    Arguments:
        shape: (H, W, C) for images, or (D,) for vectors.
        rng: seed or Generator of the initial rotation.

    References:
        Kingma, Dhariwal. Glow (2018), section 3.2.
    """

    def __init__(self, shape, rng=None, dtype=np.float64):
        super().__init__(shape)
        self.weight = Parameter(np.ascontiguousarray(random_rotation(self.channels, rng), dtype=dtype))

    def _matrix(self):
        return self.weight.data

    def _slogdet(self):
        w = np.asarray(backend_of(self.weight.data).to_host(self.weight.data), dtype=np.float64)
        sign, logabs = np.linalg.slogdet(w)
        if sign == 0 or not np.isfinite(logabs):
            raise InputOutsideDomain("InvConv1x1: the weight matrix became singular")
        return w, logabs

    def _logdet_fill(self, ld, sign):
        _, logabs = self._slogdet()
        backend_of(ld).fill(ld, sign * self.pixels * logabs)

    def _matrix_grad(self, dw, dlogabsdet, inverse):
        ops = backend_of(dw)
        w, _ = self._slogdet()
        scale = (-1.0 if inverse else 1.0) * self.pixels * ops.total(dlogabsdet)
        ops.iadd(dw, ops.asarray(scale * np.linalg.inv(w).T, dtype=dw.dtype))
        ops.iadd(self.weight.grad, dw)

    def config(self):
        return {"type": "InvConv1x1", "shape": list(self.shape)}


class InvConv1x1LU(_InvConv):
    """z = x W, W = P L (U + diag(sign exp(log_s))); log|det| = H W sum log_s.

    P (a permutation) and ``sign`` are fixed buffers; L is unit lower triangular and U strictly
    upper triangular (the other entries of the ``lower`` and ``upper`` parameters are ignored
    and receive no gradient). Initialised from the LU decomposition of a random rotation.
    The log-det costs C additions instead of a C^3 determinant, and stays on the device.

    References:
        Kingma, Dhariwal. Glow (2018), section 3.2 (LU decomposition).
    """

    def __init__(self, shape, rng=None, dtype=np.float64):
        super().__init__(shape)
        p, lower, upper = scipy.linalg.lu(random_rotation(self.channels, rng))
        s = np.diag(upper).copy()
        self.perm = Buffer(np.argmax(p, axis=1).astype(np.int64))  # W[i] = (L U')[perm[i]]
        self.sign = Buffer(np.sign(s).astype(dtype))
        self.lower = Parameter(np.ascontiguousarray(np.tril(lower, -1), dtype=dtype))
        self.upper = Parameter(np.ascontiguousarray(np.triu(upper, 1), dtype=dtype))
        self.log_s = Parameter(np.log(np.abs(s)).astype(dtype))

    def _matrix(self):
        ops = backend_of(self.lower.data)
        w = ops.empty((self.channels, self.channels), self.lower.data.dtype)
        ops.lu_compose(self.lower.data, self.upper.data, self.log_s.data, self.sign.data, self.perm.data, w)
        return w

    def _logdet_fill(self, ld, sign):
        backend_of(ld).fill_sum(ld, self.log_s.data, sign * self.pixels)

    def _matrix_grad(self, dw, dlogabsdet, inverse):
        ops = backend_of(dw)
        ops.lu_compose_bwd(dw, self.lower.data, self.upper.data, self.log_s.data, self.sign.data, self.perm.data,
                           dlogabsdet, -self.pixels if inverse else self.pixels, self.lower.grad, self.upper.grad,
                           self.log_s.grad)

    def weight(self):
        """The composed W (C, C), as a host array."""
        return np.asarray(backend_of(self.lower.data).to_host(self._matrix()))

    def config(self):
        return {"type": "InvConv1x1LU", "shape": list(self.shape)}
