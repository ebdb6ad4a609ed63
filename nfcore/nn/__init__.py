"""Conditioner networks with hand-written backward."""

from .activations import ACTIVATIONS, activation_code
from .conv import Conv2d, ConvNet
from .linear import MLP, Linear
from .made import MADE, MaskedLinear, made_degrees
from .odenet import ConcatSquash, ODENet
from .spectral import SpectralConv2d, SpectralLinear

__all__ = [
    "ACTIVATIONS",
    "activation_code",
    "Linear",
    "MLP",
    "Conv2d",
    "ConvNet",
    "MADE",
    "MaskedLinear",
    "made_degrees",
    "ConcatSquash",
    "ODENet",
    "SpectralLinear",
    "SpectralConv2d",
]
