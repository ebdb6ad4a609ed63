"""Adam over one flat parameter buffer: one fused kernel call per step."""

import math

import numpy as np

from ..core.module import flatten_parameters
from ..errors import ConfigError
from ..kernels import backend_of

__all__ = ["Adam"]


class Adam:
    """Bias-corrected Adam with decoupled weight decay and optional gradient-norm clipping.

    On creation the parameters become views of one flat buffer (and their gradients of
    another), so ``step`` and ``zero_grad`` are one kernel call each.

    Arguments:
        params: list of ``Parameter`` (e.g. ``flow.parameters()``), one dtype and device.
        lr: learning rate.
        betas: (beta1, beta2).
        eps: denominator guard.
        weight_decay: decoupled (AdamW) decay coefficient.
        clip_norm: if set, gradients are rescaled so their global L2 norm is at most this.

    References:
        Kingma, Ba. Adam: A Method for Stochastic Optimization (2015).
        Loshchilov, Hutter. Decoupled Weight Decay Regularization (2019).

    Example:
        >>> import numpy as np
        >>> from nfcore import Parameter
        >>> p = Parameter(np.array([1.0, -1.0]))
        >>> opt = Adam([p], lr=0.1)
        >>> p.grad[...] = [1.0, -1.0]
        >>> _ = opt.step()
        >>> p.data.round(3)
        array([ 0.9, -0.9])
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, clip_norm=None):
        if not lr > 0:
            raise ConfigError(f"lr must be > 0, got {lr}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ConfigError(f"betas must lie in [0, 1), got {betas}")
        if clip_norm is not None and not clip_norm > 0:
            raise ConfigError(f"clip_norm must be > 0 or None, got {clip_norm}")
        self.params = list(params)
        self.flat, self.grad = flatten_parameters(self.params)
        self.ops = backend_of(self.flat)
        self.lr = float(lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.m = self.ops.zeros(self.flat.shape, self.flat.dtype)
        self.v = self.ops.zeros(self.flat.shape, self.flat.dtype)
        self.t = 0

    def zero_grad(self):
        self.ops.fill(self.grad, 0)

    def grad_norm(self):
        return math.sqrt(self.ops.sumsq(self.grad))

    def step(self):
        """One update; returns the gradient norm before clipping (a float).

        A non-finite gradient norm skips the update (and returns it) rather than
        poisoning the parameters with NaN.
        """
        norm = self.grad_norm()
        if not math.isfinite(norm):
            return norm
        if self.clip_norm is not None and norm > self.clip_norm:
            self.ops.scale_inplace(self.grad, self.clip_norm / norm)
        self.t += 1
        self.ops.adam_update(self.flat, self.grad, self.m, self.v, self.lr, self.betas[0], self.betas[1], self.eps,
                             self.weight_decay, self.t)
        return norm

    def state_dict(self):
        to_host = self.ops.to_host
        return {
            "m": np.array(to_host(self.m)),
            "v": np.array(to_host(self.v)),
            "t": np.array(self.t, dtype=np.int64),
            "hyper": np.array([self.lr, *self.betas, self.eps, self.weight_decay,
                               np.nan if self.clip_norm is None else self.clip_norm]),
        }

    def load_state_dict(self, state):
        for key in ("m", "v"):
            value = np.asarray(state[key])
            if value.shape != tuple(self.m.shape):
                raise ConfigError(f"optimiser state {key!r} has shape {value.shape}, expected {tuple(self.m.shape)}")
        self.m = self.ops.asarray(np.ascontiguousarray(state["m"], dtype=self.flat.dtype))
        self.v = self.ops.asarray(np.ascontiguousarray(state["v"], dtype=self.flat.dtype))
        self.t = int(state["t"])
