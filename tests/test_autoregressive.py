"""MAF/IAF specifics: the fast sequential pass equals the naive one, on every backend path."""

import numpy as np
import pytest

import nfcore
from nfcore import gradcheck as gc
from nfcore.transforms import IAF, MAF

CASES = [
    {"order": "natural"},
    {"order": "random", "hidden_degrees": "random"},
    {"order": "reversed", "context_dim": 2, "activation": "tanh"},
]


@pytest.mark.parametrize("cls", [MAF, IAF])
@pytest.mark.parametrize("kw", CASES, ids=["natural", "random", "context"])
def test_fast_sequential_equals_naive(cls, kw):
    t = cls(5, [23, 17], rng=3, **kw)  # 23 and 17 units: degree groups of uneven size
    gc.randomize_parameters(t, seed=1)
    x = np.random.default_rng(0).normal(size=(37, 5))  # 37 rows: a ragged last tile
    c = np.random.default_rng(1).normal(size=(37, 2)) if "context_dim" in kw else None
    expand = cls is MAF
    ref, ref_ld = t._sequential_naive(x, c, expand)
    out, ld = t._sequential_fast(x, c, expand)  # the CPU kernel (its CUDA twin: tests/cuda_parity_script.py)
    assert np.max(np.abs(out - ref)) < 1e-12
    assert np.max(np.abs(ld - ref_ld)) < 1e-12
    # and the public direction uses it and inverts the one-pass direction
    seq = t.inverse if expand else t.forward
    one = t.forward if expand else t.inverse
    y, _, _ = one(x, c)
    back, _, _ = seq(y, c)
    assert np.max(np.abs(back - x)) < 1e-10


def test_float32_sequential_keeps_dtype():
    flow = nfcore.build({"flow": "maf", "dim": 4, "layers": 2, "hidden": [16, 16], "dtype": "float32"})
    x = flow.sample(9, seed=0)
    assert x.dtype == np.float32 and np.all(np.isfinite(x))
