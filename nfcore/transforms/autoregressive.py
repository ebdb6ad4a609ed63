"""Affine autoregressive flows on MADE: MAF and IAF.

Both use the map  x_i = u_i exp(alpha_i) + mu_i  with (mu, alpha) = MADE(.) autoregressive and
alpha = B tanh(raw / B) soft-clamped (the coupling layers' bound). They differ in what MADE
reads, and so in which direction is one pass:

* MAF (density estimation): MADE reads x. Density direction ``forward``
  u = (x - mu(x)) exp(-alpha(x)) is one pass; sampling ``inverse`` is sequential.
* IAF (fast sampling, variational inference): MADE reads z. Sampling direction ``inverse``
  x = z exp(alpha(z)) + mu(z) is one pass and differentiable (reverse-KL training); density
  ``forward`` is sequential.

The sequential directions here are the naive reference: D full MADE passes, the k-th fixing
variable k of the order. They return no gradient: asking ``backward`` for one raises
``GradientNotAvailable``.

The element-wise maps are the affine coupling kernels with every column transformed
(coupling's z = x e^ls + t is x = u e^alpha + mu; its inverse is MAF's density direction).

References:
    Papamakarios, Pavlakou, Murray. Masked Autoregressive Flow for Density Estimation (2017).
    Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling. Improved Variational Inference
    with Inverse Autoregressive Flow (2016).
"""

from typing import NamedTuple

import numpy as np

from ..core.transform import Transform
from ..errors import ConfigError, GradientNotAvailable, ShapeError
from ..kernels import backend_of
from ..nn.made import MADE

__all__ = ["MAF", "IAF"]


class ARCache(NamedTuple):
    expand: bool  # True: the map x = u e^alpha + mu ran; False: u = (x - mu) e^-alpha
    x: object  # what the kernels' VJPs read: the input u when expand, else the output u
    ls: object  # alpha (N, D)
    made: object  # MADE's cache


class _NoGradient(NamedTuple):
    reason: str


class _Autoregressive(Transform):
    def __init__(self, dim, hidden=(64, 64), order="natural", hidden_degrees="sequential", activation="relu",
                 context_dim=0, scale_bound=3.0, rng=None, dtype=np.float64):
        if not scale_bound > 0:
            raise ConfigError(f"scale_bound must be > 0, got {scale_bound}")
        self.dim = int(dim)
        self.context_dim = int(context_dim)
        self.scale_bound = float(scale_bound)
        self.made = MADE(dim, hidden, params_per_dim=2, order=order, hidden_degrees=hidden_degrees,
                         activation=activation, context_dim=context_dim, zero_last=True, rng=rng, dtype=dtype)
        self._after_load()

    def _after_load(self):
        self._all = backend_of(self.made.input_degrees.data).asarray(np.arange(self.dim, dtype=np.int64))

    def _check(self, x):
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ShapeError(f"{type(self).__name__} expected input of shape (N, {self.dim}), got {tuple(x.shape)}")

    def _map(self, y, h, expand):
        """expand: out = y e^alpha + mu (logdet +sum alpha); else out = (y - mu) e^-alpha (logdet -sum alpha)."""
        ops = backend_of(y)
        out = ops.empty(y.shape, y.dtype)
        logdet = ops.empty((y.shape[0],), y.dtype)
        ls = ops.empty(y.shape, y.dtype)
        kernel = ops.affine_coupling_fwd if expand else ops.affine_coupling_inv
        kernel(y, h, self._all, y.dtype.type(self.scale_bound), out, logdet, ls)
        return out, logdet, ls

    def _one_pass(self, y, context, need_grad, expand):
        """MADE reads the input y: one network evaluation."""
        self._check(y)
        h, mcache = self.made.forward(y, context, need_grad)
        out, logdet, ls = self._map(y, h, expand)
        cache = ARCache(expand, y if expand else out, ls, mcache) if need_grad else None
        return out, logdet, cache

    def _sequential(self, y, context, need_grad, expand):
        """MADE reads the output: D passes, pass k fixing the k-th variable of the order."""
        self._check(y)
        ops = backend_of(y)
        out = ops.zeros(y.shape, y.dtype)
        logdet = None
        for _ in range(self.dim):
            h, _ = self.made.forward(out, context, need_grad=False)
            out, logdet, _ = self._map(y, h, expand)
        cache = _NoGradient(f"{type(self).__name__}'s {'sampling' if expand else 'density'} direction is "
                            "sequential and has no gradient here") if need_grad else None
        return out, logdet, cache

    def backward(self, dout, dlogabsdet, cache):
        """VJP of the one-pass direction: the element-wise map's, then MADE's into the input."""
        self._require_cache(cache, type(self).__name__)
        if isinstance(cache, _NoGradient):
            raise GradientNotAvailable(cache.reason)
        ops = backend_of(dout)
        din = ops.empty(dout.shape, dout.dtype)
        dh = ops.empty((dout.shape[0], 2 * self.dim), dout.dtype)
        kernel = ops.affine_coupling_fwd_bwd if cache.expand else ops.affine_coupling_inv_bwd
        kernel(dout, dlogabsdet, cache.x, cache.ls, self._all, dout.dtype.type(self.scale_bound), din, dh)
        ops.iadd(din, self.made.backward(dh, cache.made))
        return din

    def order(self):
        return self.made.order()

    def config(self):
        return {"type": type(self).__name__, "dim": self.dim, "context_dim": self.context_dim}


class MAF(_Autoregressive):
    """u = (x - mu(x)) exp(-alpha(x)), (mu, alpha) autoregressive in x (one pass); log|det| = -sum alpha.

    Sampling (``inverse``) is sequential and not differentiable.

    Arguments:
        dim: D (>= 2).
        hidden: MADE hidden widths.
        order: ``natural``, ``reversed``, ``random`` or a permutation (builders alternate
            natural and reversed between stacked layers).
        hidden_degrees: ``sequential`` or ``random``.
        activation: MADE hidden activation.
        context_dim: width of an optional context every hidden unit sees.
        scale_bound: B of alpha = B tanh(raw / B).
    """

    def forward(self, x, context=None, need_grad=True):
        return self._one_pass(x, context, need_grad, expand=False)

    def inverse(self, z, context=None, need_grad=True):
        return self._sequential(z, context, need_grad, expand=True)


class IAF(_Autoregressive):
    """Sampling x = z exp(alpha(z)) + mu(z), (mu, alpha) autoregressive in z (one pass, differentiable).

    Density (``forward``) is sequential and not differentiable; fit an IAF by reverse KL
    (``nfcore.fit_reverse_kl``), whose gradient runs through the sampling pass.
    """

    def forward(self, x, context=None, need_grad=True):
        return self._sequential(x, context, need_grad, expand=False)

    def inverse(self, z, context=None, need_grad=True):
        return self._one_pass(z, context, need_grad, expand=True)
