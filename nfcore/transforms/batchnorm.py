"""Batch normalisation as a bijector (MAF's and RealNVP's): a per-dimension affine map whose
shift and scale come from batch statistics while training and from running averages
otherwise."""

from typing import NamedTuple

import numpy as np

from ..core.module import Buffer, Parameter
from ..core.transform import Transform
from ..errors import ConfigError, ShapeError
from ..kernels import backend_of

__all__ = ["BatchNorm"]


class BNCache(NamedTuple):
    inverse: bool
    y: object  # the data-side array: the forward input, or the inverse output
    mean: object
    var: object
    batch_stats: bool


class BatchNorm(Transform):
    """z = (x - m) / sqrt(v + eps) * exp(lg) + b;  log|det| = sum_d (lg_d - 0.5 log(v_d + eps)).

    In training mode (``flow.train()``) the forward direction uses the batch's mean and (biased)
    variance, and its backward carries the gradient through them (every output depends on
    every input of the batch); a forward call made for a gradient (``need_grad=True``) also
    moves the running averages by ``momentum``. In evaluation mode (``flow.eval()``, and always
    for the inverse, i.e. sampling) the running averages are used and the map is per-sample.

    Arguments:
        dim: D.
        momentum: weight of the newest batch in the running averages.
        eps: variance floor.

    References:
        Papamakarios, Pavlakou, Murray. Masked Autoregressive Flow for Density Estimation (2017),
        section 3.4; Dinh, Sohl-Dickstein, Bengio. Density estimation using Real NVP (2017).
    """

    #: normalises with the batch's statistics in training mode (a memory-saving chain refuses it)
    batch_statistics = True


    def __init__(self, dim, momentum=0.1, eps=1e-5, dtype=np.float64):
        if not 0 < momentum <= 1 or not eps > 0:
            raise ConfigError(f"BatchNorm needs 0 < momentum <= 1 and eps > 0, got {momentum}, {eps}")
        self.dim = int(dim)
        self.momentum = float(momentum)
        self.eps = float(eps)
        self.log_gamma = Parameter(np.zeros(self.dim, dtype=dtype))
        self.beta = Parameter(np.zeros(self.dim, dtype=dtype))
        self.running_mean = Buffer(np.zeros(self.dim, dtype=dtype))
        self.running_var = Buffer(np.ones(self.dim, dtype=dtype))

    def _check(self, x):
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ShapeError(f"BatchNorm expected input of shape (N, {self.dim}), got {tuple(x.shape)}")

    def _coeffs(self, mean, var, dtype):
        ops = backend_of(mean)
        ls = ops.empty((self.dim,), dtype)
        loc = ops.empty((self.dim,), dtype)
        ops.batchnorm_coeffs(mean, var, self.log_gamma.data, self.beta.data, dtype.type(self.eps), ls, loc)
        return ls, loc

    def forward(self, x, context=None, need_grad=True):
        self._check(x)
        ops = backend_of(x)
        batch_stats = self.training
        if batch_stats:
            if x.shape[0] < 2:
                raise ShapeError("BatchNorm in training mode needs batches of at least 2 samples (or call eval())")
            mean = ops.empty((self.dim,), x.dtype)
            var = ops.empty((self.dim,), x.dtype)
            ops.col_mean_var(x, mean, var)
            if need_grad:  # a training step: move the running averages
                ops.scale_inplace(self.running_mean.data, 1.0 - self.momentum)
                ops.axpy(self.momentum, mean, self.running_mean.data)
                ops.scale_inplace(self.running_var.data, 1.0 - self.momentum)
                ops.axpy(self.momentum, var, self.running_var.data)
        else:
            mean, var = self.running_mean.data, self.running_var.data
        ls, loc = self._coeffs(mean, var, x.dtype)
        z = ops.empty(x.shape, x.dtype)
        ops.diag_affine(x, loc, ls, 1, z)
        ld = ops.empty((x.shape[0],), x.dtype)
        ops.fill_sum(ld, ls, 1.0)
        cache = BNCache(False, x, mean, var, batch_stats) if need_grad else None
        return z, ld, cache

    def inverse(self, z, context=None, need_grad=True):
        """x = (z - b) exp(-lg) sqrt(v + eps) + m with the running averages."""
        self._check(z)
        ops = backend_of(z)
        mean, var = self.running_mean.data, self.running_var.data
        ls, loc = self._coeffs(mean, var, z.dtype)
        x = ops.empty(z.shape, z.dtype)
        ops.diag_affine(z, loc, ls, -1, x)
        ld = ops.empty((z.shape[0],), z.dtype)
        ops.fill_sum(ld, ls, -1.0)
        return x, ld, (BNCache(True, x, mean, var, False) if need_grad else None)

    def backward(self, dout, dlogabsdet, cache):
        """With g = dL/dz, c_n = dL/dlog|det|_n, C = sum_n c_n, xh = (x - m) / s, s = sqrt(v + eps):

        running averages (evaluation; the inverse): dL/dx = g e^lg / s;
        batch statistics (training), m and v the batch's (biased) moments, N rows:
            dL/dx_n = (e^lg / s) (g_n - mean_k g_k - xh_n mean_k(g_k xh_k)) - C xh_n / (N s),
        the last term from the log-det's -0.5 log(v + eps); and for the parameters
            dL/dlg = sum_n g_n xh_n e^lg + C,  dL/db = sum_n g_n.
        """
        self._require_cache(cache, "BatchNorm")
        ops = backend_of(dout)
        din = ops.empty(dout.shape, dout.dtype)
        ops.batchnorm_bwd(dout, dlogabsdet, cache.y, cache.mean, cache.var, self.log_gamma.data,
                          dout.dtype.type(self.eps), int(cache.batch_stats), -1 if cache.inverse else 1, din,
                          self.log_gamma.grad, self.beta.grad)
        return din

    def config(self):
        return {"type": "BatchNorm", "dim": self.dim}
