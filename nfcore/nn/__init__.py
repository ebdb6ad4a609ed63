"""Conditioner networks with hand-written backward."""

from .activations import ACTIVATIONS, activation_code
from .linear import MLP, Linear
from .made import MADE, MaskedLinear, made_degrees

__all__ = ["ACTIVATIONS", "activation_code", "Linear", "MLP", "MADE", "MaskedLinear", "made_degrees"]
