"""The wheels: invertible layers with log-dets and hand-written VJPs."""

from .autoregressive import IAF, MAF
from .batchnorm import BatchNorm
from .coupling import AdditiveCoupling, AffineCoupling, Coupling, make_mask
from .elementwise import Scaling, Standardize
from .permute import Permutation, make_permutation

__all__ = [
    "BatchNorm",
    "MAF",
    "IAF",
    "AdditiveCoupling",
    "AffineCoupling",
    "Coupling",
    "make_mask",
    "Scaling",
    "Standardize",
    "Permutation",
    "make_permutation",
]
