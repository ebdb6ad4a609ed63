"""nfcore: normalizing flows in NumPy and Numba, every gradient written out by hand."""

from . import data, gradcheck, plot, tabular, transforms
from .core import (
    Buffer,
    Chain,
    DiagNormal,
    Distribution,
    Flow,
    Inverse,
    Module,
    Parameter,
    StandardNormal,
    Transform,
    describe,
)
from .errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DeviceError,
    GradientNotAvailable,
    InputOutsideDomain,
    InverseNotAvailable,
    NfcoreError,
    ShapeError,
    SolverError,
)
from .gmm import GaussianMixture
from .kernels.array.memory import release as release_memory
from .kernels.array.memory import set_limit as set_memory_limit
from .models import build
from .nn import MADE, MLP, ConcatSquash, Conv2d, ConvNet, Linear, MaskedLinear, ODENet, SpectralConv2d, SpectralLinear
from .priors import AutoregressivePrior
from .threads import get_num_threads, set_num_threads
from .train import Adam, bits_per_dim, evaluate_nll, fit, fit_reverse_kl, load, save
from .transforms import *  # noqa: F403 (the transforms are listed once, in transforms.__all__)

__version__ = "0.1.0"

__all__ = [
    "data",
    "gradcheck",
    "plot",
    "tabular",
    "GaussianMixture",
    "Buffer",
    "Chain",
    "DiagNormal",
    "Distribution",
    "Flow",
    "Inverse",
    "Module",
    "Parameter",
    "StandardNormal",
    "Transform",
    "describe",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DeviceError",
    "SolverError",
    "GradientNotAvailable",
    "InputOutsideDomain",
    "InverseNotAvailable",
    "NfcoreError",
    "ShapeError",
    "build",
    "AutoregressivePrior",
    "release_memory",
    "set_memory_limit",
    "get_num_threads",
    "set_num_threads",
    "Adam",
    "evaluate_nll",
    "bits_per_dim",
    "fit",
    "fit_reverse_kl",
    "load",
    "save",
    "MLP",
    "MADE",
    "ConcatSquash",
    "ODENet",
    "MaskedLinear",
    "Linear",
    "Conv2d",
    "ConvNet",
    "SpectralLinear",
    "SpectralConv2d",
    *transforms.__all__,
]
