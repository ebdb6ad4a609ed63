"""The image wheels beyond the contract loop: naive references for the kernels, Conv2d's
gradients, actnorm's initialisation and its checkpoint, dequantisation, bad input, and a
short Glow fit on the digits."""

import numpy as np
import pytest

import nfcore
from nfcore import gradcheck as gc
from nfcore.data import load_digit_images
from nfcore.errors import ConfigError, DataError, InputOutsideDomain, ShapeError
from nfcore.kernels import cpu
from nfcore.nn import Conv2d, ConvNet
from nfcore.transforms import ActNorm, Dequantize, InvConv1x1LU, Squeeze


def naive_conv_same(x, w, b, k):
    """Direct 'same' convolution (cross-correlation) with w of shape (k k C_in, C_out)."""
    n, h, wd, c = x.shape
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    wk = w.reshape(k, k, c, -1)
    out = np.zeros((n, h, wd, w.shape[1])) + b
    for a in range(k):
        for bb in range(k):
            out += np.einsum("nhwc,co->nhwo", xp[:, a : a + h, bb : bb + wd], wk[a, bb])
    return out


@pytest.mark.parametrize("k, cin, cout", [(1, 3, 4), (3, 3, 4), (5, 3, 4), (3, 5, 2), (5, 4, 3)])
def test_conv2d_matches_a_direct_convolution(k, cin, cout, rng):
    """Both strategies: im2col of the input (C_in <= C_out) and taps on the output (C_in > C_out)."""
    conv = Conv2d(cin, cout, k, rng=1)
    assert conv.output_side == (k > 1 and cin > cout)
    gc.randomize_parameters(conv, seed=2)
    x = rng.normal(size=(2, 5, 6, cin))
    y, _ = conv.forward(x)
    want = naive_conv_same(x, conv.linear.weight.data, conv.linear.bias.data, k)
    assert np.max(np.abs(y - want)) < 1e-12


def test_col2im_is_the_adjoint_of_im2col(rng):
    x = rng.normal(size=(2, 4, 5, 3))
    col = np.empty((40, 27))
    cpu.im2col(x, 3, col)
    d = rng.normal(size=col.shape)
    dx = np.zeros_like(x)
    cpu.col2im_acc(d, 3, dx)
    assert abs(np.sum(col * d) - np.sum(x * dx)) < 1e-10


@pytest.mark.parametrize("activation", ["identity", "relu", "tanh", "elu", "softplus"])
@pytest.mark.parametrize("k, cin, cout", [(1, 2, 3), (3, 2, 3), (3, 4, 2)])
def test_conv2d_gradients(activation, k, cin, cout, rng):
    conv = Conv2d(cin, cout, k, activation=activation, rng=0)
    gc.randomize_parameters(conv, seed=1)
    result = gc.check_module(conv, rng.normal(size=(2, 4, 3, cin)))
    result.assert_ok(1e-6)
    assert all(v > 0 for v in result.norms.values())


def test_convnet_gradients(rng):
    net = ConvNet(2, 4, hidden=[3, 5], activation="tanh", rng=0)
    gc.randomize_parameters(net, seed=3)
    gc.check_module(net, rng.normal(size=(2, 4, 4, 2))).assert_ok(1e-6)


def test_squeeze_channel_order(rng):
    x = rng.normal(size=(2, 4, 6, 3))
    z, _, _ = Squeeze((4, 6, 3)).forward(x)
    # numpy reference of the documented order: group 2a+b holds pixel (2i+a, 2j+b)
    want = x.reshape(2, 2, 2, 3, 2, 3).transpose(0, 1, 3, 2, 4, 5).reshape(2, 2, 3, 12)
    assert np.array_equal(z, want)


def test_lu_weight_composition():
    layer = InvConv1x1LU(5, rng=4)
    gc.randomize_parameters(layer, seed=5)
    perm = np.eye(5)[layer.perm.data]  # row i of P picks row perm[i]
    lower = np.tril(layer.lower.data, -1) + np.eye(5)
    upper = np.triu(layer.upper.data, 1) + np.diag(layer.sign.data * np.exp(layer.log_s.data))
    assert np.allclose(layer.weight(), perm @ lower @ upper, atol=1e-13)
    assert np.isclose(np.linalg.slogdet(layer.weight())[1], layer.log_s.data.sum())


def test_lu_gradients_stay_in_their_triangles(rng):
    layer = InvConv1x1LU((2, 2, 4), rng=0)
    z, ld, cache = layer.forward(rng.normal(size=(3, 2, 2, 4)))
    layer.backward(rng.normal(size=z.shape), rng.normal(size=3), cache)
    assert np.all(np.triu(layer.lower.grad) == 0) and np.all(np.tril(layer.upper.grad) == 0)


def test_actnorm_initialises_from_the_first_training_batch(rng):
    x = rng.normal(loc=3.0, scale=2.5, size=(16, 4, 4, 3)) * np.array([1.0, 0.1, 5.0])
    an = ActNorm((4, 4, 3))
    assert not an.is_initialized
    z, _, _ = an.forward(x)
    flat = z.reshape(-1, 3)
    assert np.allclose(flat.mean(0), 0, atol=1e-10) and np.allclose(flat.std(0), 1, atol=1e-5)
    before = an.log_scale.data.copy()
    an.forward(x * 7.0)  # a second batch does not re-initialise
    assert np.array_equal(an.log_scale.data, before)


def test_actnorm_in_eval_mode_does_not_initialise():
    an = ActNorm((2, 2, 1)).eval()
    an.forward(np.ones((2, 2, 2, 1)) * 4.0)
    assert not an.is_initialized


def test_a_reloaded_glow_is_never_reinitialised(tmp_path, rng):
    flow = nfcore.build({"flow": "glow", "shape": [4, 4, 1], "levels": 5, "layers": 1, "hidden": [4]})
    x = rng.integers(0, 5, size=(8, 4, 4, 1)).astype(np.float64)
    flow.zero_grad()
    flow.loss_and_grad(x)  # initialises every actnorm
    path = tmp_path / "glow.npz"
    nfcore.save(path, flow)
    loaded = nfcore.load(path).train()
    state = loaded.state_dict()
    loaded.zero_grad()
    loaded.loss_and_grad(x[:3] * 0 + 4)  # a very different batch in training mode
    after = loaded.state_dict()
    assert all(np.array_equal(after[k], state[k]) for k in state)
    assert all(t.is_initialized for t in loaded.modules() if isinstance(t, ActNorm))


def test_dequantize(rng):
    dq = Dequantize((2, 2, 1), levels=17, seed=0)
    x = rng.integers(0, 17, size=(50, 2, 2, 1)).astype(np.float64)
    y, ld, cache = dq.forward(x)
    assert np.all((y >= x / 17) & (y < (x + 1) / 17))
    assert np.allclose(ld, -4 * np.log(17))
    back, ld_inv, _ = dq.inverse(y)
    assert np.array_equal(back, x) and np.allclose(ld_inv, -ld)
    assert not np.array_equal(dq.forward(x)[0], y)  # fresh noise every call
    assert np.allclose(dq.backward(np.ones_like(y), ld, cache), 1 / 17)
    mid = Dequantize((2, 2, 1), levels=17, noise="midpoint")
    assert np.allclose(mid.forward(x)[0], (x + 0.5) / 17)


@pytest.mark.parametrize("bad", [17.0, -1.0, 2.5])
def test_dequantize_refuses_values_outside_the_levels(bad):
    x = np.zeros((2, 2, 2, 1))
    x[1, 0, 1, 0] = bad
    with pytest.raises(InputOutsideDomain, match="17 levels"):
        Dequantize((2, 2, 1), levels=17).forward(x)


def test_bad_image_input_is_refused():
    flow = nfcore.build({"flow": "glow", "shape": [4, 4, 1], "levels": 5, "layers": 1, "hidden": [4]})
    with pytest.raises(ShapeError, match=r"\(N, 4, 4, 1\)"):
        flow.log_prob(np.zeros((2, 4, 4)))  # wrong rank
    with pytest.raises(ShapeError):
        flow.log_prob(np.zeros((2, 4, 4, 2)))
    x = np.zeros((2, 4, 4, 1))
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(InputOutsideDomain, match="NaN"):
        flow.log_prob(x)
    with pytest.raises(InputOutsideDomain, match="levels"):
        flow.log_prob(np.full((2, 4, 4, 1), 9.0))
    with pytest.raises(ConfigError, match="divisible"):
        nfcore.build({"flow": "glow", "shape": [6, 6, 1], "scales": 2})
    with pytest.raises(ShapeError, match="even"):
        Squeeze((3, 4, 1))
    with pytest.raises(ConfigError):
        nfcore.build({"flow": "maf", "shape": [4, 4, 1]})


def test_load_images_checks(tmp_path, rng):
    from nfcore.data import load_images

    good = tmp_path / "good.npy"
    np.save(good, rng.integers(0, 256, size=(3, 4, 4)).astype(np.uint8))
    x, levels = load_images(good)
    assert x.shape == (3, 4, 4, 1) and levels == 256
    for name, arr, msg in [
        ("rank.npy", np.zeros((3, 4)), "shape"),
        ("frac.npy", np.full((2, 4, 4, 1), 0.5), "non-integer"),
        ("nan.npy", np.full((2, 4, 4, 1), np.nan), "NaN"),
    ]:
        np.save(tmp_path / name, arr)
        with pytest.raises(DataError, match=msg):
            load_images(tmp_path / name)
    with pytest.raises(DataError, match="outside"):
        load_images(good, levels=17)


def test_digits_split_is_fixed_and_disjoint():
    from nfcore.data import digits_split

    parts = [set(digits_split(s).tolist()) for s in ("train", "val", "test")]
    assert [len(p) for p in parts] == [1257, 180, 360]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert load_digit_images("test").max() == 16


def test_temperature_scales_the_base():
    flow = nfcore.build({"flow": "glow", "shape": [4, 4, 1], "layers": 1, "hidden": [4]})
    z1 = flow.base.sample(4000, np.random.default_rng(0))
    z7 = flow.base.sample(4000, np.random.default_rng(0), temperature=0.7)
    assert np.allclose(z7, 0.7 * z1)
    with pytest.raises(ConfigError):
        flow.sample(2, temperature=0.0)


def test_glow_learns_the_digits_quickly():
    """A few epochs of a small Glow on the digits: bits/dim falls well below the uniform 4.09."""
    tr, va = load_digit_images("train"), load_digit_images("val")
    flow = nfcore.build({"flow": "glow", "shape": [8, 8, 1], "levels": 17, "layers": 2, "hidden": [16, 16],
                         "dtype": "float32"})
    before = nfcore.bits_per_dim(flow, va.astype(np.float32))
    nfcore.fit(flow, tr.astype(np.float32), val_data=va.astype(np.float32), epochs=3, batch_size=64, lr=2e-3,
               log=None)
    after = nfcore.bits_per_dim(flow, va.astype(np.float32), draws=2)
    assert after < min(before, 3.6), (before, after)
    s = np.asarray(flow.sample(5, seed=0, temperature=0.7))
    assert s.shape == (5, 8, 8, 1) and np.all(s == np.floor(s)) and s.min() >= 0 and s.max() <= 16


@pytest.mark.parametrize("cfg", [
    {"flow": "glow", "shape": [4, 4, 2], "levels": 5, "layers": 2, "hidden": [4]},
    {"flow": "realnvp", "shape": [4, 4, 2], "levels": 5, "layers": 2, "hidden": [4], "coupling": "additive"},
    {"flow": "maf", "dim": 4, "layers": 3, "hidden": [8]},
    {"flow": "realnvp", "dim": 4, "layers": 3, "hidden": [8], "base": "diag"},
], ids=["glow", "realnvp-multiscale", "maf", "realnvp"])
def test_memory_saving_backward_gives_the_same_gradients(cfg):
    results = []
    for memory_saving in (False, True):
        flow = nfcore.build(dict(cfg, memory_saving=memory_saving))
        gc.randomize_parameters(flow, 0.1, seed=0)
        r = np.random.default_rng(1)
        x = r.integers(0, 5, size=(6, 4, 4, 2)).astype(float) if "shape" in cfg else r.normal(size=(6, 4))
        for t in flow.modules():
            if isinstance(t, Dequantize):
                t._rng = np.random.default_rng(5)  # the same noise in both runs
        flow.zero_grad()
        loss = flow.loss_and_grad(x)
        results.append((loss, {k: p.grad.copy() for k, p in flow.named_parameters()}))
    (loss0, g0), (loss1, g1) = results
    assert loss0 == loss1
    for k in g0:
        assert np.max(np.abs(g0[k] - g1[k])) <= 1e-10 * (1 + np.max(np.abs(g0[k]))), k


def test_memory_saving_refuses_batch_statistics():
    flow = nfcore.build({"flow": "maf", "dim": 3, "layers": 2, "hidden": [4], "batch_norm": True,
                         "memory_saving": True})
    with pytest.raises(ConfigError, match="exact inverses"):
        flow.loss_and_grad(np.random.default_rng(0).normal(size=(8, 3)))
