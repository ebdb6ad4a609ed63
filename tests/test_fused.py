"""Fused layers (nfcore/kernels/fused): the same numbers as the op-by-op path, which is their reference.

The contract test (tests/test_contract.py) checks the fused layers and runs against finite
differences and slogdet like every transform; here whole flows compare the fused path with the
op-by-op one, and the choice of path is pinned down.
"""

import numpy as np
import pytest

import nfcore
from nfcore.transforms._fused import FusedRun
from nfcore.transforms.autoregressive import _Autoregressive
from nfcore.transforms.coupling import AffineCoupling, Coupling

FLOWS = {
    "realnvp": {"flow": "realnvp", "dim": 5, "layers": 4, "hidden": [7, 6]},
    "realnvp-context-tanh": {"flow": "realnvp", "dim": 3, "layers": 3, "hidden": [6], "context_dim": 2,
                             "activation": "tanh"},
    "nice": {"flow": "nice", "dim": 4, "layers": 3, "hidden": [6]},
    "realnvp-permute": {"flow": "realnvp", "dim": 4, "layers": 3, "hidden": [6], "permute": "random"},
    "maf": {"flow": "maf", "dim": 4, "layers": 2, "hidden": [8, 8]},
    "maf-3-tanh": {"flow": "maf", "dim": 3, "layers": 3, "hidden": [6], "activation": "tanh"},
    "iaf": {"flow": "iaf", "dim": 4, "layers": 3, "hidden": [8, 8], "base": "diag"},
    "maf-context": {"flow": "maf", "dim": 3, "layers": 2, "hidden": [6], "context_dim": 2},
}


def _gaussian_target(x):
    return -0.5 * np.sum(x**2, axis=1), -x


def _everything(flow, x, c, rng):
    """Loss, every gradient, log p and a seeded sample with its log p, as one list of arrays (an IAF,
    whose density direction has no gradient: the reverse-KL loss and gradient, through sampling)."""
    flow.zero_grad()
    if flow.config["flow"] == "iaf":
        loss = flow.reverse_kl_loss_and_grad(_gaussian_target, x.shape[0], seed=2, context=c, workers=1)
    else:
        loss = flow.loss_and_grad(x, c, workers=1)
    xs, lps = flow.sample_and_log_prob(x.shape[0], c, seed=1, workers=1)
    return [np.array([loss]), flow.log_prob(x, c, workers=1), xs, lps, *(p.grad.copy() for p in flow.parameters())]


@pytest.fixture
def op_by_op(monkeypatch):
    """Switch every layer to the op-by-op path for the duration (the class attributes)."""
    def switch(on):
        monkeypatch.setattr(Coupling, "fused", not on)
        monkeypatch.setattr(_Autoregressive, "fused", False if on else True)
    return switch


@pytest.mark.parametrize("name", sorted(FLOWS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fused_path_equals_op_by_op(name, dtype, op_by_op, rng):
    flow = nfcore.build({**FLOWS[name], "dtype": dtype})
    for p in flow.parameters():  # away from the zero-initialised output layers
        p.data[...] += rng.normal(size=p.data.shape).astype(dtype) * 0.3
    x = rng.normal(size=(13, flow.shape[0])).astype(dtype)
    c = rng.normal(size=(13, flow.context_dim)).astype(dtype) if flow.context_dim else None
    op_by_op(True)
    want = _everything(flow, x, c, rng)
    op_by_op(False)
    got = _everything(flow, x, c, rng)
    tol = 1e-13 if dtype == "float64" else 2e-6
    for a, b in zip(got, want):
        assert np.max(np.abs(a - b)) <= tol * max(1.0, float(np.max(np.abs(b))))


def test_which_path_runs(rng):
    """Consecutive couplings of one kind: one run; a permutation between them: one call per layer;
    a residual or wide conditioner, or fused = False: op by op."""
    x = rng.normal(size=(4, 4))

    def segments(cfg):
        chain = nfcore.build(cfg).transform
        return [type(s).__name__ for s in chain._segments(x, inverse=False)]

    assert segments(FLOWS["realnvp"] | {"dim": 4}) == ["FusedRun"]
    assert segments(FLOWS["nice"]) == ["FusedRun", "Scaling"]
    permuted = segments(FLOWS["realnvp-permute"])
    assert "FusedRun" not in permuted and permuted.count("AffineCoupling") == 3
    layer = AffineCoupling(np.array([0, 1, 0, 1], bool), hidden=[6], residual=False, rng=0)
    _, _, cache = layer.forward(x)
    assert type(cache.net).__name__ == "FusedCache"
    for wide in (AffineCoupling(np.array([0, 1, 0, 1], bool), hidden=[129], rng=0),
                 AffineCoupling(np.array([0, 1, 0, 1], bool), hidden=[6, 6, 6], residual=True, rng=0)):
        _, _, cache = wide.forward(x)
        assert type(cache.net).__name__ == "MLPCache"
    layer.fused = False
    assert type(layer.forward(x)[2].net).__name__ == "MLPCache"


def test_a_patched_or_subclassed_layer_keeps_its_own_calls(rng):
    """A run bypasses the layers' forward: a layer whose instance replaces it, or a subclass, stays
    out of the run (so a wrapper or a test's patch is called), and the memo notices a late patch."""
    flow = nfcore.build(FLOWS["realnvp"] | {"dim": 4})
    chain = flow.transform
    x = rng.normal(size=(6, 4))
    assert [type(s).__name__ for s in chain._segments(x, False)] == ["FusedRun"]
    calls = []
    layer = chain.transforms[1]
    plain = type(layer).forward

    def wrapped(self, h, context=None, need_grad=True):
        calls.append(1)
        return plain(self, h, context, need_grad)

    layer.forward = wrapped.__get__(layer)
    segments = [type(s).__name__ for s in chain._segments(x, False)]
    assert segments == ["AffineCoupling", "AffineCoupling", "FusedRun"]
    flow.log_prob(x)
    assert calls == [1]

    class Mine(AffineCoupling):
        pass

    mine = Mine(np.array([0, 1, 0, 1], bool), hidden=[6], rng=0)
    assert nfcore.transforms._fused._run_key(mine, x) is None


def test_a_fused_run_backward_accumulates_like_the_layers(rng):
    """Gradients are added (the contract): two backward passes give twice one."""
    flow = nfcore.build(FLOWS["realnvp"])
    for p in flow.parameters():
        p.data[...] += rng.normal(size=p.data.shape) * 0.3
    x = rng.normal(size=(9, 5))
    assert isinstance(flow.transform._segments(x, False)[0], FusedRun)
    flow.zero_grad()
    flow.loss_and_grad(x, workers=1)
    once = [p.grad.copy() for p in flow.parameters()]
    flow.loss_and_grad(x, workers=1)
    for p, g in zip(flow.parameters(), once):
        assert np.allclose(p.grad, 2 * g, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("blocked", [False, True])
def test_products_in_row_blocks_change_nothing(blocked, op_by_op, monkeypatch, rng):
    """Past OpenBLAS's small-matrix size (64x64 layers over 300 rows: blocks of 240 rows) the fused
    path's products and weight gradients run in row blocks (the forward ones when BLAS runs one
    thread, forced here both ways); the op-by-op weight gradients too. The same numbers."""
    from nfcore.kernels.dense.cpu import block_rows
    from nfcore.transforms import _fused

    assert block_rows(300, 64, 64) == 240
    flow = nfcore.build({"flow": "realnvp", "dim": 2, "layers": 2, "hidden": [64, 64], "dtype": "float64"})
    for p in flow.parameters():
        p.data[...] += rng.normal(size=p.data.shape) * 0.1
    x = rng.normal(size=(300, 2))
    op_by_op(True)
    want = _everything(flow, x, None, rng)
    op_by_op(False)
    monkeypatch.setattr(_fused, "_blocked", lambda: blocked)
    got = _everything(flow, x, None, rng)
    for a, b in zip(got, want):
        assert np.max(np.abs(a - b)) <= 1e-12 * max(1.0, float(np.max(np.abs(b))))


@pytest.mark.parametrize("name", ["realnvp", "realnvp-context-tanh", "nice"])
def test_density_and_sample_in_tiles_of_rows(name, op_by_op, monkeypatch, rng):
    """A fused run's density and sampling calls map ``EVAL_TILE_ROWS`` rows at a time: tiles of 5
    rows over 13 (the last one short) give the op-by-op numbers, and the gradient call (one tile)
    still reads the right workspace."""
    from nfcore.transforms import _fused

    flow = nfcore.build({**FLOWS[name], "dtype": "float64"})
    for p in flow.parameters():
        p.data[...] += rng.normal(size=p.data.shape) * 0.3
    x = rng.normal(size=(13, flow.shape[0]))
    c = rng.normal(size=(13, flow.context_dim)) if flow.context_dim else None
    assert isinstance(flow.transform._segments(x, False)[0], FusedRun)
    op_by_op(True)
    want = _everything(flow, x, c, rng)
    op_by_op(False)
    monkeypatch.setattr(_fused, "EVAL_TILE_ROWS", 5)
    got = _everything(flow, x, c, rng)
    for a, b in zip(got, want):
        assert np.max(np.abs(a - b)) <= 1e-13 * max(1.0, float(np.max(np.abs(b))))


def test_density_scratch_does_not_grow_with_the_rows():
    """log_prob and sample of a fused run allocate O(N) for their results only: 4x the rows (past
    one tile) adds ~40 bytes a row, not the 4.3 KB of every layer's activations a row."""
    import tracemalloc

    from nfcore.kernels.array import memory

    flow = nfcore.build({"flow": "realnvp", "dim": 2, "layers": 8, "hidden": [64, 64], "dtype": "float32"})
    x = np.random.default_rng(0).normal(size=(8192, 2)).astype(np.float32)
    flow.log_prob(x[:64], workers=1)
    flow.sample(64, seed=0, workers=1)

    def peak(call):
        memory.release()
        tracemalloc.start()
        try:
            call()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    for small, large in ((lambda: flow.log_prob(x[:2048], workers=1), lambda: flow.log_prob(x, workers=1)),
                         (lambda: flow.sample(2048, seed=0, workers=1), lambda: flow.sample(8192, seed=0, workers=1))):
        assert peak(large) - peak(small) < 6144 * 200


@pytest.mark.parametrize("rows", [0, 10, 11])
def test_a_fused_run_takes_any_layout_and_any_row_count(rows, monkeypatch, rng):
    """A Fortran-ordered input and context (a transform called directly, not through the Flow's
    validation), no rows, and rows an exact multiple of the tile or not: the numbers of the
    same rows in C order."""
    from nfcore.transforms import _fused

    monkeypatch.setattr(_fused, "EVAL_TILE_ROWS", 5)
    flow = nfcore.build({**FLOWS["realnvp-context-tanh"], "dtype": "float64"})
    for p in flow.parameters():
        p.data[...] += rng.normal(size=p.data.shape) * 0.3
    x = rng.normal(size=(rows, flow.shape[0]))
    c = rng.normal(size=(rows, flow.context_dim))
    for need_grad in (False, True):
        want = flow.transform.forward(x, c, need_grad=need_grad)[:2]
        got = flow.transform.forward(np.asfortranarray(x), np.asfortranarray(c), need_grad=need_grad)[:2]
        for a, b in zip(got, want):
            assert a.shape == b.shape and np.array_equal(a, b)
