"""Typed errors raised at nfcore's public edges."""

__all__ = [
    "NfcoreError",
    "ShapeError",
    "InputOutsideDomain",
    "InverseNotAvailable",
    "GradientNotAvailable",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DeviceError",
    "SolverError",
]


class NfcoreError(Exception):
    """Base class of every error nfcore raises on purpose."""


class ShapeError(NfcoreError, ValueError):
    """An array has the wrong shape, dimension or dtype."""


class InputOutsideDomain(NfcoreError, ValueError):
    """An input holds NaN/inf or lies outside the transform's domain."""


class InverseNotAvailable(NfcoreError):
    """The transform has no usable inverse (or it did not converge)."""


class GradientNotAvailable(NfcoreError):
    """A gradient was asked of a direction that is not differentiable here."""


class CheckpointError(NfcoreError):
    """A checkpoint file is missing, truncated, foreign or inconsistent."""


class ConfigError(NfcoreError, ValueError):
    """A model, data or training configuration is invalid."""


class DataError(NfcoreError, ValueError):
    """Data could not be loaded or is unusable (NaN, wrong shape, unknown name)."""


class DeviceError(NfcoreError):
    """A device (CUDA) was asked for and is not available, or arrays live on mixed devices."""


class SolverError(NfcoreError):
    """An ODE solve failed: more steps than its budget, or a non-finite state (a diverged model)."""
