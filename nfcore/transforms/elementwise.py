"""Element-wise (diagonal) transforms: NICE's scaling layer and fixed standardisation."""

from typing import NamedTuple

import numpy as np

from ..core.module import Buffer, Parameter
from ..core.transform import Transform
from ..errors import ConfigError, ShapeError
from ..kernels import backend_of

__all__ = ["Scaling", "Standardize"]


class DiagCache(NamedTuple):
    inverse: bool
    out: object  # the call's output (diag_affine's backward reads it)


def _check(x, dim, name):
    if x.ndim != 2 or x.shape[1] != dim:
        raise ShapeError(f"{name} expected input of shape (N, {dim}), got {tuple(x.shape)}")


def _diag_call(x, loc, logscale, inverse, need_grad):
    ops = backend_of(x)
    out = ops.empty(x.shape, x.dtype)
    ops.diag_affine(x, loc, logscale, -1 if inverse else 1, out)
    # log|det| = +-sum(logscale), the same for every sample (computed where the data live)
    ld = ops.empty((x.shape[0],), x.dtype)
    ops.fill_sum(ld, logscale, -1.0 if inverse else 1.0)
    return out, ld, (DiagCache(inverse, out) if need_grad else None)


class Scaling(Transform):
    """NICE's diagonal scaling: z = x * exp(s), log|det| = sum_d s_d (s learned, init 0).

    References:
        Dinh, Krueger, Bengio. NICE (2014), section 3.3.
    """

    def __init__(self, dim, dtype=np.float64):
        self.dim = int(dim)
        self.log_scale = Parameter(np.zeros(self.dim, dtype=dtype))
        self.loc = Buffer(np.zeros(self.dim, dtype=dtype))

    def forward(self, x, context=None, need_grad=True):
        _check(x, self.dim, "Scaling")
        return _diag_call(x, self.loc.data, self.log_scale.data, False, need_grad)

    def inverse(self, z, context=None, need_grad=True):
        _check(z, self.dim, "Scaling")
        return _diag_call(z, self.loc.data, self.log_scale.data, True, need_grad)

    def backward(self, dout, dlogabsdet, cache):
        """dx = dz e^s; ds += sum_n dz x e^s + sum_n dlogabsdet (signs flip for the inverse)."""
        self._require_cache(cache, "Scaling")
        ops = backend_of(dout)
        din = ops.empty(dout.shape, dout.dtype)
        dloc = ops.zeros((self.dim,), dout.dtype)  # loc is fixed at 0: its gradient is discarded
        sign = -1 if cache.inverse else 1
        ops.diag_affine_bwd(dout, dlogabsdet, cache.out, self.loc.data, self.log_scale.data, sign, 1, din, dloc,
                            self.log_scale.grad)
        return din

    def config(self):
        return {"type": "Scaling", "dim": self.dim}


class Standardize(Transform):
    """Fixed standardisation z = (x - mean) / std, log|det| = -sum log std (no parameters).

    Put first in a flow trained on raw data: the flow's density is then the density of the
    raw data, the change of variables counted.
    """

    def __init__(self, mean, std, dtype=np.float64):
        mean = np.asarray(mean, dtype=np.float64).ravel()
        std = np.asarray(std, dtype=np.float64).ravel()
        if mean.shape != std.shape or not np.all(np.isfinite(mean)) or not np.all(std > 0):
            raise ConfigError("Standardize needs finite mean and std > 0 of the same length")
        self.dim = mean.size
        self.loc = Buffer((-mean / std).astype(dtype))
        self.log_scale = Buffer((-np.log(std)).astype(dtype))

    def forward(self, x, context=None, need_grad=True):
        _check(x, self.dim, "Standardize")
        return _diag_call(x, self.loc.data, self.log_scale.data, False, need_grad)

    def inverse(self, z, context=None, need_grad=True):
        _check(z, self.dim, "Standardize")
        return _diag_call(z, self.loc.data, self.log_scale.data, True, need_grad)

    def backward(self, dout, dlogabsdet, cache):
        """z = (x - mean) / std: dL/dx = dL/dz / std (inverse: dL/dz = dL/dx * std); the log-det is a
        constant (no gradient) and mean, std are fixed (no parameter gradient)."""
        self._require_cache(cache, "Standardize")
        ops = backend_of(dout)
        din = ops.empty(dout.shape, dout.dtype)
        scratch_loc = ops.zeros((self.dim,), dout.dtype)
        scratch_ls = ops.zeros((self.dim,), dout.dtype)
        sign = -1 if cache.inverse else 1
        ops.diag_affine_bwd(dout, dlogabsdet, cache.out, self.loc.data, self.log_scale.data, sign, 1, din,
                            scratch_loc, scratch_ls)
        return din

    def config(self):
        return {"type": "Standardize", "dim": self.dim}
