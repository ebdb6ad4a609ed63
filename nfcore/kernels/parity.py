"""The inputs of the CPU/CUDA parity checks, kept beside each family's CUDA launches.

Each family's ``cuda.py`` ends with ``parity_cases(c)``: {op name: [(label, args, indices of
the args that are outputs)]}, the variants on which ``tests/cuda_parity_script.py`` runs each of
its ops and the CPU twin of the same name (fresh copies of the same inputs, both dtypes), so an
op is added in its family's three files and nowhere else. ``c`` is a ``ParityInputs``: the dtype,
a seeded generator, the sizes (``Sizes``, from the launch settings) and array helpers;
write-only outputs start as NaN (``c.nan``) so that an element a kernel misses shows up. Scalars
pass unchanged. Importing a ``cuda.py`` launches nothing and needs no GPU.
"""

import importlib
import importlib.util

import numpy as np

from . import registry

__all__ = ["ACTS", "ParityInputs", "Sizes", "op_cases"]

#: (activation code, alpha) of every activation of the dense ops (``_scalar``'s codes)
ACTS = [(0, 0.0), (1, 0.0), (2, 0.1), (3, 0.0), (4, 1.0), (5, 0.0)]


class Sizes:
    """Problem sizes derived from the launch settings: several blocks, chunks and tiles each."""

    def __init__(self, tpb, chunk, tile):
        self.n = 2 * tpb + 1  # rows of one-thread-per-row kernels: three blocks, the last one ragged
        self.d = 5
        self.cols = tpb + 1  # columns of column reductions: two blocks
        self.rows = max(2 * chunk + 1, chunk * chunk + 2)  # chunk sums that are reduced in chunks again
        self.flat = 3 * tpb + 1
        self.gemm = (tile + 3, 2 * tile + 1, tile + 2)  # (N, K, M): ragged in every direction


class ParityInputs:
    """What a family's ``parity_cases`` builds its inputs from: ``dt`` (np.float32 or np.float64),
    ``rng``, the sizes ``s`` and ``n, d = s.n, s.d``."""

    def __init__(self, rng, dt, sizes):
        self.rng, self.dt, self.s = rng, dt, sizes
        self.n, self.d = sizes.n, sizes.d

    def r(self, *shape, scale=1.0):
        """N(0, scale^2) draws of the dtype."""
        return (scale * self.rng.normal(size=shape)).astype(self.dt)

    def u(self, *shape, low=0.0, high=1.0):
        """Uniform draws on [low, high) of the dtype."""
        return self.rng.uniform(low, high, size=shape).astype(self.dt)

    def nan(self, *shape):
        """An output buffer filled with NaN."""
        return np.full(shape, np.nan, dtype=self.dt)


def op_cases(rng, dt, sizes):
    """{op name: variants} of every family's ``parity_cases`` (families in name order)."""
    c = ParityInputs(rng, dt, sizes)
    cases = {}
    for family in registry.families():
        name = f"{__package__}.{family}.cuda"
        if importlib.util.find_spec(name) is None:
            continue
        make = getattr(importlib.import_module(name), "parity_cases", None)
        if make is None:
            continue
        for op, variants in make(c).items():
            if op in cases:
                raise RuntimeError(f"op {op!r} has parity cases in two families")
            cases[op] = variants
    return cases
