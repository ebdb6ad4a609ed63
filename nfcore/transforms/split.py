"""Multi-scale factor-out with Glow's learned conditional prior on the factored half."""

from typing import NamedTuple

import numpy as np

from ..core.module import shape_text
from ..core.transform import Transform
from ..errors import ShapeError
from ..kernels import backend_of
from ._shapes import check_image, image_shape
from .image_coupling import ImageAffineCoupling

__all__ = ["Split"]


class SplitCache(NamedTuple):
    inverse: bool
    prior: object  # the conditional prior's cache
    rest: object  # the rest of the flow's cache


class Split(Transform):
    """z = [(x_out - mu(x_keep)) / sigma(x_keep), rest(x_keep)]; log|det| = -sum log sigma + log|det rest|.

    Factor out half the channels: x = [x_keep, x_out] -> z = [eps, rest(x_keep)] (flat). The
    factored half gets a learned conditional Gaussian prior
    ``p(x_out | x_keep) = N(mu(x_keep), sigma(x_keep)^2)`` whose mean and log-scale come from a
    zero-initialised 3x3 convolution of the kept half (Glow's split prior). It is written as
    the bijection ``eps = (x_out - mu) / sigma`` (an affine coupling whose conditioner is that
    convolution), so that ``log N(x_out; mu, sigma) = log N(eps; 0, I) - sum log sigma``: eps goes
    to the flow's standard-normal base, ``-sum log sigma`` is this layer's log-det, and the
    flow stays one invertible chain (exact round trips, exact Jacobians). Sampling at a
    temperature T scales eps, i.e. sigma, by T, as Glow does.

    The kept half runs through ``rest`` (the next scale, ending in ``Flatten``); the output is
    the concatenation ``[eps.reshape(N, -1), rest(x_keep)]`` of length H W C.

    Arguments:
        shape: the input (H, W, C), C even.
        rest: the transform of the kept half (N, H, W, C/2) -> (N, H W C / 2).

    References:
        Dinh et al. Real NVP (2017), 3.6; Kingma, Dhariwal. Glow (2018), appendix.
    """

    def __init__(self, shape, rest, rng=None, dtype=np.float64):
        self.shape = image_shape(shape)
        h, w, c = self.shape
        if c % 2:
            raise ShapeError(f"Split needs an even number of channels, got {c}")
        self.prior = ImageAffineCoupling(self.shape, "channel", 0, hidden=(), rng=rng, dtype=dtype)
        self.rest = rest
        self.dim = h * w * c
        self.n_out = h * w * (c - c // 2)
        self._after_load()

    def _after_load(self):
        ops = backend_of(self.prior.mask.data)
        self.idx_tail = ops.asarray(np.arange(self.dim - self.n_out, dtype=np.int64))  # columns of rest's output
        self.idx_ztail = ops.asarray(np.arange(self.n_out, self.dim, dtype=np.int64))  # where they sit in z

    @property
    def idx_keep(self):
        return self.prior.idx_a  # the conditioner's channels stay

    @property
    def idx_out(self):
        return self.prior.idx_b  # the transformed ones are factored out

    def forward(self, x, context=None, need_grad=True):
        check_image(x, self.shape, "Split")
        ops = backend_of(x)
        n = x.shape[0]
        y, ld, pc = self.prior.forward(x, context, need_grad)
        rows = ops.reshape(y, (n, self.dim))
        keep = ops.empty((n, self.dim - self.n_out), x.dtype)
        ops.gather_cols(rows, self.idx_keep, keep, 0)
        h, w, c = self.shape
        zr, ld_r, rc = self.rest.forward(ops.reshape(keep, (n, h, w, c // 2)), context, need_grad)
        z = ops.empty((n, self.dim), x.dtype)
        ops.gather_cols(rows, self.idx_out, z, 0)
        ops.gather_cols(zr, self.idx_tail, z, self.n_out)
        ops.iadd(ld, ld_r)
        return z, ld, (SplitCache(False, pc, rc) if need_grad else None)

    def inverse(self, z, context=None, need_grad=True):
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise ShapeError(f"Split.inverse expected (N, {self.dim}), got {tuple(z.shape)}")
        ops = backend_of(z)
        n = z.shape[0]
        tail = ops.empty((n, self.dim - self.n_out), z.dtype)
        ops.gather_cols(z, self.idx_ztail, tail, 0)
        keep, ld, rc = self.rest.inverse(tail, context, need_grad)
        rows = ops.zeros((n, self.dim), z.dtype)
        ops.scatter_add_cols(z, self.idx_out, rows)
        ops.scatter_add_cols(ops.reshape(keep, (n, self.dim - self.n_out)), self.idx_keep, rows)
        x, ld_p, pc = self.prior.inverse(ops.reshape(rows, (n, *self.shape)), context, need_grad)
        ops.iadd(ld, ld_p)
        return x, ld, (SplitCache(True, pc, rc) if need_grad else None)

    def backward(self, dout, dlogabsdet, cache):
        """The chain rule through z = [eps, rest(y_keep)], y = [y_keep, eps] = prior(x), c = dL/dlog|det|:

        forward: dL/dy_out = dL/deps, dL/dy_keep = rest.backward(dL/dz_rest, c),
            dL/dx = prior.backward(dL/dy, c);
        inverse (x = prior^-1([rest^-1(z_rest), eps])): dL/dy = prior.backward(dL/dx, c),
            dL/deps = dL/dy_out, dL/dz_rest = rest.backward(dL/dy_keep, c).
        Both log-dets get the same c (they add up).
        """
        self._require_cache(cache, "Split")
        ops = backend_of(dout)
        n = dout.shape[0]
        h, w, c = self.shape
        if not cache.inverse:
            dtail = ops.empty((n, self.dim - self.n_out), dout.dtype)
            ops.gather_cols(dout, self.idx_ztail, dtail, 0)
            dkeep = self.rest.backward(dtail, dlogabsdet, cache.rest)
            dy = ops.zeros((n, self.dim), dout.dtype)
            ops.scatter_add_cols(dout, self.idx_out, dy)
            ops.scatter_add_cols(ops.reshape(dkeep, (n, self.dim - self.n_out)), self.idx_keep, dy)
            return self.prior.backward(ops.reshape(dy, (n, h, w, c)), dlogabsdet, cache.prior)
        dy = self.prior.backward(dout, dlogabsdet, cache.prior)
        dy = ops.reshape(dy, (n, self.dim))
        dkeep = ops.empty((n, self.dim - self.n_out), dout.dtype)
        ops.gather_cols(dy, self.idx_keep, dkeep, 0)
        dtail = self.rest.backward(ops.reshape(dkeep, (n, h, w, c // 2)), dlogabsdet, cache.rest)
        dz = ops.empty((n, self.dim), dout.dtype)
        ops.gather_cols(dy, self.idx_out, dz, 0)
        ops.gather_cols(dtail, self.idx_tail, dz, self.n_out)
        return dz

    def extra_repr(self):
        return shape_text(self.shape, (self.dim,))

    def tree_children(self):
        return [("prior", self.prior), ("rest", self.rest)]

    def config(self):
        return {"type": "Split", "shape": list(self.shape), "rest": self.rest.config()}
