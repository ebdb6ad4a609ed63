"""Property-based tests (hypothesis): random configurations of every family keep their contract.

Each example builds a random model (family, dimensions, depths, widths, masks, permutations,
dtype, batch size down to 1), randomises its parameters and checks: finite log-densities, the
round trip through the transform, the log-det against ``slogdet`` of the full Jacobian (float64),
and that a save/load round trip gives the same log-densities.
"""

import os
import tempfile

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nfcore
from nfcore import gradcheck as gc

#: derandomized: the same examples on every run and machine (CI stays reproducible), no database
SETTINGS = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def vector_configs(draw):
    flow = draw(st.sampled_from(["realnvp", "nice", "maf", "iaf", "resflow", "iresnet"]))
    cfg = {
        "flow": flow,
        "dim": draw(st.integers(2, 5)),
        "layers": draw(st.integers(1, 3)),
        "hidden": draw(st.lists(st.integers(1, 8), min_size=1, max_size=2)),
        "dtype": draw(st.sampled_from(["float32", "float64"])),
        "seed": draw(st.integers(0, 1000)),
    }
    if flow in ("realnvp", "nice"):
        cfg["mask"] = draw(st.sampled_from(["alternating", "half", "random"]))
        cfg["permute"] = draw(st.sampled_from(["none", "reverse", "random"]))
    if flow in ("maf", "iaf"):
        cfg["order"] = draw(st.sampled_from(["alternate", "natural", "reversed", "random"]))
        cfg["batch_norm"] = flow == "maf" and draw(st.booleans())
    if flow not in ("resflow", "iresnet"):
        cfg["base"] = draw(st.sampled_from(["normal", "diag"]))
    return cfg


@st.composite
def image_configs(draw):
    side = draw(st.sampled_from([2, 4]))
    return {
        "flow": draw(st.sampled_from(["glow", "realnvp"])),
        "shape": [side, draw(st.sampled_from([2, 4])) if side == 4 else 2, draw(st.integers(1, 2))],
        "scales": draw(st.integers(1, 2 if side == 4 else 1)),
        "layers": draw(st.integers(1, 2)),
        "hidden": [draw(st.integers(2, 4))],
        "dtype": draw(st.sampled_from(["float32", "float64"])),
        "seed": draw(st.integers(0, 1000)),
    }


def _check(cfg, n, seed):
    if cfg.get("shape") and cfg["shape"][1] % 2 ** cfg["scales"]:
        cfg["scales"] = 1
    flow = nfcore.build(cfg)
    gc.randomize_parameters(flow, 0.1, seed)
    flow.eval()
    dtype = np.dtype(cfg["dtype"])
    x = np.random.default_rng(seed).normal(size=(n, *flow.shape)).astype(dtype)
    lp = np.asarray(flow.log_prob(x))
    assert lp.shape == (n,) and np.all(np.isfinite(lp)), cfg
    tol = 1e-8 if dtype == np.float64 else 2e-3
    z, ld, _ = flow.transform.forward(x, need_grad=False)
    back, ild, _ = flow.transform.inverse(z, need_grad=False)
    assert np.max(np.abs(np.asarray(back) - x)) < tol * (1 + np.max(np.abs(x))), cfg
    assert np.max(np.abs(np.asarray(ld) + np.asarray(ild))) < tol * (1 + np.max(np.abs(ld))), cfg
    if dtype == np.float64 and np.prod(flow.shape) <= 8:
        assert gc.check_logdet(flow.transform, x[:2]) < 1e-6, cfg
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.npz")
        nfcore.save(path, flow)
        np.testing.assert_array_equal(np.asarray(nfcore.load(path).log_prob(x)), lp)


@SETTINGS
@given(cfg=vector_configs(), n=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_random_vector_flows_keep_the_contract(cfg, n, seed):
    _check(cfg, n, seed)


@SETTINGS
@given(cfg=image_configs(), n=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_random_image_flows_keep_the_contract(cfg, n, seed):
    _check(cfg, n, seed)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_corrupted_checkpoint_bytes_always_give_the_checkpoint_error(data):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.npz")
        nfcore.save(path, nfcore.build({"flow": "maf", "dim": 3, "layers": 2, "hidden": [4], "order": "random"}))
        raw = bytearray(open(path, "rb").read())
        for _ in range(data.draw(st.integers(1, 6))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        cut = data.draw(st.one_of(st.none(), st.integers(0, len(raw))))
        open(path, "wb").write(bytes(raw if cut is None else raw[:cut]))
        try:
            flow = nfcore.load(path)
        except nfcore.errors.CheckpointError:
            return
        assert np.all(np.isfinite(np.asarray(flow.log_prob(np.zeros((2, 3))))))
