"""Base distributions p(z) with log-density gradients written out.

A distribution has an event shape (``(D,)`` or ``(H, W, C)``); samples are ``(N, *shape)``.
``log_prob(z, need_grad=True)`` returns ``(lp, cache)`` with ``lp`` of shape ``(N,)``;
``backward(dlp, cache)`` returns ``dz`` and accumulates parameter gradients.
Reparameterised sampling ``rsample`` (with ``rsample_backward``) serves reverse-KL training.
"""

from typing import NamedTuple

import numpy as np

from ..errors import ShapeError
from ..kernels import backend_of, get_backend
from .module import Module, Parameter, shape_text

__all__ = ["Distribution", "StandardNormal", "DiagNormal"]


def _flat(z):
    return backend_of(z).reshape(z, (z.shape[0], -1))


class Distribution(Module):
    """log p(z), z of shape (N, *shape): the base class of base distributions."""

    def __init__(self, shape):
        if isinstance(shape, int):
            shape = (shape,)
        self.shape = tuple(int(s) for s in shape)
        self.size = int(np.prod(self.shape))

    def _check(self, z):
        if tuple(z.shape[1:]) != self.shape:
            raise ShapeError(f"expected z of shape (N, {', '.join(map(str, self.shape))}), got {tuple(z.shape)}")

    def log_prob(self, z, need_grad=False):
        raise NotImplementedError

    def backward(self, dlp, cache):
        """dz (N, *shape) of the ``log_prob`` call that made ``cache``; parameter gradients accumulate.

        With dlp = dL/dlog p (N,): dz_n = dlp_n d log p(z_n) / dz_n and
        theta.grad += sum_n dlp_n d log p(z_n) / d theta.
        """
        raise NotImplementedError

    def rsample(self, n, rng, dtype=np.float64, device="cpu", temperature=1.0):
        """(z, cache): z = g(T eps) with eps ~ N(0, I), differentiable in the parameters.

        The temperature T scales the noise: T < 1 draws from a sharper distribution (Glow's
        sampling temperature); T = 1 samples the distribution itself.
        """
        raise NotImplementedError

    def rsample_backward(self, dz, cache):
        """Accumulate parameter gradients of a reparameterised sample; nothing returned."""

    def sample(self, n, rng, dtype=np.float64, device="cpu", temperature=1.0):
        return self.rsample(n, rng, dtype, device, temperature=temperature)[0]

    def config(self):
        return {"type": type(self).__name__, "shape": list(self.shape)}

    def extra_repr(self):
        return shape_text(self.shape)


class _NormalCache(NamedTuple):
    z: object


class StandardNormal(Distribution):
    """p(z) = N(z; 0, I): log p = -|z|^2 / 2 - D/2 log(2 pi).

    Example:
        >>> import numpy as np
        >>> StandardNormal(2).log_prob(np.zeros((1, 2)))[0].round(4)
        array([-1.8379])
    """

    def log_prob(self, z, need_grad=False):
        self._check(z)
        ops = backend_of(z)
        zf = _flat(z)
        out = ops.empty((z.shape[0],), z.dtype)
        ops.normal_logprob(zf, out)
        return out, (_NormalCache(z) if need_grad else None)

    def backward(self, dlp, cache):
        """d log p / dz = -z."""
        z = cache.z
        ops = backend_of(z)
        dz = ops.empty(z.shape, z.dtype)
        ops.normal_logprob_bwd(_flat(z), dlp, _flat(dz))
        return dz

    def rsample(self, n, rng, dtype=np.float64, device="cpu", temperature=1.0):
        eps = np.asarray(float(temperature) * rng.standard_normal((n, *self.shape)), dtype=dtype)
        return get_backend(device).asarray(eps), None


class _DiagCache(NamedTuple):
    z: object


class _DiagRCache(NamedTuple):
    eps: object


class DiagNormal(Distribution):
    """p(z) = N(z; mu, diag(exp(2 log_sigma))), mu and log_sigma learned (one per dimension).

    Starts as the standard normal (mu = 0, log_sigma = 0).
    """

    def __init__(self, shape, dtype=np.float64):
        super().__init__(shape)
        self.loc = Parameter(np.zeros(self.size, dtype=dtype))
        self.log_scale = Parameter(np.zeros(self.size, dtype=dtype))

    def log_prob(self, z, need_grad=False):
        self._check(z)
        ops = backend_of(z)
        out = ops.empty((z.shape[0],), z.dtype)
        ops.diag_normal_logprob(_flat(z), self.loc.data, self.log_scale.data, out)
        return out, (_DiagCache(z) if need_grad else None)

    def backward(self, dlp, cache):
        """With u = (z - mu)/sigma: dz = -u/sigma; dmu = u/sigma; dlog_sigma = u^2 - 1 (times dlp)."""
        z = cache.z
        ops = backend_of(z)
        dz = ops.empty(z.shape, z.dtype)
        ops.diag_normal_logprob_bwd(
            _flat(z), self.loc.data, self.log_scale.data, dlp, _flat(dz), self.loc.grad, self.log_scale.grad
        )
        return dz

    def rsample(self, n, rng, dtype=None, device=None, temperature=1.0):
        """z = mu + sigma * T eps."""
        ops = backend_of(self.loc.data)
        dtype = self.loc.data.dtype
        eps = ops.asarray(np.asarray(float(temperature) * rng.standard_normal((n, self.size)), dtype=dtype))
        z = ops.empty((n, self.size), dtype)
        ops.diag_affine(eps, self.loc.data, self.log_scale.data, 1, z)
        return ops.reshape(z, (n, *self.shape)), _DiagRCache(eps)

    def rsample_backward(self, dz, cache):
        """dmu += sum dz; dlog_sigma += sum dz * sigma * eps."""
        ops = backend_of(dz)
        dzf = _flat(dz)
        n = dzf.shape[0]
        z = ops.empty((n, self.size), dzf.dtype)
        ops.diag_affine(cache.eps, self.loc.data, self.log_scale.data, 1, z)
        deps = ops.empty((n, self.size), dzf.dtype)
        zero = ops.zeros((n,), dzf.dtype)
        ops.diag_affine_bwd(dzf, zero, z, self.loc.data, self.log_scale.data, 1, 1, deps, self.loc.grad,
                            self.log_scale.grad)

