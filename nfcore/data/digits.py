"""The bundled 8x8 handwritten digits (1,797 images, 17 grey levels), as continuous data.

Source: the test set of the UCI "Optical Recognition of Handwritten Digits" data (Alpaydin and
Kaynak, 1998; CC BY 4.0), the copy bundled with scikit-learn.

A density model of discrete pixels needs dequantisation: each pixel value v in {0..16} becomes
(v + u) / 17 with u ~ U(0, 1), so the continuous density on [0, 1)^64 and the discrete
probability of the image differ only by the known volume factor 17^64.
"""

import os

import numpy as np

from ..errors import DataError

__all__ = ["load_digits", "load_digit_images", "digits_split", "DIGITS_LEVELS", "DIGITS_SPLIT"]

DIGITS_LEVELS = 17
_PATH = os.path.join(os.path.dirname(__file__), "digits.npz")

#: the fixed split of the 1,797 images: a permutation drawn with numpy's default_rng(0); its
#: first 1,257 indices are the training set, the next 180 validation, the last 360 test
DIGITS_SPLIT = {"train": (0, 1257), "val": (1257, 1437), "test": (1437, 1797)}


def digits_split(name):
    """Indices (into the bundled order) of the ``train``, ``val`` or ``test`` part of the fixed split."""
    if name not in DIGITS_SPLIT:
        raise DataError(f"unknown digits split {name!r}; choose train, val or test")
    lo, hi = DIGITS_SPLIT[name]
    return np.random.default_rng(0).permutation(1797)[lo:hi]


def _read():
    try:
        with np.load(_PATH, allow_pickle=False) as data:
            return data["images"].astype(np.float64), data["labels"].astype(np.int64)
    except (OSError, KeyError, ValueError) as err:
        raise DataError(f"{_PATH}: the bundled digits could not be read ({err}); reinstall nfcore") from err


def load_digit_images(split="train", return_labels=False):
    """The digits as images of integer levels: float64 (N, 8, 8, 1), values 0..16 (17 levels).

    ``split`` is ``train`` (1,257 images), ``val`` (180), ``test`` (360) of the fixed split
    ``DIGITS_SPLIT``, or ``all`` (1,797). Feed them to a flow that starts with
    ``Dequantize(levels=17)`` (``build({"flow": "glow", "shape": [8, 8, 1], "levels": 17})``).

    Example:
        >>> load_digit_images("test").shape
        (360, 8, 8, 1)
    """
    images, labels = _read()
    idx = np.arange(len(images)) if split == "all" else digits_split(split)
    x = np.ascontiguousarray(images[idx].reshape(len(idx), 8, 8, 1))
    return (x, labels[idx]) if return_labels else x


def load_digits(flat=True, dequantize=True, seed=None, return_labels=False):
    """The digits as float64: (1797, 64) when flat, else (1797, 8, 8, 1) (channels last).

    Arguments:
        flat: one 64-D row per image (the tabular view, ``digits-flat``).
        dequantize: (v + u) / 17 with uniform noise from ``seed``; else v / 16 (no noise).
        seed: seed or Generator of the dequantisation noise.
        return_labels: also return the (1797,) digit labels.

    Example:
        >>> load_digits(seed=0).shape
        (1797, 64)
    """
    images, labels = _read()
    if dequantize:
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        x = (images + rng.uniform(size=images.shape)) / DIGITS_LEVELS
    else:
        x = images / (DIGITS_LEVELS - 1)
    x = x.reshape(len(x), 64) if flat else x[..., None]
    x = np.ascontiguousarray(x)
    return (x, labels) if return_labels else x
