"""Fixed permutations of the feature columns (log|det| = 0)."""

from typing import NamedTuple

import numpy as np

from ..core.module import Buffer
from ..core.transform import Transform
from ..errors import ConfigError, ShapeError
from ..kernels import backend_of

__all__ = ["Permutation", "make_permutation"]


def make_permutation(dim, kind="reverse", rng=None):
    """An index array: ``reverse`` or ``random`` (drawn from ``rng``)."""
    if kind == "reverse":
        return np.arange(dim)[::-1].copy()
    if kind == "random":
        return np.random.default_rng(rng).permutation(dim)
    raise ConfigError(f"unknown permutation {kind!r}; choose reverse or random")


class PermCache(NamedTuple):
    inverse: bool


class Permutation(Transform):
    """z[:, j] = x[:, perm[j]]; inverse x[:, perm[j]] = z[:, j]; log|det| = 0.

    Example:
        >>> import numpy as np
        >>> Permutation([1, 0]).forward(np.array([[1.0, 2.0]]))[0]
        array([[2., 1.]])
    """

    def __init__(self, perm):
        perm = np.asarray(perm, dtype=np.int64)
        if perm.ndim != 1 or not np.array_equal(np.sort(perm), np.arange(perm.size)):
            raise ConfigError("perm must be a permutation of 0..D-1")
        self.dim = perm.size
        self.perm = Buffer(perm)
        self._after_load()

    def _after_load(self):
        ops = backend_of(self.perm.data)
        perm = np.asarray(ops.to_host(self.perm.data))
        self._inv = ops.asarray(np.argsort(perm).astype(np.int64))

    def _apply(self, x, idx):
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ShapeError(f"Permutation expected input of shape (N, {self.dim}), got {tuple(x.shape)}")
        ops = backend_of(x)
        out = ops.empty(x.shape, x.dtype)
        ops.gather_cols(x, idx, out, 0)
        return out

    def forward(self, x, context=None, need_grad=True):
        out = self._apply(x, self.perm.data)
        return out, backend_of(x).zeros((x.shape[0],), x.dtype), (PermCache(False) if need_grad else None)

    def inverse(self, z, context=None, need_grad=True):
        out = self._apply(z, self._inv)
        return out, backend_of(z).zeros((z.shape[0],), z.dtype), (PermCache(True) if need_grad else None)

    def backward(self, dout, dlogabsdet, cache):
        """z = x[:, perm]: dL/dx = dL/dz[:, perm^-1] (the transpose of a permutation is its inverse); log|det| = 0."""
        self._require_cache(cache, "Permutation")
        return self._apply(dout, self.perm.data if cache.inverse else self._inv)

    def config(self):
        return {"type": "Permutation", "dim": self.dim}
