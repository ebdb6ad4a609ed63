"""Worker threads (nfcore.parallel): W workers compute what one does, and the same W the same bits."""

import threading

import numpy as np
import pytest

import nfcore
from nfcore import threads
from nfcore.errors import ConfigError, InputOutsideDomain
from nfcore.parallel import ShardGroup, shard_bounds

# one row per family and per sample-coupling or stateful part: batch norm, ActNorm's data init, the
# spectral power iteration, learned bases (diagonal, mixture, autoregressive), context, LU whitening,
# memory-saving recomputation, image flows
FLOWS = {
    "realnvp-context-diag": {"flow": "realnvp", "dim": 3, "layers": 3, "hidden": [6], "base": "diag",
                             "context_dim": 2},
    "nice-permute": {"flow": "nice", "dim": 4, "layers": 3, "hidden": [6], "permute": "random"},
    "maf-batchnorm-made": {"flow": "maf", "dim": 3, "layers": 3, "hidden": [6], "batch_norm": True,
                           "base": "made", "prior_hidden": [6]},
    "maf-made-mog": {"flow": "maf", "dim": 3, "layers": 2, "hidden": [6], "base": "made-mog",
                     "prior_hidden": [6], "prior_components": 2},
    "realnvp-gmm-whiten": {"flow": "realnvp", "dim": 3, "layers": 2, "hidden": [6], "base": "gmm",
                           "prior_components": 2, "whiten": True},
    "realnvp-memory-saving": {"flow": "realnvp", "dim": 3, "layers": 3, "hidden": [6], "memory_saving": True},
    "glow": {"flow": "glow", "shape": [4, 4, 2], "scales": 2, "layers": 1, "hidden": [4]},
    "glow-plain-additive": {"flow": "glow", "shape": [4, 4, 2], "scales": 1, "layers": 2, "hidden": [4],
                            "invconv": "plain", "coupling": "additive"},
    "realnvp-image": {"flow": "realnvp", "shape": [4, 4, 2], "scales": 2, "layers": 2, "hidden": [4]},
    "iresnet-exact": {"flow": "iresnet", "dim": 2, "layers": 2, "hidden": [5], "logdet": "exact"},
    "resflow-exact-beta": {"flow": "resflow", "dim": 3, "layers": 2, "hidden": [5], "logdet": "exact",
                           "learn_beta": True},
}


def _data(flow, rows, rng):
    x = rng.normal(size=(rows, *flow.shape))
    c = rng.normal(size=(rows, flow.context_dim)) if flow.context_dim else None
    return x, c


def _step(flow, x, c, workers):
    """(loss, every gradient, the state after the call) of one gradient call from the current state."""
    flow.zero_grad()
    loss = flow.loss_and_grad(x, c, workers=workers)
    grads = np.concatenate([p.grad.ravel().copy() for p in flow.parameters()])
    return loss, grads, flow.state_dict()


def _close(a, b, rel, floor=1e-300):
    """max |a - b| <= rel max(max |b|, floor)."""
    scale = max(float(np.max(np.abs(b))), floor)
    return float(np.max(np.abs(a - b))) <= rel * scale


@pytest.mark.parametrize("name", sorted(FLOWS))
def test_workers_give_one_workers_gradient(name, rng):
    """Loss, every parameter's gradient and every buffer (batch norm's running averages, ActNorm's
    initialisation, the power iteration's vectors) after a call with W = 2, 3 workers equal one
    worker's to 1e-12 relative (float64); the first call, whose ActNorm initialises, included."""
    flow = nfcore.build(FLOWS[name]).train()
    x, c = _data(flow, 23, rng)
    start = flow.state_dict()
    for call in range(2):  # the first call initialises ActNorm (unsplit), the second is split
        results = {}
        for w in (1, 2, 3):
            flow.load_state_dict(start)
            results[w] = _step(flow, x, c, w)
        loss1, g1, state1 = results[1]
        assert np.all(np.isfinite(g1)) and np.max(np.abs(g1)) > 0
        for w in (2, 3):
            loss, g, state = results[w]
            assert abs(loss - loss1) <= 1e-12 * abs(loss1), (name, call, w)
            assert _close(g, g1, 1e-12), (name, call, w, float(np.max(np.abs(g - g1))))
            for k in state1:
                # the state's entries are O(1) numbers (a running mean of centred data is ~1e-18)
                assert _close(state[k], state1[k], 1e-12, floor=1.0), (name, call, w, k)
        start = state1  # the next call starts where one worker left off


def _gaussian_target(x):
    """log p~(x) = -|x|^2 / 2 over every axis but the first, and its gradient -x."""
    return -0.5 * np.sum(x.reshape(x.shape[0], -1) ** 2, axis=1), -x


@pytest.mark.parametrize("name", ["realnvp-context-diag", "nice-permute", "iaf", "glow", "realnvp-memory-saving"])
def test_reverse_kl_workers_give_one_workers_gradient(name):
    """The reverse-KL step (sampling direction with its VJP) on W = 2, 3 workers: the loss and
    every gradient equal one worker's to 1e-12 relative (float64), and the same W the same bits."""
    cfg = FLOWS.get(name) or {"flow": "iaf", "dim": 3, "layers": 2, "hidden": [6], "base": "diag"}
    flow = nfcore.build(cfg).train()
    nfcore.gradcheck.randomize_parameters(flow, scale=0.3, seed=1)
    c = np.random.default_rng(2).normal(size=(23, flow.context_dim)) if flow.context_dim else None
    results = {}
    for w in (1, 2, 3, 2):
        flow.zero_grad()
        loss = flow.reverse_kl_loss_and_grad(_gaussian_target, 23, np.random.default_rng(3), c, workers=w)
        results.setdefault(w, []).append((loss, np.concatenate([p.grad.ravel().copy() for p in flow.parameters()])))
    loss1, g1 = results[1][0]
    assert np.all(np.isfinite(g1)) and np.max(np.abs(g1)) > 0
    for w in (2, 3):
        loss, g = results[w][0]
        assert abs(loss - loss1) <= 1e-12 * abs(loss1), (name, w)
        assert _close(g, g1, 1e-12), (name, w, float(np.max(np.abs(g - g1))))
    (la, ga), (lb, gb) = results[2]
    assert la == lb and np.array_equal(ga, gb)


def test_fit_reverse_kl_takes_workers():
    """fit_reverse_kl passes ``workers`` on: two workers give one worker's losses to rounding."""
    runs = [nfcore.fit_reverse_kl(nfcore.build({"flow": "realnvp", "dim": 2, "layers": 2, "hidden": [8]}),
                                  _gaussian_target, steps=3, batch_size=64, log=None, workers=w) for w in (1, 2)]
    assert np.allclose(runs[0], runs[1], rtol=1e-12, atol=0)


def test_batch_norm_shards_see_the_whole_batch(rng):
    """Two shards of very different rows: a shard-local batch norm would differ from one worker by
    O(1); the whole batch's statistics give one worker's result (the test above, made pointed)."""
    flow = nfcore.build(FLOWS["maf-batchnorm-made"]).train()
    x = np.concatenate([rng.normal(-3.0, 0.5, size=(16, 3)), rng.normal(4.0, 2.0, size=(16, 3))])
    start = flow.state_dict()
    loss1, g1, state1 = _step(flow, x, None, 1)
    flow.load_state_dict(start)
    loss2, g2, state2 = _step(flow, x, None, 2)
    assert abs(loss2 - loss1) <= 1e-12 * abs(loss1)
    assert _close(g2, g1, 1e-12)
    bn = [k for k in state1 if k.endswith("running_mean")]
    assert bn and all(_close(state2[k], state1[k], 1e-12, floor=1.0) for k in bn)


def test_stochastic_log_det_keeps_a_reproducible_stream(rng):
    """A roulette residual flow draws its probes per shard from streams drawn off the flow's own
    generator: the same seed and W give the same bits, and the flow's generator state moves."""
    cfg = {"flow": "resflow", "dim": 2, "layers": 2, "hidden": [5], "seed": 3}
    x = rng.normal(size=(40, 2))
    runs = []
    for _ in range(2):
        flow = nfcore.build(cfg).train()
        before = flow.generator_states()
        out = [_step(flow, x, None, 2) for _ in range(3)]
        assert flow.generator_states() != before
        runs.append(out)
    for (l1, g1, _), (l2, g2, _) in zip(*runs):
        assert l1 == l2 and np.array_equal(g1, g2)


def test_fit_with_workers_is_bit_identical_run_to_run(rng, tmp_path):
    """fit(workers=2) twice with one seed: the same model bit for bit, and the same as a resumed run."""
    x = rng.normal(size=(300, 3))
    cfg = {"flow": "maf", "dim": 3, "layers": 2, "hidden": [8], "batch_norm": True}
    states = []
    for _ in range(2):
        flow = nfcore.build(cfg)
        nfcore.fit(flow, x, epochs=3, batch_size=64, workers=2, log=None)
        states.append(flow.state_dict())
    assert all(np.array_equal(states[0][k], states[1][k]) for k in states[0])
    flow = nfcore.build(cfg)
    nfcore.fit(flow, x, epochs=2, batch_size=64, workers=2, log=None, out_dir=tmp_path)
    nfcore.fit(flow, x, epochs=1, batch_size=64, workers=2, log=None, out_dir=tmp_path,
               resume=tmp_path / "last.npz")
    assert all(np.array_equal(states[0][k], flow.state_dict()[k]) for k in states[0])


def test_log_prob_and_sample_do_not_depend_on_workers(rng):
    flow = nfcore.build(FLOWS["realnvp-context-diag"])
    x, c = _data(flow, 31, rng)
    lp1 = flow.log_prob(x, c, workers=1)
    for w in (2, 4):
        assert _close(flow.log_prob(x, c, workers=w), lp1, 1e-13)
        xs, lps = flow.sample_and_log_prob(31, c, seed=5, workers=w)
        xs1, lps1 = flow.sample_and_log_prob(31, c, seed=5, workers=1)
        assert _close(xs, xs1, 1e-13) and _close(lps, lps1, 1e-13)
    chunked = flow.log_prob(x, c, chunk_size=10, workers=2)
    assert _close(chunked, lp1, 1e-13)


def test_a_failing_shard_raises_its_error_and_no_worker_hangs(rng):
    """Shard 1's rows break a discrete column's domain before batch norm's gather: shard 0, waiting
    there, is released, and the caller sees shard 1's error (not the broken barrier)."""
    flow = nfcore.build({"flow": "maf", "dim": 3, "layers": 2, "hidden": [6], "batch_norm": True,
                         "discrete": [0]}).train()
    x = rng.normal(size=(20, 3))
    x[:, 0] = np.round(x[:, 0])
    x[15, 0] = 0.5  # in the second of two shards
    with pytest.raises(InputOutsideDomain):
        flow.loss_and_grad(x, workers=2)
    x[15, 0] = 1.0
    assert np.isfinite(flow.loss_and_grad(x, workers=2))  # the workers are usable again
    assert threading.active_count() < 20


def test_gather_returns_every_value_in_shard_order_over_many_rounds():
    group = ShardGroup(3)
    seen = [[] for _ in range(3)]

    def run(i):
        for k in range(200):
            seen[i].append(group.gather(i, (k, i)))

    ts = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for i in range(3):
        assert seen[i] == [[(k, 0), (k, 1), (k, 2)] for k in range(200)]


def test_shard_bounds_cover_the_rows_in_order():
    assert shard_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert shard_bounds(2, 2) == [(0, 1), (1, 2)]


def test_worker_count_choice(monkeypatch):
    monkeypatch.setattr(threads, "_budget", 4)
    assert threads.workers_for(256) == 1  # small batches: one worker
    assert threads.workers_for(4 * threads.MIN_SHARD_ROWS) == 4
    assert threads.workers_for(100 * threads.MIN_SHARD_ROWS) == 4  # at most the cores allowed
    assert threads.workers_for(256, workers=3) == 3  # an explicit count is kept ...
    assert threads.workers_for(5, workers=3) == 2  # ... but no shard gets under 2 rows
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="workers"):
            threads.workers_for(100, workers=bad)
    with pytest.raises(ConfigError, match="CUDA"):
        threads.workers_for(100, workers=2, device="cuda")
    assert threads.workers_for(100_000, device="cuda") == 1


def test_shard_size_follows_the_fused_switch(monkeypatch):
    """A flow's rows per worker come from its layers' current paths: switching a MADE to op by op
    after the build raises them (256 fused, 1024 op by op), so batch 512 stays on one worker."""
    monkeypatch.setattr(threads, "_budget", 2)
    flow = nfcore.build({"flow": "maf", "dim": 4, "layers": 2, "hidden": [8, 8]})
    assert flow._shard_rows == 256 and threads.workers_for(512, None, "cpu", flow._shard_rows) == 2
    for t in flow.transform.transforms:
        t.fused = False
    assert flow._shard_rows == 1024 and threads.workers_for(512, None, "cpu", flow._shard_rows) == 1
    flow.transform.transforms[0].fused = True
    assert flow._shard_rows == 256


def test_blas_now_follows_the_workers_limit():
    """Inside the workers' BLAS limit the fused kernels see one thread (their forward products go
    by row blocks); outside it, the count the CPU ops plan with."""
    from nfcore.threads import blas_limit, blas_now, blas_threads

    outside = blas_now()
    assert outside == blas_threads()
    with blas_limit(1):
        assert blas_now() == 1
        with blas_limit(2):
            assert blas_now() == 2
        assert blas_now() == 1
    assert blas_now() == outside
