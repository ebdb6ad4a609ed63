"""The autoregressive latent prior p(z) = prod_t p(z_t | z_<t), conditionals from a MADE.

Each conditional is a mixture of K Gaussians (K = 1: a Gaussian) whose weights, means and
bounded log-scales are MADE outputs, so the prior can put the dependencies that a flow
leaves between latent dimensions into the density itself. Usable as the base of any flow.
"""

from typing import NamedTuple

import numpy as np

from .core.distributions import Distribution
from .errors import ConfigError, GradientNotAvailable
from .kernels import backend_of, get_backend
from .nn.made import MADE

__all__ = ["AutoregressivePrior"]


class _PriorCache(NamedTuple):
    z: object
    h: object
    made: object


class AutoregressivePrior(Distribution):
    """p(z) = prod_t sum_c w_tc(z_<t) N(z_t; mu_tc(z_<t), s_tc(z_<t)^2).

    ``log_prob`` is one MADE pass with an exact backward to z (directly and through the MADE)
    and to every parameter. Sampling is sequential (D MADE passes, fixed noise, so it is
    exact); it is not reparameterisable (a component is chosen), so reverse-KL training
    through it raises ``GradientNotAvailable``.

    Arguments:
        shape: event shape (flattened to D dimensions).
        hidden: MADE hidden widths.
        components: K, Gaussians per conditional.
        order, hidden_degrees, activation: as for ``MADE``.
        scale_bound: log-scales are B tanh(raw / B).
        rng, dtype: initialisation.

    Example:
        >>> import numpy as np
        >>> prior = AutoregressivePrior(3, hidden=[16], components=2, rng=0)
        >>> prior.log_prob(np.zeros((2, 3)))[0].shape
        (2,)
    """

    def __init__(self, shape, hidden=(64, 64), components=1, order="natural", hidden_degrees="sequential",
                 activation="relu", scale_bound=3.0, rng=None, dtype=np.float64):
        super().__init__(shape)
        if components < 1:
            raise ConfigError(f"components must be >= 1, got {components}")
        self.components = int(components)
        self.scale_bound = float(scale_bound)
        rng = np.random.default_rng(rng)
        self.made = MADE(self.size, hidden, params_per_dim=3 * self.components, order=order,
                         hidden_degrees=hidden_degrees, activation=activation, zero_last=True, rng=rng, dtype=dtype)
        if self.components > 1:
            # distinct starting means (identical components would receive identical gradients forever)
            bias = self.made.layers[-1].bias.data
            offsets = np.linspace(-1.0, 1.0, self.components)
            for c in range(self.components):
                start = (self.components + c) * self.size
                bias[start : start + self.size] = offsets[c]

    def _flat(self, z):
        return backend_of(z).reshape(z, (z.shape[0], self.size))

    def log_prob(self, z, need_grad=False):
        self._check(z)
        zf = self._flat(z)
        ops = backend_of(zf)
        h, mcache = self.made.forward(zf, need_grad=need_grad)
        out = ops.empty((zf.shape[0],), zf.dtype)
        ops.mog_logprob(zf, h, self.components, zf.dtype.type(self.scale_bound), out)
        return out, (_PriorCache(zf, h, mcache) if need_grad else None)

    def backward(self, dlp, cache):
        """dz = the direct part (through the Gaussians) + the MADE's (through the parameters)."""
        ops = backend_of(dlp)
        z, h = cache.z, cache.h
        dz = ops.empty(z.shape, z.dtype)
        dh = ops.empty(h.shape, h.dtype)
        ops.mog_logprob_bwd(dlp, z, h, self.components, z.dtype.type(self.scale_bound), dz, dh)
        ops.iadd(dz, self.made.backward(dh, cache.made))
        return ops.reshape(dz, (z.shape[0], *self.shape))

    def rsample(self, n, rng, dtype=None, device=None, temperature=1.0, sequential="fast"):
        """(z, marker): sequential sampling with fixed noise (each conditional's Gaussian noise times T).

        ``fast`` (the default): every MADE unit computed once, as in MAF sampling (the CPU's
        Numba kernel or its CUDA twin); ``naive``: D MADE passes, pass k fixing the k-th variable.
        """
        ops = backend_of(self.made.input_degrees.data) if device is None else get_backend(device)
        dtype = np.dtype(self.made.layers[0].weight.data.dtype if dtype is None else dtype)
        unif_h = np.ascontiguousarray(rng.uniform(size=(n, self.size)), dtype=dtype)
        eps_h = np.ascontiguousarray(float(temperature) * rng.standard_normal((n, self.size)), dtype=dtype)
        unif, eps = ops.asarray(unif_h), ops.asarray(eps_h)
        if sequential == "fast":
            from .transforms.autoregressive import MODE_MOG, made_sequential

            z, _ = made_sequential(self.made, ops.zeros((n, self.size), dtype), None, 0, self.scale_bound,
                                   MODE_MOG, unif, eps)
            return ops.reshape(z, (n, *self.shape)), _NotReparameterised()
        z = ops.zeros((n, self.size), dtype)
        bound = dtype.type(self.scale_bound)
        for _ in range(self.size):
            h, _ = self.made.forward(z, need_grad=False)
            nxt = ops.empty((n, self.size), dtype)
            ops.mog_sample(h, self.components, bound, unif, eps, nxt)
            z = nxt
        return ops.reshape(z, (n, *self.shape)), _NotReparameterised()

    def rsample_backward(self, dz, cache):
        raise GradientNotAvailable(
            "the autoregressive prior's samples are not reparameterisable (a mixture component is chosen); "
            "use a normal or diag base for reverse-KL training"
        )

    def extra_repr(self):
        per = f"{self.components} Gaussian{'s' if self.components > 1 else ''} per conditional"
        return f"{super().extra_repr()}, {per}, MADE {self.made.extra_repr()}"

    def config(self):
        return {"type": "AutoregressivePrior", "shape": list(self.shape), "components": self.components}


class _NotReparameterised(NamedTuple):
    pass
