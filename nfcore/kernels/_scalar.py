"""Element math written once, as ``@njit`` scalar functions.

Both backends call these: the CPU kernels from their loops and the CUDA kernels from
their threads (numba compiles an ``@njit`` function for the CUDA target when a
``@cuda.jit`` kernel calls it).

Activations come in pairs ``<name>(x, alpha) -> y`` and ``<name>_vjp(g, y, alpha) -> g * phi'(x)``:
the derivative is written through the *output* ``y``, so a layer keeps only its output for
backward (tinygrad's habit). Kernels on both backends select the activation by an integer code
through ``act_fwd`` / ``act_vjp`` (on a GPU a warp-uniform branch); one table of codes
(``ACT_*``) serves every family, the residual family's second-derivative activations
(``ACT_LIPSWISH``) included. Every function keeps its argument's dtype: no float literal is
mixed into float32 math where it would promote.
"""

import functools
import math
import types

from numba import config, njit
from numba.core.dispatcher import Dispatcher

__all__ = [
    "ACT_IDENTITY",
    "ACT_RELU",
    "ACT_LEAKY_RELU",
    "ACT_TANH",
    "ACT_ELU",
    "ACT_SOFTPLUS",
    "ACT_LIPSWISH",
    "ACT_SWISH",
    "act_fwd",
    "act_vjp",
    "softclamp",
    "softclamp_grad",
    "for_cuda",
    "device_maths",
    "element",
]

ACT_IDENTITY = 0
ACT_RELU = 1
ACT_LEAKY_RELU = 2
ACT_TANH = 3
ACT_ELU = 4
ACT_SOFTPLUS = 5
#: LipSwish h sigmoid(beta h) / 1.1: only the residual family's ``act2`` (with phi', phi'') takes it
ACT_LIPSWISH = 6
#: swish h sigmoid(h): only the continuous flows' dynamics (``ode.math.smooth_act``) take it
ACT_SWISH = 7

_jit = njit(cache=True, inline="always", error_model="numpy")
#: how element maths compiles (every family's): inlined into the CPU loops, callable from CUDA threads
element = _jit


@_jit
def identity(x, alpha):
    return x


@_jit
def identity_vjp(g, y, alpha):
    return g


@_jit
def relu(x, alpha):
    return x if x > 0 else x - x


@_jit
def relu_vjp(g, y, alpha):
    return g if y > 0 else g - g


@_jit
def leaky_relu(x, alpha):
    return x if x > 0 else alpha * x


@_jit
def leaky_relu_vjp(g, y, alpha):
    # alpha > 0 keeps the sign of the output equal to the sign of the input
    return g if y > 0 else alpha * g


@_jit
def tanh(x, alpha):
    return math.tanh(x)


@_jit
def tanh_vjp(g, y, alpha):
    return g - g * y * y


@_jit
def elu(x, alpha):
    return x if x > 0 else alpha * math.expm1(x)


@_jit
def elu_vjp(g, y, alpha):
    # for x <= 0: phi'(x) = alpha e^x = y + alpha
    return g if y > 0 else g * (y + alpha)


@_jit
def softplus(x, alpha):
    # log(1 + e^x) without overflow or cancellation
    if x > 0:
        return x + math.log1p(math.exp(-x))
    return math.log1p(math.exp(x))


@_jit
def softplus_vjp(g, y, alpha):
    # phi'(x) = sigmoid(x) = 1 - e^{-y}
    return -g * math.expm1(-y)


@_jit
def act_fwd(x, code, alpha):
    """y = phi(x) for the activation ``code``."""
    if code == 1:
        return relu(x, alpha)
    if code == 2:
        return leaky_relu(x, alpha)
    if code == 3:
        return tanh(x, alpha)
    if code == 4:
        return elu(x, alpha)
    if code == 5:
        return softplus(x, alpha)
    return x


@_jit
def act_vjp(g, y, code, alpha):
    """g * phi'(x), written through y = phi(x)."""
    if code == 1:
        return relu_vjp(g, y, alpha)
    if code == 2:
        return leaky_relu_vjp(g, y, alpha)
    if code == 3:
        return tanh_vjp(g, y, alpha)
    if code == 4:
        return elu_vjp(g, y, alpha)
    if code == 5:
        return softplus_vjp(g, y, alpha)
    return g


@_jit
def softclamp(h, bound):
    """log s = bound * tanh(h / bound): ~h near 0, never outside (-bound, bound).

    tanh(u) = 1 - 2 / (exp(2u) + 1): one exp and no branch (a quarter of libm's tanh; exp
    overflowing to inf still gives +-1). Its absolute error is one ulp of 1,
    which is all a log-scale that is added to others needs; forward and inverse compute it
    identically, so round trips stay exact. Written without int literals, which would
    promote float32 math to float64.
    """
    u = h / bound
    return bound - (bound + bound) / (math.exp(u + u) + bound / bound)


@_jit
def softclamp_grad(logscale, bound):
    """d softclamp / dh written through its output: 1 - (log s / bound)^2."""
    r = logscale / bound
    return 1 - r * r


def for_cuda(fn):
    """A shared ``@njit`` function as a CUDA kernel must call it.

    On a GPU (and when compiling to PTX): the function itself, which numba-cuda compiles for
    the device. Under the simulator: a pure-Python copy whose globals are pure-Python copies
    too, as a simulated device function is: simulated kernels pass array stand-ins that
    compiled CPU code cannot unbox, and a kernel then never depends on CPU compilation.
    """
    return _pure_python(fn) if config.ENABLE_CUDASIM else fn


def device_maths(module):
    """A family's element maths as its CUDA kernels call it (``_maths.affine_map_row(...)``).

    On a GPU (and when compiling to PTX): the module itself; numba-cuda compiles the ``@njit``
    functions that a kernel reaches through it for the device. Under the simulator: a stand-in
    module whose functions are the pure-Python copies of ``for_cuda``.
    """
    return _SimulatedMaths(module) if config.ENABLE_CUDASIM else module


class _SimulatedMaths(types.ModuleType):
    def __init__(self, module):
        super().__init__(module.__name__)
        self._module = module

    def __getattr__(self, name):
        value = getattr(self._module, name)
        return _pure_python(value) if isinstance(value, Dispatcher) else value


@functools.cache
def _pure_python(fn):
    py = fn.py_func
    env = dict(py.__globals__)
    for name in py.__code__.co_names:  # only the globals this function uses
        value = env.get(name)
        if isinstance(value, Dispatcher) and value is not fn:
            env[name] = _pure_python(value)
    return types.FunctionType(py.__code__, env, py.__name__, py.__defaults__, py.__closure__)
