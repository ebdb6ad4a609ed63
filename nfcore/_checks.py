"""The value checks every entry point shares (configs, ``fit``'s options, ``Flow`` arguments):
one wording for every "must be an integer >= ..." and "must be a finite number > ..." error."""

import math

import numpy as np

from .errors import ConfigError

__all__ = ["check_int", "check_real"]


def check_int(name, value, lo, error=ConfigError):
    """``value`` as an int >= lo; a bool, a float or a string is refused (naming ``name``)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise error(f"{name} must be an integer >= {lo}, got {value!r} ({type(value).__name__})")
    if value < lo:
        raise error(f"{name} must be an integer >= {lo}, got {value}")
    return int(value)


def check_real(name, value, lo=None, hi=None, closed=False, error=ConfigError):
    """``value`` as a finite float above ``lo`` (``closed``: or equal) and below ``hi``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise error(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    low_ok = lo is None or (value >= lo if closed else value > lo)
    if not math.isfinite(value) or not low_ok or (hi is not None and not value < hi):
        bounds = " and ".join(b for b in (lo is not None and f"{'>=' if closed else '>'} {lo}",
                                          hi is not None and f"< {hi}") if b)
        raise error(f"{name} must be a finite number {bounds}, got {value}")
    return value
