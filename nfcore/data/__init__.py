"""Data: built-in 2-D densities and loaders for user arrays."""

from .digits import DIGITS_LEVELS, DIGITS_SPLIT, digits_split, load_digit_images, load_digits
from .loaders import DATASETS, IMAGE_DATASETS, load_array, load_data, load_images, open_rows, standardization
from .toy import (
    BANANA_LOG_Z,
    ENTROPY,
    FUNNEL_LOG_Z,
    TOY_DENSITIES,
    banana_log_density,
    funnel_log_density,
    sample_toy,
)

__all__ = [
    "DIGITS_LEVELS",
    "load_digits",
    "load_digit_images",
    "digits_split",
    "DIGITS_SPLIT",
    "DATASETS",
    "IMAGE_DATASETS",
    "load_array",
    "open_rows",
    "load_images",
    "load_data",
    "standardization",
    "BANANA_LOG_Z",
    "ENTROPY",
    "TOY_DENSITIES",
    "banana_log_density",
    "FUNNEL_LOG_Z",
    "funnel_log_density",
    "sample_toy",
]
