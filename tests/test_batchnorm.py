"""BatchNorm in training mode: the gradient through the batch statistics, running averages,
and the train/eval switching done by fit and load."""

import numpy as np
import pytest

import nfcore
from nfcore import gradcheck as gc
from nfcore.data import sample_toy
from nfcore.errors import ShapeError


def test_training_mode_gradient_through_batch_statistics():
    bn = nfcore.BatchNorm(3)
    gc.randomize_parameters(bn, seed=1)
    x = np.random.default_rng(0).normal(size=(6, 3)) * 2 + 1
    res = gc.check_transform(bn, x)  # every output depends on every input: the full-batch FD check
    res.assert_ok(1e-6)
    assert res.norms["input"] > 0 and res.norms["log_gamma"] > 0 and res.norms["beta"] > 0
    z, ld, _ = bn.forward(x, need_grad=False)
    # batch statistics: the output is normalised up to the learned affine
    zn = (z - bn.beta.data) / np.exp(bn.log_gamma.data)
    np.testing.assert_allclose(zn.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(zn.var(0), x.var(0) / (x.var(0) + bn.eps), rtol=1e-12)
    np.testing.assert_allclose(ld, np.sum(bn.log_gamma.data - 0.5 * np.log(x.var(0) + bn.eps)))


def test_running_averages_move_only_in_training_steps():
    bn = nfcore.BatchNorm(2, momentum=0.5)
    x = np.array([[1.0, 2.0], [3.0, 6.0]])
    bn.forward(x, need_grad=False)
    np.testing.assert_array_equal(bn.running_mean.data, [0, 0])  # a log_prob call does not move them
    bn.forward(x)
    np.testing.assert_allclose(bn.running_mean.data, [1.0, 2.0])
    np.testing.assert_allclose(bn.running_var.data, [0.5 + 0.5, 0.5 + 0.5 * 4.0])
    with pytest.raises(ShapeError):
        bn.forward(x[:1])


def test_maf_with_batch_norm_trains_saves_and_samples(tmp_path):
    x = sample_toy("8gaussians", 1500, 0)
    flow = nfcore.build({"flow": "maf", "dim": 2, "layers": 3, "hidden": [16, 16], "batch_norm": True,
                         "standardize": {"mean": x.mean(0), "std": x.std(0)}})
    bns = [t for t in flow.transform.transforms if type(t).__name__ == "BatchNorm"]
    assert len(bns) == 2
    start = -np.mean(flow.eval().log_prob(x))
    h = nfcore.fit(flow, x, epochs=10, batch_size=100, lr=3e-3, out_dir=tmp_path, log=None)
    assert not flow.training  # fit leaves the flow evaluating with running averages
    # training helped: measured 4.25 -> 3.82 nats on the rows, best validation 3.81
    assert -np.mean(flow.log_prob(x)) < start - 0.2
    assert h.best_val < h.rows[0]["val_nll"] - 0.1
    # the running averages moved away from their start (0, 1) and the checkpoint restores them
    for bn in bns:
        assert np.all(np.abs(bn.running_mean.data) > 1e-3) and np.all(np.abs(bn.running_var.data - 1) > 1e-3)
    one = flow.log_prob(x[:1])  # a single sample works in eval mode
    again = nfcore.load(tmp_path / "model.npz")
    assert not again.training
    want = flow.state_dict()
    got = again.state_dict()
    assert sorted(got) == sorted(want) and sum("running" in k for k in want) == 4
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    np.testing.assert_array_equal(again.log_prob(x[:50]), flow.log_prob(x[:50]))
    s, lp = flow.sample_and_log_prob(7, seed=0)
    np.testing.assert_allclose(flow.log_prob(s), lp, atol=1e-9)
    assert one.shape == (1,)
