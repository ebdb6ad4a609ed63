"""Glow's activation normalisation: a per-channel affine map with data-dependent initialisation."""

from typing import NamedTuple

import numpy as np

from ..core.module import Buffer, Parameter
from ..core.transform import Transform
from ..kernels import backend_of, is_device_array
from ._shapes import channel_rows, image_shape

__all__ = ["ActNorm"]


class ActNormCache(NamedTuple):
    inverse: bool
    out: object  # the call's output as (N H W, C) rows (diag_affine's backward reads it)


def _assign(dst, host):
    """Write host values into a parameter's array in place (it may be a view of an optimiser buffer)."""
    host = np.ascontiguousarray(host, dtype=np.dtype(dst.dtype))
    if is_device_array(dst):
        dst.copy_to_device(host)
    else:
        dst[...] = host


class ActNorm(Transform):
    """z = x * exp(log_scale) + loc per channel; log|det| = H W sum_c log_scale_c.

    The first forward call in training mode on an uninitialised layer sets ``loc`` and
    ``log_scale`` so that the output of that batch has zero mean and unit variance per
    channel (over N, H and W). Whether that happened is the buffer ``initialized``, which
    checkpoints keep: a reloaded model is never initialised again. Works on images
    ``(N, H, W, C)`` and on vectors ``(N, D)`` (then ``shape=(D,)``, H W = 1).

    Arguments:
        shape: (H, W, C) for images or (D,) for vectors.
        data_init: initialise from the first training batch (False: start at the identity).
        eps: added to the variance at initialisation.

    References:
        Kingma, Dhariwal. Glow: Generative Flow with Invertible 1x1 Convolutions (2018), 3.1.
    """

    def __init__(self, shape, data_init=True, eps=1e-6, dtype=np.float64):
        shape = (int(shape),) if np.isscalar(shape) else tuple(int(s) for s in shape)
        self.shape = image_shape(shape) if len(shape) == 3 else shape
        self.channels = self.shape[-1]
        self.pixels = int(np.prod(self.shape[:-1]))
        self.eps = float(eps)
        self.loc = Parameter(np.zeros(self.channels, dtype=dtype))
        self.log_scale = Parameter(np.zeros(self.channels, dtype=dtype))
        self.initialized = Buffer(np.array([0 if data_init else 1], dtype=np.int8))
        self._after_load()

    def _after_load(self):
        # a Python copy of the flag, so a training step on the GPU does not read it back every call
        self._init_done = bool(np.asarray(backend_of(self.initialized.data).to_host(self.initialized.data))[0])

    def _rows(self, x, name):
        return channel_rows(x, self.shape, name)

    @property
    def is_initialized(self):
        return self._init_done

    def whole_batch_pending(self):
        return self.training and not self._init_done

    def initialize(self, x):
        """Set loc and log_scale from a batch x so that the output is standardised per channel."""
        rows = self._rows(x, "ActNorm")
        ops = backend_of(rows)
        mean = ops.empty((self.channels,), rows.dtype)
        var = ops.empty((self.channels,), rows.dtype)
        ops.col_mean_var(rows, mean, var)
        mean = np.asarray(ops.to_host(mean), dtype=np.float64)
        var = np.asarray(ops.to_host(var), dtype=np.float64)
        log_scale = -0.5 * np.log(var + self.eps)
        _assign(self.log_scale.data, log_scale)
        _assign(self.loc.data, -mean * np.exp(log_scale))
        _assign(self.initialized.data, np.ones(1, dtype=np.int8))
        self._init_done = True

    def _call(self, x, need_grad, inverse):
        rows = self._rows(x, "ActNorm.inverse" if inverse else "ActNorm")
        ops = backend_of(rows)
        out = ops.empty(rows.shape, rows.dtype)
        ops.diag_affine(rows, self.loc.data, self.log_scale.data, -1 if inverse else 1, out)
        ld = ops.empty((x.shape[0],), x.dtype)
        ops.fill_sum(ld, self.log_scale.data, -float(self.pixels) if inverse else float(self.pixels))
        return ops.reshape(out, x.shape), ld, (ActNormCache(inverse, out) if need_grad else None)

    def forward(self, x, context=None, need_grad=True):
        if self.training and not self.is_initialized:
            self.initialize(x)
        return self._call(x, need_grad, inverse=False)

    def inverse(self, z, context=None, need_grad=True):
        return self._call(z, need_grad, inverse=True)

    def backward(self, dout, dlogabsdet, cache):
        """dx = dz e^s; dloc += sum dz; ds += sum dz (z - loc) + H W sum_n dlogabsdet (inverse: signs flip)."""
        self._require_cache(cache, "ActNorm")
        ops = backend_of(dout)
        drows = ops.reshape(dout, cache.out.shape)
        din = ops.empty(cache.out.shape, dout.dtype)
        ops.diag_affine_bwd(drows, dlogabsdet, cache.out, self.loc.data, self.log_scale.data,
                            -1 if cache.inverse else 1, self.pixels, din, self.loc.grad, self.log_scale.grad)
        return ops.reshape(din, dout.shape)

    def config(self):
        return {"type": "ActNorm", "shape": list(self.shape)}
