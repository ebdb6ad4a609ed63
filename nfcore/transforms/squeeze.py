"""Reshaping bijections: 2x2 squeeze (space to depth) and flattening. Both have log|det| = 0."""

from typing import NamedTuple

from ..core.module import shape_text
from ..core.transform import Transform
from ..errors import ShapeError
from ..kernels import backend_of
from ._shapes import check_image, image_shape

__all__ = ["Squeeze", "Flatten"]


class _DirCache(NamedTuple):
    inverse: bool


class Squeeze(Transform):
    """z[n, i, j, (2a + b) C + c] = x[n, 2i + a, 2j + b, c]: (N, H, W, C) -> (N, H/2, W/2, 4C).

    Each 2x2 block of pixels becomes one pixel with four channel groups, ordered top-left,
    top-right, bottom-left, bottom-right; within a group the channels keep their order.
    A permutation of the entries, so log|det| = 0.

    Arguments:
        shape: the input image shape (H, W, C); H and W must be even.

    Example:
        >>> import numpy as np
        >>> z, ld, _ = Squeeze((2, 2, 1)).forward(np.arange(4.0).reshape(1, 2, 2, 1))
        >>> z.ravel().tolist()
        [0.0, 1.0, 2.0, 3.0]
    """

    def __init__(self, shape):
        h, w, c = image_shape(shape)
        if h % 2 or w % 2:
            raise ShapeError(f"Squeeze needs an even height and width, got an image of {h}x{w}")
        self.in_shape = (h, w, c)
        self.out_shape = (h // 2, w // 2, 4 * c)

    def _move(self, x, inverse):
        ops = backend_of(x)
        shape = self.in_shape if inverse else self.out_shape
        out = ops.empty((x.shape[0], *shape), x.dtype)
        (ops.unsqueeze2x2 if inverse else ops.squeeze2x2)(x, out)
        return out

    def forward(self, x, context=None, need_grad=True):
        check_image(x, self.in_shape, "Squeeze")
        return self._move(x, False), backend_of(x).zeros((x.shape[0],), x.dtype), _DirCache(False)

    def inverse(self, z, context=None, need_grad=True):
        check_image(z, self.out_shape, "Squeeze.inverse")
        return self._move(z, True), backend_of(z).zeros((z.shape[0],), z.dtype), _DirCache(True)

    def backward(self, dout, dlogabsdet, cache):
        """A permutation of the entries: dL/dx = the inverse permutation of dL/dz; log|det| = 0."""
        return self._move(dout, not cache.inverse)

    def extra_repr(self):
        return shape_text(self.in_shape, self.out_shape)

    def config(self):
        return {"type": "Squeeze", "shape": list(self.in_shape)}


class Flatten(Transform):
    """z = x.reshape(N, H W C): the image latent as a vector (for the base distribution)."""

    def __init__(self, shape):
        self.in_shape = image_shape(shape)
        self.dim = self.in_shape[0] * self.in_shape[1] * self.in_shape[2]

    def forward(self, x, context=None, need_grad=True):
        check_image(x, self.in_shape, "Flatten")
        ops = backend_of(x)
        return ops.reshape(x, (x.shape[0], self.dim)), ops.zeros((x.shape[0],), x.dtype), _DirCache(False)

    def inverse(self, z, context=None, need_grad=True):
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise ShapeError(f"Flatten.inverse expected (N, {self.dim}), got {tuple(z.shape)}")
        ops = backend_of(z)
        return ops.reshape(z, (z.shape[0], *self.in_shape)), ops.zeros((z.shape[0],), z.dtype), _DirCache(True)

    def backward(self, dout, dlogabsdet, cache):
        """dL/dx = dL/dz reshaped back (a reshape's Jacobian is the identity; log|det| = 0)."""
        ops = backend_of(dout)
        shape = (self.dim,) if cache.inverse else self.in_shape
        return ops.reshape(dout, (dout.shape[0], *shape))

    def extra_repr(self):
        return shape_text(self.in_shape, (self.dim,))

    def config(self):
        return {"type": "Flatten", "shape": list(self.in_shape)}
