"""Activation functions by name, mapped to the integer codes of the kernels' scalar math."""

from ..errors import ConfigError
from ..kernels import _scalar

__all__ = ["ACTIVATIONS", "activation_code", "activation_name"]

#: name -> (kernel code, default alpha)
ACTIVATIONS = {
    "identity": (_scalar.ACT_IDENTITY, 0.0),
    "relu": (_scalar.ACT_RELU, 0.0),
    "leaky_relu": (_scalar.ACT_LEAKY_RELU, 0.01),
    "tanh": (_scalar.ACT_TANH, 0.0),
    "elu": (_scalar.ACT_ELU, 1.0),
    "softplus": (_scalar.ACT_SOFTPLUS, 0.0),
}


def activation_code(name, alpha=None):
    """(code, alpha) for an activation name; alpha defaults per activation."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    code, default = ACTIVATIONS[name]
    if alpha is None:
        alpha = default
    if name in ("leaky_relu", "elu") and not alpha > 0:
        raise ConfigError(f"{name} needs alpha > 0 (its backward reads the sign of the output), got {alpha}")
    return code, float(alpha)


def activation_name(code):
    """The name of a kernel activation code (the inverse of ``activation_code``)."""
    return next(name for name, (c, _) in ACTIVATIONS.items() if c == code)
