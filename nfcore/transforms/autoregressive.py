"""Affine autoregressive flows on MADE: MAF and IAF.

Both use the map  x_i = u_i exp(alpha_i) + mu_i  with (mu, alpha) = MADE(.) autoregressive and
alpha = B tanh(raw / B) soft-clamped (the coupling layers' bound). They differ in what MADE
reads, and so in which direction is one pass:

* MAF (density estimation): MADE reads x. Density direction ``forward``
  u = (x - mu(x)) exp(-alpha(x)) is one pass; sampling ``inverse`` is sequential.
* IAF (fast sampling, variational inference): MADE reads z. Sampling direction ``inverse``
  x = z exp(alpha(z)) + mu(z) is one pass and differentiable (reverse-KL training); density
  ``forward`` is sequential.

The sequential directions (MAF sampling, IAF density) compute every MADE unit exactly once,
the moment its inputs are final (``sequential="fast"``, the default): hidden units sorted by
degree, step k computes variable k of the order from the last layer's units of degree < k,
then the units of degree k of every layer from the (final) units below them: a Numba kernel
over tiles of rows on the CPU, one CUDA block per row on a GPU (``made_sequential``). The
FLOPs are those of one masked forward pass (about half of a dense one); the latency is D
steps. ``sequential="naive"`` runs D full MADE passes, the k-th fixing variable k: the
reference the fast pass is tested against. Neither returns a gradient: asking ``backward``
for one raises ``GradientNotAvailable``.

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
from ._fused import FusedCache, narrow, net_map, net_map_vjp

__all__ = ["MAF", "IAF", "sorted_made_weights", "made_sequential",
           "MODE_CONTRACT", "MODE_EXPAND", "MODE_MOG"]

#: output maps of the fast sequential kernel: u = (y - mu) e^-a, x = y e^a + mu, or a mixture draw
MODE_CONTRACT, MODE_EXPAND, MODE_MOG = 0, 1, 2


def sorted_made_weights(made, context_dim):
    """Host arrays for the fast sequential pass: the order, per-layer counts of units of degree
    <= m, masked weights and biases with inputs in order position and units sorted by degree,
    and the output weights (H_L, D, P) and biases (D, P) of each variable's P parameters."""
    ops = backend_of(made.input_degrees.data)
    d = made.dim
    order = made.order()
    degrees = made.effective_degrees()
    perms = [np.argsort(deg, kind="stable") for deg in degrees]
    counts = [np.searchsorted(deg[p], np.arange(d + 1), side="right") for deg, p in zip(degrees, perms)]
    host = [(np.asarray(ops.to_host(layer.weight.data)) * np.asarray(ops.to_host(layer.mask.data)),
             np.asarray(ops.to_host(layer.bias.data))) for layer in made.layers]
    w1 = host[0][0][np.concatenate([order, np.arange(d, d + context_dim)])][:, perms[0]]
    hidden_w = [w1] + [host[i][0][perms[i - 1]][:, perms[i]] for i in range(1, len(perms))]
    hidden_b = [host[i][1][perms[i]] for i in range(len(perms))]
    cols = np.stack([order + p * d for p in range(made.params_per_dim)], axis=1)  # (D, P)
    w_out = host[-1][0][perms[-1]][:, cols]  # (H_L, D, P)
    b_out = host[-1][1][cols]  # (D, P)
    return order, counts, hidden_w, hidden_b, w_out, b_out


def made_sequential(made, y, context, context_dim, bound, mode, unif=None, eps=None, ops=None):
    """(out, logdet) of the fast sequential pass of ``made``: one call of the ``ar_sequential`` op
    (``kernels.autoregressive``, the CUDA twin in its ``cuda`` module) of ``ops`` (default: y's
    backend), with the weights sorted by degree and padded into one array per kind."""
    ops = backend_of(y) if ops is None else ops
    dt = y.dtype
    n, d = y.shape
    order, counts, hidden_w, hidden_b, w_out, b_out = sorted_made_weights(made, context_dim)
    n_layers = len(hidden_w)
    hmax = max(w.shape[1] for w in hidden_w)
    kmax = max([d] + [w.shape[0] for w in hidden_w[1:]])
    w_all = np.zeros((n_layers, hmax, kmax), dtype=dt)
    b_all = np.zeros((n_layers, hmax), dtype=dt)
    for li, (w, b) in enumerate(zip(hidden_w, hidden_b)):
        wt = w[:d].T if li == 0 else w.T  # (units, inputs); the context's rows are applied below
        w_all[li, : wt.shape[0], : wt.shape[1]] = wt
        b_all[li, : b.shape[0]] = b
    ctx_part = ops.empty((0, 0), dt)
    if context_dim:  # the context's share of layer 1, the same at every step
        ctx_part = ops.empty((n, hidden_w[0].shape[1]), dt)
        ops.matmul(ops.asarray(context, dtype=dt), ops.asarray(np.ascontiguousarray(hidden_w[0][d:], dtype=dt)),
                   ctx_part)
    if unif is None:
        unif = eps = ops.empty((0, 0), dt)
    layers = made.layers[:-1]
    codes = np.array([layer.act_code for layer in layers], dtype=np.int64)
    alphas = np.array([layer.alpha for layer in layers], dtype=dt)
    wo = np.ascontiguousarray(np.transpose(w_out, (1, 2, 0)), dtype=dt)  # (D, P, H_L)
    out = ops.empty((n, d), dt)
    logdet = ops.empty((n,), dt)
    weights = [ops.asarray(a) for a in (order.astype(np.int64), w_all, b_all, np.stack(counts).astype(np.int64), codes,
                                       alphas)]
    ops.ar_sequential(y, *weights, ctx_part, ops.asarray(wo), ops.asarray(np.ascontiguousarray(b_out, dtype=dt)),
                      dt.type(bound), mode, unif, eps, out, logdet)
    return out, logdet


class ARCache(NamedTuple):
    expand: bool  # True: the map x = u e^alpha + mu ran; False: u = (x - mu) e^-alpha
    x: object  # what the kernels' VJPs read: the input u when expand, else the output u
    ls: object  # alpha (N, D)
    made: object  # MADE's cache, or the fused kernels' (``_fused.FusedCache``)


class _NoGradient(NamedTuple):
    reason: str


class _Autoregressive(Transform):
    """u = (x - mu) e^-alpha, log|det| = -sum alpha; inverse x = u e^alpha + mu; (mu, alpha) = MADE(.).

    Shared by MAF (MADE reads x: the density is one pass) and IAF (MADE reads u: sampling is
    one pass); the other direction is computed variable by variable.
    """

    #: the one-pass direction in the fused kernels (``_fused``): True wherever they apply (since the
    #: weight gradients run in row blocks they beat the op-by-op path's block-sparse products on one
    #: worker too: MAF D=8 1.13-1.35x at 256-4096 rows), "auto" on a worker's shard only, False
    #: never (op by op, the reference). Measured: benchmarks/RESULTS.md, "Session 11"
    fused = True

    def __init__(self, dim, hidden=(64, 64), order="natural", hidden_degrees="sequential", activation="relu",
                 context_dim=0, scale_bound=3.0, sequential="fast", residual=False, rng=None, dtype=np.float64):
        if not scale_bound > 0:
            raise ConfigError(f"scale_bound must be > 0, got {scale_bound}")
        if sequential not in ("fast", "naive"):
            raise ConfigError(f"sequential must be fast or naive, got {sequential!r}")
        self.sequential = sequential
        self.dim = int(dim)
        self.context_dim = int(context_dim)
        self.scale_bound = float(scale_bound)
        self.made = MADE(dim, hidden, params_per_dim=2, order=order, hidden_degrees=hidden_degrees,
                         activation=activation, context_dim=context_dim, residual=residual, zero_last=True, rng=rng,
                         dtype=dtype)
        self._after_load()

    def _after_load(self):
        self._all = backend_of(self.made.input_degrees.data).asarray(np.arange(self.dim, dtype=np.int64))

    @property
    def min_shard_rows(self):
        """Rows per worker below which splitting a batch does not pay (``nfcore.threads.workers_for``;
        measured: benchmarks/RESULTS.md, "Session 11"): 256 where the shards take the fused kernels
        (MAF D=8 at batch 256: one fused worker 2.19-2.33 ms a step, two 2.33-2.37), 1024 op by op
        (wide or residual MADEs)."""
        return 256 if self.fused is not False and narrow(self.made.layers, self.made.residual) else 1024

    def _check(self, x):
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ShapeError(f"{type(self).__name__} expected input of shape (N, {self.dim}), got {tuple(x.shape)}")

    def _map(self, y, h, expand):
        """expand: out = y e^alpha + mu (logdet +sum alpha); else out = (y - mu) e^-alpha (logdet -sum alpha)."""
        ops = backend_of(y)
        out = ops.empty(y.shape, y.dtype)
        logdet = ops.empty((y.shape[0],), y.dtype)
        ls = ops.empty(y.shape, y.dtype)
        ops.affine_map(y, h, self._all, y.dtype.type(self.scale_bound), expand, out, logdet, ls)
        return out, logdet, ls

    def _one_pass(self, y, context, need_grad, expand):
        """MADE reads the input y: one network evaluation (one fused kernel where it applies)."""
        self._check(y)
        fuse = self.fused is True or (self.fused == "auto" and self._shard is not None)
        if fuse and narrow(self.made.layers, self.made.residual):
            self.made._input(y, context)  # validates the context
            out, logdet, ls, fcache = net_map(y, context, self._all, self._all, self.made.layers, True,
                                              self.scale_bound, True, expand, need_grad)
            return out, logdet, (ARCache(expand, y if expand else out, ls, fcache) if need_grad else None)
        h, mcache = self.made.forward(y, context, need_grad)
        out, logdet, ls = self._map(y, h, expand)
        cache = ARCache(expand, y if expand else out, ls, mcache) if need_grad else None
        return out, logdet, cache

    def _sequential(self, y, context, need_grad, expand):
        """MADE reads the output: computed variable by variable (see the module docstring)."""
        self._check(y)
        if self.context_dim:
            self.made._input(y, context)  # validates the context
        if self.sequential == "naive" or self.made.residual:
            # the fast pass's unit-by-degree schedule covers plain MADEs; residual blocks take D passes
            out, logdet = self._sequential_naive(y, context, expand)
        else:
            out, logdet = self._sequential_fast(y, context, expand)
        cache = _NoGradient(f"{type(self).__name__}'s {'sampling' if expand else 'density'} direction is "
                            "sequential and has no gradient here") if need_grad else None
        return out, logdet, cache

    def _sequential_naive(self, y, context, expand):
        ops = backend_of(y)
        out = ops.zeros(y.shape, y.dtype)
        logdet = None
        for _ in range(self.dim):
            h, _ = self.made.forward(out, context, need_grad=False)
            out, logdet, _ = self._map(y, h, expand)
        return out, logdet

    def _sequential_fast(self, y, context, expand):
        return made_sequential(self.made, y, context, self.context_dim, self.scale_bound,
                               MODE_EXPAND if expand else MODE_CONTRACT)

    def backward(self, dout, dlogabsdet, cache):
        """VJP of the one-pass direction, with g = dL/d(out), c = dL/dlog|det| and alpha = B tanh(r / B):

        MAF density u = (x - mu) e^-alpha, log|det| = -sum alpha:
            direct dL/dx = g e^-alpha,  dL/dmu = -g e^-alpha,  dL/dalpha = -g u - c;
        IAF sampling x = z e^alpha + mu, log|det| = sum alpha:
            direct dL/dz = g e^alpha,  dL/dmu = g,  dL/dalpha = g z e^alpha + c;
        then dL/dr = dL/dalpha (1 - (alpha / B)^2), and MADE's backward adds its input VJP
        J_(mu, r)(in)^T [dL/dmu, dL/dr] (masked, so only earlier variables receive it) to the
        direct term and accumulates its weight and bias gradients.
        """
        self._require_cache(cache, type(self).__name__)
        if isinstance(cache, _NoGradient):
            raise GradientNotAvailable(cache.reason)
        if isinstance(cache.made, FusedCache):
            return net_map_vjp(dout, dlogabsdet, cache.x, cache.ls, self._all, self._all, self.made.layers, True,
                               self.scale_bound, True, cache.expand, cache.made)
        ops = backend_of(dout)
        din = ops.empty(dout.shape, dout.dtype)
        dh = ops.empty((dout.shape[0], 2 * self.dim), dout.dtype)
        ops.affine_map_vjp(dout, dlogabsdet, cache.x, cache.ls, self._all, dout.dtype.type(self.scale_bound),
                           cache.expand, din, dh)
        ops.iadd(din, self.made.backward(dh, cache.made))
        return din

    def order(self):
        return self.made.order()

    def extra_repr(self):
        return f"{super().extra_repr()}, MADE {self.made.extra_repr()}"

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
    """x = z exp(alpha(z)) + mu(z), (mu, alpha) autoregressive in z; log|det dx/dz| = sum alpha.

    Sampling (``inverse``) is this map: one pass, differentiable. Density (``forward``) is
    sequential and not differentiable; fit an IAF by reverse KL (``nfcore.fit_reverse_kl``),
    whose gradient runs through the sampling pass.
    """

    def forward(self, x, context=None, need_grad=True):
        return self._sequential(x, context, need_grad, expand=False)

    def inverse(self, z, context=None, need_grad=True):
        return self._one_pass(z, context, need_grad, expand=True)
