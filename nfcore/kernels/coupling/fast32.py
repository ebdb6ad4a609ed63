"""A vectorisable float32 exp for the CPU kernels' hot element-wise passes.

LLVM cannot vectorise a loop that calls libm's ``expf`` (no vector math library here), so a pass
with two exponentials per element (the affine coupling maps: the soft clamp and the scale) ran
scalar. ``exp32`` is Cephes' single-precision scheme written with plain arithmetic: n = round(x
log2 e), r = x - n ln 2 (in two parts), a degree-7 polynomial for e^r, and 2^n built from its
exponent bits; every step stays in float32 (``np.floor``: ``math.floor`` returns an integer and
drags the polynomial into float64, half the lanes and a float64 division after it), so a loop of
it vectorises over 8 float32 lanes. Measured against float64 ``exp`` on [-87, 88]: at most 1 ulp
(relative 8.1e-8). The CNF's tanh uses it. ``exp32_wide`` is the same scheme in float64 (what
``exp32`` computed until session 10, by accident): the affine coupling maps keep it, as their
float32 routes need its accuracy (see there).

It clamps its argument to [-87, 88] (the normal float32 range of the result), so it is meant
for arguments that are bounded or whose saturation is harmless: the soft clamp's e^{2u} (any
value past the clamp gives the same +-bound) and e^{+-ls} with |ls| < bound. NaN propagates.
CPU only: the CUDA kernels call the device's ``exp``, whose results agree to float32 rounding.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

__all__ = ["exp32", "exp32_wide", "softclamp32"]


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose bit pattern is the int32 ``bits`` (a bit cast: vectorises)."""
    if bits != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


_LOG2E = np.float32(1.44269504088896341)
_LN2_HI = np.float32(0.693359375)  # ln 2 = _LN2_HI + _LN2_LO, _LN2_HI exact in few bits
_LN2_LO = np.float32(-2.12194440e-4)
_HI = np.float32(88.0)
_LO = np.float32(-87.0)
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)
_P0 = np.float32(1.9875691500e-4)
_P1 = np.float32(1.3981999507e-3)
_P2 = np.float32(8.3334519073e-3)
_P3 = np.float32(4.1665795894e-2)
_P4 = np.float32(1.6666665459e-1)
_P5 = np.float32(5.0000001201e-1)


@njit(cache=True, inline="always", error_model="numpy")
def _exp_scheme(x, fx):
    """e^x for a float32 x clamped to [-87, 88], given fx = round(x log2 e); fx's type (float32 or
    float64) sets the precision of the reduction and the polynomial."""
    r = x - fx * _LN2_HI - fx * _LN2_LO
    y = _P0 * r + _P1
    y = y * r + _P2
    y = y * r + _P3
    y = y * r + _P4
    y = y * r + _P5
    y = y * (r * r) + r + _ONE
    n = np.int32(fx) + np.int32(127)  # in [1, 254]: a normal float32 exponent
    return y * _float32_from_bits(np.int32(n << np.int32(23)))


@njit(cache=True, inline="always", error_model="numpy")
def _clamp(x):
    x = _HI if x > _HI else x  # NaN passes both tests
    return _LO if x < _LO else x


@njit(cache=True, inline="always", error_model="numpy")
def exp32(x):
    """e^x for a float32 x, clamped to [-87, 88], all in float32 (see the module docstring)."""
    x = _clamp(x)
    return _exp_scheme(x, np.floor(x * _LOG2E + _HALF))


@njit(cache=True, inline="always", error_model="numpy")
def exp32_wide(x):
    """e^x for a float32 x by ``exp32``'s scheme with the reduction and the polynomial in float64
    (a float64 result): 8 lanes and a float64 rounding, for the affine coupling maps. Their
    float32 routes must agree with float64 to 1e-4 through deep image chains
    (tests/test_contract.py::test_float32_matches_float64), which all-float32 arithmetic misses:
    2e-4 with ``exp32``, 2.5e-4 with libm's expf (measured, session 10)."""
    x = _clamp(x)
    return _exp_scheme(x, np.float64(np.floor(x * _LOG2E + _HALF)))


@njit(cache=True, inline="always", error_model="numpy")
def softclamp32(h, bound):
    """``_scalar.softclamp`` (bound tanh(h / bound)) with ``exp32_wide``: the same formula."""
    u = h / bound
    return bound - (bound + bound) / (exp32_wide(u + u) + _ONE)
