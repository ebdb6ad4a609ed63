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
            if self._shard is not None:
                mean, var = self._whole_batch_moments(x.shape[0], mean, var)
            if need_grad and (self._shard is None or self._shard.index == 0):
                # a training step moves the running averages (once: on one worker's shard)
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

    def _whole_batch_moments(self, rows, mean, var):
        """The whole batch's mean and (biased) variance from every shard's (``nfcore.parallel``):
        with n_w rows, mean m_w and variance v_w per shard, N = sum n_w,
            m = sum_w n_w m_w / N,  v = sum_w n_w (v_w + (m_w - m)^2) / N,
        summed in shard order (every shard computes the same numbers)."""
        parts = self._shard.gather((rows, np.asarray(mean, dtype=np.float64), np.asarray(var, dtype=np.float64)))
        total = sum(n for n, _, _ in parts)
        m = sum(n * mw for n, mw, _ in parts) / total
        v = sum(n * (vw + (mw - m) ** 2) for n, mw, vw in parts) / total
        return m.astype(mean.dtype), v.astype(var.dtype)

    def _shard_backward(self, dout, dlogabsdet, cache):
        """``backward`` with batch statistics on one shard of a batch (see ``backward``): the
        column sums A, B and C of the whole batch are gathered from every shard, the parameter
        gradients take this shard's part (the workers' buffers add up to the whole)."""
        e = np.exp(self.log_gamma.data.astype(np.float64))
        s = np.sqrt(cache.var.astype(np.float64) + self.eps)
        xh = (cache.y - cache.mean) / s
        g = dout.astype(np.float64)
        a, b, c = g.sum(axis=0), (g * xh).sum(axis=0), float(np.sum(dlogabsdet, dtype=np.float64))
        parts = self._shard.gather((dout.shape[0], a, b, c))
        n = sum(p[0] for p in parts)
        a_all, b_all, c_all = (sum(p[k] for p in parts) for k in (1, 2, 3))
        self.beta.grad += a
        self.log_gamma.grad += e * b + c
        din = (e / s) * (g - a_all / n - xh * b_all / n) - c_all * xh / (n * s)
        return din.astype(dout.dtype)

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
        if cache.batch_stats and self._shard is not None:
            return self._shard_backward(dout, dlogabsdet, cache)
        ops = backend_of(dout)
        din = ops.empty(dout.shape, dout.dtype)
        ops.batchnorm_bwd(dout, dlogabsdet, cache.y, cache.mean, cache.var, self.log_gamma.data,
                          dout.dtype.type(self.eps), int(cache.batch_stats), -1 if cache.inverse else 1, din,
                          self.log_gamma.grad, self.beta.grad)
        return din

    def config(self):
        return {"type": "BatchNorm", "dim": self.dim}
