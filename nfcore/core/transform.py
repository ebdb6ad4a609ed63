"""The Transform contract, composition (Chain) and inversion (Inverse).

Every transform maps data ``x`` to latent ``z`` in ``forward`` (the density direction)
and back in ``inverse`` (the sampling direction)::

    z, logabsdet, cache = t.forward(x, context)     # logabsdet: (N,) log|det dz/dx|
    x, logabsdet, cache = t.inverse(z, context)     # logabsdet: (N,) log|det dx/dz|
    dx = t.backward(dz, dlogabsdet, cache)          # VJP of the call that made cache

``backward`` accumulates parameter gradients into ``Parameter.grad`` and returns the
input gradient. ``cache`` holds everything backward needs; ``need_grad=False`` returns
``cache=None`` and keeps nothing.
"""

from typing import NamedTuple

from ..errors import GradientNotAvailable
from ..kernels import backend_of
from .module import Module

__all__ = ["Transform", "Chain", "Inverse"]


class Transform(Module):
    """Base class: an invertible map with per-sample log|det| and a hand-written VJP."""

    def forward(self, x, context=None, need_grad=True):
        """(N, ...) data -> (z, logabsdet (N,), cache)."""
        raise NotImplementedError

    def inverse(self, z, context=None, need_grad=True):
        """(N, ...) latent -> (x, logabsdet (N,), cache)."""
        raise NotImplementedError

    def backward(self, dout, dlogabsdet, cache):
        """Vector-Jacobian product of the call that made ``cache``; returns d input."""
        raise NotImplementedError

    def config(self):
        """Plain-dict description (for ``info``); builders own reconstruction."""
        return {"type": type(self).__name__}

    @staticmethod
    def _require_cache(cache, what):
        if cache is None:
            raise GradientNotAvailable(f"{what}: backward needs the cache of a call made with need_grad=True")


class ChainCache(NamedTuple):
    inverse: bool
    caches: tuple


class Chain(Transform):
    """f = f_K o ... o f_1 in the forward direction; log-dets add up.

    Arguments:
        transforms: the layers, data side first.
    """

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __len__(self):
        return len(self.transforms)

    def __getitem__(self, i):
        return self.transforms[i]

    def _run(self, x, context, need_grad, inverse):
        ops = backend_of(x)
        total = ops.zeros((x.shape[0],), x.dtype)
        caches = []
        seq = reversed(self.transforms) if inverse else self.transforms
        for t in seq:
            x, ld, c = (t.inverse if inverse else t.forward)(x, context, need_grad)
            ops.iadd(total, ld)
            caches.append(c)
        cache = ChainCache(inverse, tuple(caches)) if need_grad else None
        return x, total, cache

    def forward(self, x, context=None, need_grad=True):
        return self._run(x, context, need_grad, inverse=False)

    def inverse(self, z, context=None, need_grad=True):
        return self._run(z, context, need_grad, inverse=True)

    def backward(self, dout, dlogabsdet, cache):
        self._require_cache(cache, "Chain")
        seq = list(reversed(self.transforms)) if cache.inverse else list(self.transforms)
        # backward visits the calls in the reverse of the order they ran
        for t, c in zip(reversed(seq), reversed(cache.caches)):
            dout = t.backward(dout, dlogabsdet, c)
        return dout

    def config(self):
        return {"type": "Chain", "transforms": [t.config() for t in self.transforms]}


class Inverse(Transform):
    """The inverse of a transform: forward and inverse swapped (caches keep their direction)."""

    def __init__(self, transform):
        self.transform = transform

    def forward(self, x, context=None, need_grad=True):
        return self.transform.inverse(x, context, need_grad)

    def inverse(self, z, context=None, need_grad=True):
        return self.transform.forward(z, context, need_grad)

    def backward(self, dout, dlogabsdet, cache):
        return self.transform.backward(dout, dlogabsdet, cache)

    def config(self):
        return {"type": "Inverse", "transform": self.transform.config()}
