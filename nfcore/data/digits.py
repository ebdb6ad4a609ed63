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

__all__ = ["load_digits", "DIGITS_LEVELS"]

DIGITS_LEVELS = 17
_PATH = os.path.join(os.path.dirname(__file__), "digits.npz")


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
    try:
        with np.load(_PATH, allow_pickle=False) as data:
            images = data["images"].astype(np.float64)
            labels = data["labels"].astype(np.int64)
    except (OSError, KeyError, ValueError) as err:
        raise DataError(f"{_PATH}: the bundled digits could not be read ({err}); reinstall nfcore") from err
    if dequantize:
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        x = (images + rng.uniform(size=images.shape)) / DIGITS_LEVELS
    else:
        x = images / (DIGITS_LEVELS - 1)
    x = x.reshape(len(x), 64) if flat else x[..., None]
    x = np.ascontiguousarray(x)
    return (x, labels) if return_labels else x
