"""Coupling layers for images: a convolutional conditioner, channel or checkerboard masks.

The image ``(N, H, W, C)`` is seen as rows of ``D = H W C`` entries (a free reshape); the
mask picks the transformed entries ``b``, and the element-wise maps and their fused
kernels are exactly those of the vector coupling layers (``AffineCoupling``,
``AdditiveCoupling``). What changes is the conditioner: a ``ConvNet`` over the image of
the untransformed entries,

* ``channel`` mask (Glow): x = [x_a, x_b] split along channels; the net sees x_a
  (N, H, W, C_a) and outputs (N, H, W, P C_b);
* ``checkerboard`` mask (RealNVP): pixel (i, j) is transformed when i + j is odd (even for
  parity 1), all its channels; the net sees x with the transformed pixels zeroed and
  outputs (N, H, W, P C).

P is 2 for affine (shift, then log-scale) and 1 for additive coupling. The conditioner's
outputs at the transformed entries are gathered into the (N, P |b|) layout the kernels read.
"""

from typing import NamedTuple

import numpy as np

from ..core.module import Buffer
from ..core.transform import Transform
from ..errors import ConfigError
from ..kernels import backend_of
from ..nn.conv import ConvNet
from ._shapes import check_image, image_shape
from .coupling import AdditiveCoupling, AffineCoupling, Coupling

__all__ = ["image_mask", "ImageCoupling", "ImageAffineCoupling", "ImageAdditiveCoupling"]


def image_mask(shape, kind="channel", parity=0):
    """Boolean (H, W, C) mask, True where the coupling transforms.

    ``channel``: the last C - C // 2 channels (the first C // 2 with odd parity);
    ``checkerboard``: pixels with (i + j) odd (even with odd parity), all channels.
    """
    h, w, c = image_shape(shape)
    if kind == "channel":
        if c < 2:
            raise ConfigError(f"a channel mask needs at least 2 channels, got {c} (squeeze first)")
        m = np.broadcast_to(np.arange(c) >= c // 2, (h, w, c))
    elif kind == "checkerboard":
        if h * w < 2:
            raise ConfigError("a checkerboard mask needs at least 2 pixels")
        ij = np.add.outer(np.arange(h), np.arange(w)) % 2 == 1
        m = np.broadcast_to(ij[:, :, None], (h, w, c))
    else:
        raise ConfigError(f"unknown image mask {kind!r}; choose channel or checkerboard")
    return ~m if parity % 2 else m.copy()


class ImageCouplingCache(NamedTuple):
    inverse: bool
    x: object  # data-side rows (N, D): the forward input or the inverse output
    aux: object  # the element-wise map's saved values (affine: log-scales (N, |b|))
    net: object  # the conditioner's cache


class ImageCoupling(Transform):
    """z_a = x_a, z_b = g(x_b; h), h = ConvNet(x_a) on (N, H, W, C) images; log|det| = sum_b log|dg/dx_b|.

    A template: the vector coupling maps g on (N, H W C) rows with a convolutional conditioner.
    """

    params_per_dim = 1

    @property
    def min_shard_rows(self):
        """Rows per worker below which splitting a batch does not pay (``nfcore.threads.workers_for``):
        2048 pixels' worth of this layer's H x W, at least 8 (measured on Glow: two workers win
        from 32 images of 16x16x3, whose first couplings run at 8x8, and from 256 of 8x8x1)."""
        return max(8, 2048 // (self.shape[0] * self.shape[1]))


    def __init__(self, shape, mask="channel", parity=0, hidden=(64, 64), activation="relu", rng=None,
                 dtype=np.float64):
        self.shape = image_shape(shape)
        h, w, c = self.shape
        self.kind = mask
        m = image_mask(self.shape, mask, parity)
        self.mask = Buffer(m.astype(np.int8))
        if mask == "channel":
            self.in_ch, self.slots = int((~m[0, 0]).sum()), int(m[0, 0].sum())
        else:
            self.in_ch, self.slots = c, c
        self._after_load()
        self.net = ConvNet(self.in_ch, self.params_per_dim * self.slots, hidden, activation, rng, dtype)

    def _after_load(self):
        ops = backend_of(self.mask.data)
        m = np.asarray(ops.to_host(self.mask.data)).astype(bool)
        flat = m.ravel()
        self.idx_a = ops.asarray(np.flatnonzero(~flat).astype(np.int64))
        self.idx_b = ops.asarray(np.flatnonzero(flat).astype(np.int64))
        # where the net's output for each transformed entry sits in its flattened (N, H W P slots) output
        b = np.flatnonzero(flat)
        pix, ch = b // self.shape[2], b % self.shape[2]
        # channel mask: the net's output channel of a transformed channel is its rank among them
        slot = (np.cumsum(m[0, 0]) - 1)[ch] if self.kind == "channel" else ch
        stride = self.params_per_dim * self.slots
        cols = [pix * stride + p * self.slots + slot for p in range(self.params_per_dim)]
        self.idx_h = ops.asarray(np.concatenate(cols).astype(np.int64))

    def _net_input(self, rows):
        ops = backend_of(rows)
        n = rows.shape[0]
        h, w, _ = self.shape
        xa = ops.empty((n, self.idx_a.shape[0]), rows.dtype)
        ops.gather_cols(rows, self.idx_a, xa, 0)
        if self.kind == "checkerboard":  # the whole image, transformed pixels zeroed
            full = ops.zeros(rows.shape, rows.dtype)
            ops.scatter_add_cols(xa, self.idx_a, full)
            xa = full
        return ops.reshape(xa, (n, h, w, self.in_ch))

    def _call(self, x, need_grad, inverse):
        check_image(x, self.shape, type(self).__name__ + (".inverse" if inverse else ""))
        ops = backend_of(x)
        n = x.shape[0]
        rows = ops.reshape(x, (n, x.size // n))
        hnet, net_cache = self.net.forward(self._net_input(rows), need_grad)
        h = ops.empty((n, self.idx_h.shape[0]), x.dtype)
        ops.gather_cols(ops.reshape(hnet, (n, hnet.size // n)), self.idx_h, h, 0)
        out, logdet, aux = self._map(rows, h, inverse)
        cache = ImageCouplingCache(inverse, out if inverse else rows, aux, net_cache) if need_grad else None
        return ops.reshape(out, x.shape), logdet, cache

    def forward(self, x, context=None, need_grad=True):
        return self._call(x, need_grad, inverse=False)

    def inverse(self, z, context=None, need_grad=True):
        return self._call(z, need_grad, inverse=True)

    def backward(self, dout, dlogabsdet, cache):
        """dL/dx = (dz/dx)^T dL/dz + (d log|det|/dx)^T dL/dlog|det|, and the ConvNet's weights.

        With h = net(x_a) gathered at the transformed entries b: the element-wise map's VJP
        (``Coupling._map_bwd``; ``AffineCoupling._map_bwd`` for the formulas) gives dL/dx_b and
        dL/dh; dL/dh is scattered into the net's (N, H, W, P C_b) output, and the net's backward
        adds J_net(x_a)^T dL/dh to the pass-through entries a (a checkerboard net reads the whole
        image with the b pixels zeroed, so only its gradient at the a entries is kept). The
        inverse direction is the same with x and z swapped.
        """
        self._require_cache(cache, type(self).__name__)
        ops = backend_of(dout)
        n = dout.shape[0]
        din, dh = self._map_bwd(ops.reshape(dout, cache.x.shape), dlogabsdet, cache)
        h, w, _ = self.shape
        dhnet = ops.zeros((n, h * w * self.params_per_dim * self.slots), dout.dtype)
        ops.scatter_add_cols(dh, self.idx_h, dhnet)
        dxa = self.net.backward(ops.reshape(dhnet, (n, h, w, self.params_per_dim * self.slots)), cache.net)
        dxa = ops.reshape(dxa, (n, dxa.size // n))
        if self.kind == "checkerboard":  # only the untransformed entries were read
            part = ops.empty((n, self.idx_a.shape[0]), dout.dtype)
            ops.gather_cols(dxa, self.idx_a, part, 0)
            dxa = part
        ops.scatter_add_cols(dxa, self.idx_a, din)
        return ops.reshape(din, dout.shape)

    # the element-wise maps are the vector coupling layers' (they read idx_b, scale_bound, params_per_dim)
    _dh = Coupling._dh

    def extra_repr(self):
        return f"{super().extra_repr()}, {self.kind} mask, conditioner ConvNet {self.net.extra_repr()}"

    def config(self):
        return {"type": type(self).__name__, "shape": list(self.shape), "mask": self.kind}


class ImageAffineCoupling(ImageCoupling):
    """RealNVP / Glow affine coupling on images: z_b = x_b exp(s) + t, s = B tanh(h_s / B).

    (s, t) come from a ``ConvNet`` of the untransformed part. The soft clamp keeps the
    log-scale in (-B, B) and is the identity near 0, so a zero-initialised net starts at the
    identity map (Glow's ``sigmoid(h + 2)`` serves the same purpose, but starts at a scale of 0.88).

    Arguments:
        shape: (H, W, C). mask: ``channel`` or ``checkerboard``; parity flips it.
        hidden: the ConvNet's hidden widths (Glow: [512, 512]). scale_bound: B.

    References:
        Dinh et al. Real NVP (2017); Kingma, Dhariwal. Glow (2018).
    """

    params_per_dim = 2
    _map = AffineCoupling._map
    _map_bwd = AffineCoupling._map_bwd

    def __init__(self, shape, mask="channel", parity=0, hidden=(64, 64), activation="relu", scale_bound=3.0,
                 rng=None, dtype=np.float64):
        if not scale_bound > 0:
            raise ConfigError(f"scale_bound must be > 0, got {scale_bound}")
        self.scale_bound = float(scale_bound)
        super().__init__(shape, mask, parity, hidden, activation, rng, dtype)


class ImageAdditiveCoupling(ImageCoupling):
    """NICE / Glow additive coupling on images: z_b = x_b + t(x_a); log|det| = 0."""

    params_per_dim = 1
    _map = AdditiveCoupling._map
    _map_bwd = AdditiveCoupling._map_bwd
