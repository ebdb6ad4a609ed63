"""The op registry: every op is recorded by name and backend where it is defined.

A family package ``nfcore.kernels.<family>`` holds its element maths in ``math.py``, its CPU
ops in ``cpu.py`` (marked ``@cpu_op``, or ``@cpu_kernel`` for a compiled loop) and their CUDA
twins in ``cuda.py`` (marked ``@cuda_op``), which ends with the inputs its ops' parity checks
run on (``parity_cases``, see ``nfcore.kernels.parity``): an op lives in those three files.
``build(backend)`` imports that module of every family (``cuda.py`` only when the CUDA backend
is built) and returns a ``Backend``: an object whose attributes are the ops, the one that
layers get from ``backend_of(array)``. No list of op names is kept by hand;
``tests/test_registry.py`` fails when an op has no twin on the other backend or no parity
case, unless it is recorded as CPU-only (``cpu_only_kernel``: the fused runs of coupling layers,
which have the op-by-op path as their reference instead).
"""

import importlib
import importlib.util
import pkgutil

from numba import njit

__all__ = ["Backend", "build", "cpu_kernel", "cpu_only", "cpu_only_kernel", "cpu_op", "cuda_op", "families", "ops"]

BACKENDS = ("cpu", "cuda")
_OPS = {backend: {} for backend in BACKENDS}
_CPU_ONLY = set()  # ops with no CUDA twin by design (cpu_only_kernel)


def _record(backend, fn):
    name = fn.__name__
    known = _OPS[backend].get(name)
    if known is not None and known is not fn:
        raise RuntimeError(f"op {name!r} is defined twice for {backend}: in {known.__module__} and {fn.__module__}")
    _OPS[backend][name] = fn
    return fn


def cpu_op(fn):
    """Record ``fn`` (a function or an ``@njit`` dispatcher) as the CPU op of its name."""
    return _record("cpu", fn)


def cpu_kernel(fn):
    """``cpu_op`` of ``fn`` compiled as nfcore's CPU kernels are: cached on disk, numpy's error
    model (no zero-division branch, so loops vectorise), the GIL released while they run."""
    return cpu_op(njit(cache=True, nogil=True, error_model="numpy")(fn))


def cpu_only_kernel(fn):
    """``cpu_kernel`` of an op that has no CUDA twin by design: the fused runs of coupling layers
    (``fused.cpu.chain_map``), which layers call on CPU arrays only (on a GPU each layer takes
    ``net_map``'s twin). ``cpu_only()`` lists them."""
    op = cpu_kernel(fn)
    _CPU_ONLY.add(fn.__name__)
    return op


def cpu_only():
    """The names of the CPU ops without a CUDA twin by design (``cpu_only_kernel``), sorted."""
    ops("cpu")
    return sorted(_CPU_ONLY)


def cuda_op(fn):
    """Record ``fn`` as the CUDA op of its name (the twin of the CPU op of the same name)."""
    return _record("cuda", fn)


def families():
    """The names of the op families: the sub-packages of ``nfcore.kernels``."""
    from . import __path__ as here

    return sorted(m.name for m in pkgutil.iter_modules(here) if m.ispkg)


def ops(backend):
    """{name: function} of every op of ``backend`` ("cpu" or "cuda"), importing what defines them."""
    for family in families():
        name = f"{__package__}.{family}.{backend}"
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)
    return dict(_OPS[backend])


class Backend:
    """One backend's ops as attributes (``backend.matmul(a, b, out)``), and its ``name``.

    ``__all__`` lists the op names, sorted. Attributes may be replaced (a test's monkeypatch).
    """

    def __init__(self, name, table):
        self.name = name
        self.__all__ = sorted(table)
        self.__dict__.update(table)

    def __repr__(self):
        return f"<nfcore backend {self.name!r}: {len(self.__all__)} ops>"

    def __getattr__(self, attr):  # only called for a missing attribute
        raise AttributeError(f"backend {self.name!r} has no op {attr!r}")


def build(backend):
    """The ``Backend`` of ``backend`` built from the registry."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    return Backend(backend, ops(backend))
