"""Data: built-in 2-D densities and loaders for user arrays."""

from .digits import DIGITS_LEVELS, load_digits
from .loaders import DATASETS, load_array, load_data, standardization
from .toy import BANANA_LOG_Z, ENTROPY, TOY_DENSITIES, banana_log_density, sample_toy

__all__ = [
    "DIGITS_LEVELS",
    "load_digits",
    "DATASETS",
    "load_array",
    "load_data",
    "standardization",
    "BANANA_LOG_Z",
    "ENTROPY",
    "TOY_DENSITIES",
    "banana_log_density",
    "sample_toy",
]
