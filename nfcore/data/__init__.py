"""Data: built-in 2-D densities and loaders for user arrays."""

from .loaders import load_array, load_data, standardization
from .toy import BANANA_LOG_Z, ENTROPY, TOY_DENSITIES, banana_log_density, sample_toy

__all__ = [
    "load_array",
    "load_data",
    "standardization",
    "BANANA_LOG_Z",
    "ENTROPY",
    "TOY_DENSITIES",
    "banana_log_density",
    "sample_toy",
]
