"""Conditioner networks with hand-written backward."""

from .activations import ACTIVATIONS, activation_code
from .linear import MLP, Linear

__all__ = ["ACTIVATIONS", "activation_code", "Linear", "MLP"]
