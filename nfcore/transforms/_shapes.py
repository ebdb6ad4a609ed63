"""Shape checks shared by the image transforms (images are (N, H, W, C), channels last)."""

from ..errors import ShapeError
from ..kernels import backend_of

__all__ = ["channel_rows", "check_image", "image_shape"]


def image_shape(shape):
    """A validated (H, W, C) tuple of positive ints."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ShapeError(f"an image shape is (H, W, C) with positive sizes, got {shape}")
    return shape


def check_image(x, shape, name):
    """Raise ShapeError unless x is (N, *shape)."""
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(shape):
        h, w, c = shape
        raise ShapeError(f"{name} expected images of shape (N, {h}, {w}, {c}), got {tuple(x.shape)}")


def channel_rows(x, shape, name):
    """x as rows of channels, checked: images (N, *shape) as (N H W, C) when ``shape`` is (H, W, C),
    vectors (N, C) as they are when it is (C,) (a view, on x's backend)."""
    channels = shape[-1]
    if len(shape) == 3:
        check_image(x, shape, name)
    elif x.ndim != 2 or x.shape[1] != channels:
        raise ShapeError(f"{name} expected input of shape (N, {channels}), got {tuple(x.shape)}")
    return backend_of(x).reshape(x, (x.size // channels, channels))
