"""Core abstractions: parameters, modules, transforms, distributions, flows."""

from .distributions import DiagNormal, Distribution, StandardNormal
from .flow import Flow
from .module import Buffer, Module, Parameter, describe, flatten_parameters
from .transform import Chain, Inverse, Transform

__all__ = [
    "Buffer",
    "Module",
    "Parameter",
    "describe",
    "flatten_parameters",
    "Chain",
    "Inverse",
    "Transform",
    "Distribution",
    "StandardNormal",
    "DiagNormal",
    "Flow",
]
