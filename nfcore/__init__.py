"""nfcore: normalizing flows in NumPy and Numba, every gradient written out by hand."""

from . import data, gradcheck, plot
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
)
from .kernels.cpu.memory import release as release_memory
from .models import build
from .nn import MADE, MLP, Linear, MaskedLinear
from .priors import AutoregressivePrior
from .threads import get_num_threads, set_num_threads
from .train import Adam, evaluate_nll, fit, fit_reverse_kl, load, save
from .transforms import (
    IAF,
    MAF,
    AdditiveCoupling,
    AffineCoupling,
    BatchNorm,
    Permutation,
    Scaling,
    Standardize,
    make_mask,
    make_permutation,
)

__version__ = "0.1.0"

__all__ = [
    "data",
    "gradcheck",
    "plot",
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
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DeviceError",
    "GradientNotAvailable",
    "InputOutsideDomain",
    "InverseNotAvailable",
    "NfcoreError",
    "ShapeError",
    "build",
    "AutoregressivePrior",
    "release_memory",
    "get_num_threads",
    "set_num_threads",
    "Adam",
    "evaluate_nll",
    "fit",
    "fit_reverse_kl",
    "load",
    "save",
    "MLP",
    "MADE",
    "MaskedLinear",
    "Linear",
    "MAF",
    "IAF",
    "BatchNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "Permutation",
    "Scaling",
    "Standardize",
    "make_mask",
    "make_permutation",
]
