"""The edges (issue 12): untrusted configs and checkpoints, divergence, option validation, exact resume."""

import glob
import json
import os
import tracemalloc
import zipfile

import numpy as np
import pytest

import nfcore
from nfcore.cli import main
from nfcore.data import sample_toy
from nfcore.errors import CheckpointError, ConfigError
from nfcore.train import TrainingDiverged, load_checkpoint


def _small(**kw):
    cfg = {"dim": 2, "layers": 2, "hidden": [8]}
    cfg.update(kw)
    return nfcore.build(cfg)


# -- configs: every value checked, sizes before allocation ---------------------------------------


def test_a_billion_layers_is_refused_before_anything_is_allocated():
    tracemalloc.start()
    with pytest.raises(ConfigError, match="parameters"):
        nfcore.build({"dim": 2, "layers": 10**9})
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 100 * 2**20, peak


@pytest.mark.parametrize("cfg, message", [
    ({"layers": "8"}, "layers must be an integer"),
    ({"layers": 0}, "layers must be an integer >= 1"),
    ({"layers": True}, "layers must be an integer"),
    ({"hidden": [64, -1]}, r"hidden\[1\] must be an integer >= 1"),
    ({"hidden": "64"}, "hidden must be a list"),
    ({"flow": "iresnet", "n_terms": 0}, "n_terms must be an integer >= 1"),
    ({"coeff": 1.2}, "coeff must be a finite number > 0.0 and < 1.0"),
    ({"scale_bound": float("nan")}, "scale_bound must be a finite number"),
    ({"dtype": "float16"}, "dtype must be one of"),
    ({"whiten": "yes"}, "whiten must be true or false"),
    ({"seed": -1}, "seed must be an integer >= 0"),
    ({"standardize": {"mean": [0.0], "std": [1.0, 1.0]}}, "standardize.mean must be a list of 2"),
    ({"standardize": {"mean": [0.0, 0.0], "std": [1.0, 0.0]}}, r"standardize.std\[1\] must be a finite number > 0"),
    ({"discrete": [5]}, "discrete column 5 is out of range"),
    ({"dim": 10**6, "hidden": [10**4]}, "parameters"),
    ({"flow": "glow", "shape": [8, 8, "3"]}, r"shape\[2\] must be an integer"),
])
def test_config_values_are_checked(cfg, message):
    with pytest.raises(ConfigError, match=message):
        nfcore.build(cfg)


def test_a_big_model_can_be_asked_for():
    cfg = {"dim": 2, "layers": 2, "hidden": [8]}
    assert nfcore.models.estimate_parameters(nfcore.models.normalize_config(cfg)) >= _small().num_parameters()
    old = nfcore.models.MAX_PARAMETERS
    try:
        nfcore.models.MAX_PARAMETERS = 10
        with pytest.raises(ConfigError, match="allow_large=True"):
            nfcore.build(cfg)
        assert nfcore.build(cfg, allow_large=True).num_parameters() > 10
    finally:
        nfcore.models.MAX_PARAMETERS = old


def test_the_cli_can_ask_for_a_big_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(nfcore.models, "MAX_PARAMETERS", 10)
    path = tmp_path / "m.npz"
    nfcore.save(path, nfcore.build({"dim": 2, "layers": 2, "hidden": [8]}, allow_large=True))
    rc, _, err = _cli(["info", path], capsys)
    assert rc == 2 and "--allow-large on the command line" in err
    rc, out, _ = _cli(["info", path, "--allow-large"], capsys)
    assert rc == 0 and "parameters)" in out


def test_the_estimate_bounds_every_family():
    cfgs = [
        {"flow": "realnvp", "dim": 5, "hidden": [16, 16], "context_dim": 2},
        {"flow": "maf", "dim": 5, "hidden": [16, 16], "batch_norm": True, "base": "made-mog"},
        {"flow": "resflow", "dim": 3, "hidden": [8, 8], "learn_beta": True},
        {"flow": "glow", "shape": [8, 8, 3], "layers": 2, "hidden": [8]},
        {"flow": "realnvp", "shape": [4, 4, 1], "layers": 2, "hidden": [8]},
        {"flow": "iresnet", "shape": [4, 4, 1], "layers": 1, "hidden": [3]},
        {"flow": "realnvp", "dim": 4, "whiten": True, "base": "gmm", "prior_components": 3},
    ]
    for cfg in cfgs:
        est = nfcore.models.estimate_parameters(nfcore.models.normalize_config(cfg))
        assert est >= nfcore.build(cfg).num_parameters(), cfg


# -- checkpoints are untrusted input -------------------------------------------------------------


def _rewrite(path, out, edit_meta=None, entries=None):
    """Copy the checkpoint at ``path`` to ``out``, editing its metadata and replacing entries."""
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(out, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "__meta__.npy" and edit_meta is not None:
                with zin.open(name) as fh:
                    info = json.loads(np.lib.format.read_array(fh).tobytes().decode())
                edit_meta(info)
                raw = np.frombuffer(json.dumps(info).encode(), dtype=np.uint8)
                with zout.open(name, "w") as fh:
                    np.lib.format.write_array(fh, raw)
                continue
            if entries and name in entries:
                data = entries[name]
            zout.writestr(name, data)


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "m.npz"
    nfcore.save(path, nfcore.build({"flow": "realnvp", "dim": 3, "layers": 2, "hidden": [4], "permute": "random"}))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda i: i["config"].update(layers=10**9), "parameters"),
    (lambda i: i["config"].update(hidden=[10**7]), "parameters"),
    (lambda i: i.update(config=None), "a config is a dict"),
    (lambda i: i["config"].update(layers="2"), "layers must be an integer"),
    (lambda i: i.update(format="other"), "format tag"),
    (lambda i: i.update(version=99), "newer nfcore"),
])
def test_a_tampered_config_is_refused(checkpoint, tmp_path, edit, message):
    bad = tmp_path / "bad.npz"
    _rewrite(checkpoint, bad, edit_meta=edit)
    with pytest.raises(CheckpointError, match=message):
        nfcore.load(bad)


def _npy_header_only(shape, dtype="<f8"):
    """The bytes of an .npy header claiming ``shape`` followed by 16 bytes of data."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + b"\0" * 16


def test_entries_are_checked_before_they_are_read(checkpoint, tmp_path):
    with zipfile.ZipFile(checkpoint) as z:
        name = next(n for n in z.namelist() if n.startswith("model/") and "weight" in n)
    huge = tmp_path / "huge.npz"
    _rewrite(checkpoint, huge, entries={name: _npy_header_only((10**6, 10**6))})  # claims 7.3 TiB
    tracemalloc.start()
    with pytest.raises(CheckpointError, match="expects shape"):
        nfcore.load(huge)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50 * 2**20, peak
    extra = tmp_path / "extra.npz"
    _rewrite(checkpoint, extra, entries={name: zipfile.ZipFile(checkpoint).read(name)})
    with zipfile.ZipFile(extra, "a") as z:
        z.writestr("extra/history/epoch.npy", _npy_header_only((10**12,)))
    with pytest.raises(CheckpointError, match="too large"):
        nfcore.load(extra)


def test_non_finite_weights_and_foreign_structure_are_refused(checkpoint, tmp_path):
    flow = nfcore.load(checkpoint)
    state = flow.state_dict()
    weight = next(k for k in state if k.endswith("weight"))
    perm = next(k for k in state if k.endswith("perm"))
    for key, value, message in [(weight, np.full_like(state[weight], np.nan), "NaN or inf"),
                                (perm, state[perm][::-1].copy(), "differs from the structure")]:
        import io

        buf = io.BytesIO()
        np.lib.format.write_array(buf, value)
        bad = tmp_path / "bad.npz"
        _rewrite(checkpoint, bad, entries={f"model/{key}.npy": buf.getvalue()})
        with pytest.raises(CheckpointError, match=message):
            nfcore.load(bad)


def test_a_pickled_entry_is_refused_from_its_header(checkpoint, tmp_path):
    import io

    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    bad = tmp_path / "pickled.npz"
    _rewrite(checkpoint, bad)
    with zipfile.ZipFile(bad, "a") as z:
        z.writestr("extra/payload.npy", buf.getvalue())
    with pytest.raises(CheckpointError, match="dtype object, not numbers"):
        nfcore.load(bad)


def test_an_npy_file_or_garbage_given_as_a_model(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 2)))
    (tmp_path / "g.npz").write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    for path in (tmp_path / "x.npy", tmp_path / "g.npz"):
        with pytest.raises(CheckpointError):
            nfcore.load(path)


def test_random_corruption_gives_the_checkpoint_error_or_a_valid_model(checkpoint, tmp_path):
    raw = checkpoint.read_bytes()
    rng = np.random.default_rng(0)
    outcomes = {"error": 0, "loaded": 0}
    for i in range(150):
        b = bytearray(raw)
        for j in rng.integers(len(b), size=rng.integers(1, 8)):
            b[j] = rng.integers(256)
        if i % 5 == 0:
            b = b[: rng.integers(len(b))]
        path = tmp_path / f"c{i}.npz"
        path.write_bytes(bytes(b))
        try:
            flow = nfcore.load(path)
        except CheckpointError:
            outcomes["error"] += 1
        else:  # a flipped weight byte can leave a valid file: then the model is finite and usable
            assert np.all(np.isfinite(flow.log_prob(np.zeros((2, 3)))))
            outcomes["loaded"] += 1
    assert outcomes["error"] > 100, outcomes


# -- divergence ------------------------------------------------------------------------------------


def test_divergence_rolls_back_and_leaves_only_finite_checkpoints(tmp_path):
    x = sample_toy("moons", 600, 0)
    flow = _small()
    with pytest.raises(TrainingDiverged, match="diverged at epoch") as info:
        nfcore.fit(flow, x, epochs=50, batch_size=50, lr=1000.0, out_dir=tmp_path, log=None)
    assert "Lower the learning rate" in str(info.value)
    assert all(np.all(np.isfinite(p.data)) for p in flow.parameters())
    assert np.all(np.isfinite(flow.log_prob(x[:10])))
    for path in glob.glob(str(tmp_path / "*.npz")):
        loaded, _, sections = load_checkpoint(path)
        assert all(np.all(np.isfinite(p.data)) for p in loaded.parameters()), path
        assert all(np.all(np.isfinite(v)) for v in sections["best"].values())


def test_a_non_finite_loss_names_the_layer(monkeypatch):
    x = sample_toy("moons", 300, 0)
    flow = _small()
    nfcore.fit(flow, x, epochs=1, batch_size=50, log=None)
    coupling = flow.transform.transforms[1]
    before = {k: v.copy() for k, v in flow.state_dict().items()}
    coupling_forward = type(coupling).forward

    def broken(self, h, context=None, need_grad=True):
        y, ld, cache = coupling_forward(self, h, context, need_grad)
        return y * np.inf, ld, cache

    monkeypatch.setattr(coupling, "forward", broken.__get__(coupling))
    with pytest.raises(TrainingDiverged, match=r"first in the output of layer \d \(AffineCoupling\)"), \
            np.errstate(invalid="ignore"):
        nfcore.fit(flow, x, epochs=1, batch_size=50, log=None)
    for k, v in flow.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_cli_reports_divergence_with_a_nonzero_exit(tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["train", "--n-train", "5000", "--epochs", "5", "--lr", "1000", "--layers", "2", "--hidden", "8",
               "--whiten", "off", "--out", str(run), "--no-plot"])
    err = capsys.readouterr().err
    assert rc == 2 and "diverged" in err, err
    for path in glob.glob(str(run / "*.npz")):
        loaded = nfcore.load(path)
        assert all(np.all(np.isfinite(p.data)) for p in loaded.parameters()), path


# -- options: no silent defaults -------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["train", "--batch-size", "0"], "--batch-size: must be an integer >= 1, got 0"),
    (["train", "--lr", "0"], "--lr: must be a finite number > 0, got 0"),
    (["train", "--lr", "nan"], "--lr: must be a finite number > 0"),
    (["train", "--hidden", "0"], "--hidden: must be an integer >= 1"),
    (["train", "--depth", "-1"], "--depth: must be an integer >= 0"),
    (["train", "--seed", "-1"], "--seed: must be an integer >= 0"),
    (["train", "--epochs", "two"], "--epochs: expected an integer >= 1, got 'two'"),
    (["train", "--prior-hidden", "0"], "--prior-hidden: must be an integer >= 1"),
    (["train", "--out", ""], "--out: expected a path, got an empty string"),
    (["train", "--weight-decay", "-1"], "--weight-decay: must be a finite number >= 0"),
    (["sample", "m.npz", "-n", "0"], "-n: must be an integer >= 1"),
    (["sample", "m.npz", "-n", "3", "--temperature", "inf"], "--temperature: must be a finite number > 0"),
])
def test_options_outside_their_domain_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


# -- resume is exact -------------------------------------------------------------------------------


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("flow_name", ["realnvp", "resflow"])
def test_resume_is_bit_exact(tmp_path, dtype, flow_name):
    """4 epochs straight == an interrupted run (stopped during epoch 3) + resume: every parameter,
    the optimiser state and the history, bit for bit (cosine schedule; the resflow's probes and
    roulette draws come from a generator of its own)."""
    x = sample_toy("8gaussians", 400, 0).astype(dtype) / 3
    cfg = {"flow": flow_name, "dim": 2, "layers": 2, "hidden": [8], "dtype": dtype}
    kw = dict(batch_size=64, lr=3e-3, lr_schedule="cosine", seed=3)
    straight = nfcore.build(cfg)
    h1 = nfcore.fit(straight, x, epochs=4, out_dir=tmp_path / "a", log=None, **kw)

    def stop_in_epoch_3(line):
        if line.startswith("epoch    3"):
            raise _Interrupt

    part = nfcore.build(cfg)
    with pytest.raises(_Interrupt):
        nfcore.fit(part, x, epochs=4, out_dir=tmp_path / "b", log=stop_in_epoch_3, **kw)
    resumed = nfcore.build(cfg)
    h2 = nfcore.fit(resumed, x, epochs=2, out_dir=tmp_path / "b", resume=tmp_path / "b" / "last.npz", log=None, **kw)
    assert [r["val_nll"] for r in h2.rows] == [r["val_nll"] for r in h1.rows]
    a, b = load_checkpoint(tmp_path / "a" / "last.npz"), load_checkpoint(tmp_path / "b" / "last.npz")
    for k, v in a[0].state_dict().items():
        np.testing.assert_array_equal(b[0].state_dict()[k], v, err_msg=k)
    for k, v in a[2]["optim"].items():
        np.testing.assert_array_equal(b[2]["optim"][k], v, err_msg=k)
    for k, v in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[k], v, err_msg=k)
    assert not [n for n in os.listdir(tmp_path / "b") if n.startswith(".tmp")]


# -- evaluation never changes a model --------------------------------------------------------------


def test_log_prob_and_sample_never_change_a_model(rng):
    glow = nfcore.build({"flow": "glow", "shape": [4, 4, 1], "layers": 1, "hidden": [4]})
    before = {k: v.copy() for k, v in glow.state_dict().items()}
    x = rng.uniform(0, 1, size=(8, 4, 4, 1))
    glow.log_prob(x)
    glow.sample(3, seed=0)
    assert glow.training  # the mode is left as it was
    for k, v in glow.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)  # no ActNorm data initialisation
    maf = nfcore.build({"flow": "maf", "dim": 2, "layers": 2, "hidden": [8], "batch_norm": True})
    nfcore.gradcheck.randomize_parameters(maf, 0.3, 1)
    maf.train()
    rows = rng.normal(size=(6, 2))
    alone = maf.log_prob(rows[:1])  # one row: batch statistics would refuse it
    np.testing.assert_allclose(maf.log_prob(rows)[:1], alone, rtol=1e-12)
    np.testing.assert_allclose(maf.log_prob(np.vstack([rows[:1], 10 + rows[1:]]))[:1], alone, rtol=1e-12)
    assert maf.training


def test_chunked_evaluation_and_sampling(rng):
    flow = _small()
    nfcore.gradcheck.randomize_parameters(flow, 0.3, 2)
    x = rng.normal(size=(11, 2))
    np.testing.assert_allclose(flow.log_prob(x, chunk_size=4), flow.log_prob(x), rtol=1e-13)
    assert flow.log_prob(np.zeros((0, 2))).shape == (0,)
    a = flow.sample(10, seed=np.random.default_rng(5), chunk_size=3)
    assert a.shape == (10, 2) and np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, flow.sample(10, seed=np.random.default_rng(5), chunk_size=3))
    with pytest.raises(ConfigError, match="chunk_size"):
        flow.log_prob(x, chunk_size=0)


# -- input and output files ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.npz"
    flow = _small()
    nfcore.gradcheck.randomize_parameters(flow, 0.3, 3)
    nfcore.save(path, flow)
    return path


def _cli(argv, capsys):
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_logprob_writes_exactly_the_file_named(model_path, tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(5, 2))
    np.save(tmp_path / "x.npy", x)
    want = nfcore.load(model_path).log_prob(x)
    for name, read in [("lp.npy", np.load), ("lp.csv", lambda p: np.loadtxt(p, delimiter=",")),
                       ("lp.txt", np.loadtxt)]:
        rc, out, _ = _cli(["logprob", model_path, tmp_path / "x.npy", "--output", tmp_path / name], capsys)
        assert rc == 0 and f"to {tmp_path / name}" in out
        np.testing.assert_allclose(read(tmp_path / name), want, rtol=1e-8)
    assert not (tmp_path / "lp.txt.npy").exists()
    rc, _, err = _cli(["logprob", model_path, tmp_path / "x.npy", "--output", tmp_path / "lp.dat"], capsys)
    assert rc == 2 and "unknown extension '.dat'" in err and not (tmp_path / "lp.dat").exists()
    rc, _, err = _cli(["logprob", model_path, tmp_path / "x.npy", "--output", tmp_path / "no" / "lp.npy"], capsys)
    assert rc == 2 and "does not exist" in err
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp")]


@pytest.mark.parametrize("make, outcome", [
    (lambda p: np.save(p / "in.npy", np.zeros((1, 2))), 1),                         # one row
    (lambda p: np.save(p / "in.npy", np.zeros((0, 2))), 0),                         # zero rows
    (lambda p: np.save(p / "in.npy", np.ones((3, 2), dtype=">f8")), 3),             # big-endian
    (lambda p: np.save(p / "in.npy", np.ones((3, 2), dtype=np.int16)), 3),          # integers
    (lambda p: (p / "in.csv").write_text("a,b\n1,2\n3,4\n"), 2),                    # a header row
    (lambda p: np.save(p / "in.npy", np.ones((3, 2), dtype=complex)), "real numbers"),
    (lambda p: np.save(p / "in.npy", np.array([["a", "b"]])), "real numbers"),
    (lambda p: np.save(p / "in.npy", np.ones((3, 3))), "rows of 2 values"),
    (lambda p: np.save(p / "in.npy", np.array([[1.0, np.nan]])), "NaN or inf in row 0"),
    (lambda p: (p / "in.csv").write_text("1,2\n3,4\n5,6,7\n"), "could not read"),
    (lambda p: (p / "in.npy").write_bytes(b""), "not a readable .npy"),
    (lambda p: (p / "in.npy").write_bytes(_npy_header_only((10**12, 2))), "the header claims"),
])
def test_logprob_input_files(model_path, tmp_path, capsys, make, outcome):
    make(tmp_path)
    path = next(tmp_path.glob("in.*"))
    rc, out, err = _cli(["logprob", model_path, path], capsys)
    if isinstance(outcome, int):
        assert rc == 0 and len(out.split()) == outcome, (out, err)
    else:
        assert rc == 2 and outcome in err, err


def test_sample_output_and_bad_counts(model_path, tmp_path, capsys):
    rc, out, _ = _cli(["sample", model_path, "-n", 5, "--seed", 1, "--output", tmp_path / "s.txt"], capsys)
    assert rc == 0 and np.loadtxt(tmp_path / "s.txt").shape == (5, 2)
    rc, _, _ = _cli(["sample", model_path, "-n", 5, "--seed", 1, "--output", tmp_path / "s.npy"], capsys)
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), np.loadtxt(tmp_path / "s.txt"), rtol=1e-7)
    rc, _, err = _cli(["sample", model_path, "-n", 5, "--output", tmp_path / "s.png"], capsys)
    assert rc == 2 and "image models" in err


def test_corrupted_resume_states_and_out_paths(tmp_path):
    x = sample_toy("moons", 300, 0)
    nfcore.fit(_small(), x, epochs=2, batch_size=50, out_dir=tmp_path / "run", log=None)
    last = tmp_path / "run" / "last.npz"
    with zipfile.ZipFile(last) as z:
        names = z.namelist()
        hist = [n for n in names if n.startswith("extra/history/")]
    no_t = tmp_path / "no_t.npz"
    with zipfile.ZipFile(last) as zin, zipfile.ZipFile(no_t, "w") as zout:
        for n in names:
            if n != "optim/t.npy":
                zout.writestr(n, zin.read(n))
    import io

    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.arange(5.0))  # one column longer than the others
    ragged = tmp_path / "ragged.npz"
    _rewrite(last, ragged, entries={hist[0]: buf.getvalue()})
    for bad in (no_t, ragged):
        with pytest.raises(CheckpointError, match="not a usable resume state"):
            nfcore.fit(_small(), x, epochs=1, batch_size=50, resume=bad, log=None)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        nfcore.fit(_small(), x, epochs=1, out_dir=tmp_path / "a_file", log=None)
    stale = tmp_path / "run" / ".tmp-crashed.npz"
    stale.write_bytes(b"half")
    os.utime(stale, (0, 0))  # left by a crash long ago
    nfcore.fit(_small(), x, epochs=1, batch_size=50, out_dir=tmp_path / "run", log=None)
    assert not stale.exists()


@pytest.mark.parametrize("option, value", [("lr", 0.0), ("patience", 0), ("weight_decay", -1.0), ("max_seconds", -1.0),
                                           ("batch_size", True), ("epochs", 2.5), ("clip_norm", float("inf"))])
def test_fit_options_outside_their_domain(option, value):
    with pytest.raises(ConfigError, match=option):
        nfcore.fit(_small(), sample_toy("moons", 100, 0), log=None, **{"epochs": 1, option: value})


def test_data_far_from_the_base_is_not_mistaken_for_divergence():
    """Unstandardised columns (means 20-60, std 5-20): the untrained flow scores ~600 nats per row;
    falling from there is training, not an explosion."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(600, 2)) * [5.0, 20.0] + [20.0, 60.0]
    flow = _small()
    h = nfcore.fit(flow, x, epochs=6, batch_size=50, lr=1e-2, log=None)
    assert h.rows[0]["val_nll"] > 100 and h.best_val < h.rows[0]["val_nll"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_resume_is_bit_exact_with_keep_start_and_patience(tmp_path, dtype):
    """The tabular path: whitened start kept unless beaten, early stopping; interrupted in epoch 3."""
    from nfcore import tabular

    x = sample_toy("8gaussians", 300, 1).astype(dtype)

    def model():
        m = nfcore.build({"flow": "realnvp", "dim": 2, "layers": 2, "hidden": [8], "whiten": True, "dtype": dtype})
        tabular.initialize(m, x)
        return m

    kw = dict(epochs=6, batch_size=32, lr=5e-3, lr_schedule="cosine", patience=2, keep_start=True, seed=1)
    straight = model()
    h1 = nfcore.fit(straight, x, out_dir=tmp_path / "a", log=None, **kw)

    def stop_in_epoch_3(line):
        if line.startswith("epoch    3"):
            raise _Interrupt

    with pytest.raises(_Interrupt):
        nfcore.fit(model(), x, out_dir=tmp_path / "b", log=stop_in_epoch_3, **kw)
    resumed = model()
    h2 = nfcore.fit(resumed, x, out_dir=tmp_path / "b", resume=tmp_path / "b" / "last.npz", log=None,
                    **dict(kw, epochs=4))
    assert [r["val_nll"] for r in h2.rows] == [r["val_nll"] for r in h1.rows]
    assert (h2.best_epoch, h2.best_val, h2.stopped_early) == (h1.best_epoch, h1.best_val, h1.stopped_early)
    for k, v in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[k], v, err_msg=k)


def test_cli_resume_continues_the_plan(tmp_path, capsys):
    run = tmp_path / "run"
    base = ["train", "--n-train", "600", "--layers", "1", "--hidden", "4", "--out", run, "--no-plot"]
    assert _cli([*base, "--epochs", "2"], capsys)[0] == 0
    rc, _, err = _cli([*base, "--resume", run / "last.npz"], capsys)
    assert rc == 2 and "finished its 2 planned epochs" in err
    rc, out, _ = _cli([*base, "--resume", run / "last.npz", "--epochs", "1"], capsys)
    assert rc == 0 and "epoch    3" in out


def test_more_forged_checkpoints(checkpoint, tmp_path):
    import io

    compressed = tmp_path / "deflated.npz"
    with zipfile.ZipFile(checkpoint) as zin, zipfile.ZipFile(compressed, "w", zipfile.ZIP_DEFLATED) as zout:
        for n in zin.namelist():
            zout.writestr(n, zin.read(n))
    with pytest.raises(CheckpointError, match="compressed"):
        nfcore.load(compressed)
    bad = tmp_path / "flow_list.npz"
    _rewrite(checkpoint, bad, edit_meta=lambda i: i["config"].update(flow=[]))
    with pytest.raises(CheckpointError, match="unknown flow"):
        nfcore.load(bad)
    maf = tmp_path / "maf.npz"
    nfcore.save(maf, nfcore.build({"flow": "maf", "dim": 3, "layers": 1, "hidden": [4]}))
    state = nfcore.load(maf).state_dict()
    key = next(k for k in state if k.endswith("layers.0.mask"))
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ones_like(state[key]))  # a dense mask: no longer autoregressive
    forged = tmp_path / "forged_mask.npz"
    _rewrite(maf, forged, entries={f"model/{key}.npy": buf.getvalue()})
    with pytest.raises(CheckpointError, match="differs from the structure"):
        nfcore.load(forged)


def test_a_negative_npy_shape_is_refused(model_path, tmp_path, capsys):
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (-3, 2)})
    (tmp_path / "neg.npy").write_bytes(buf.getvalue())
    rc, _, err = _cli(["logprob", model_path, tmp_path / "neg.npy"], capsys)
    assert rc == 2 and "negative size" in err


def test_an_exploding_validation_nll_with_a_falling_training_nll_is_an_early_stop(monkeypatch):
    """Overfitting on a small table (wine: validation 22 -> 368 nats while training fell) stops early
    with the best weights, and is not reported as divergence."""
    import sys

    fit_module = sys.modules["nfcore.train.fit"]  # (nfcore.train.fit the attribute is the function)
    real = fit_module.evaluate_nll
    calls = []

    def overfitting(flow, x, context=None, *a, **k):
        calls.append(1)
        value = real(flow, x, context, *a, **k)
        return value + (1e4 if len(calls) >= 4 else 0.0)  # calls: the start, epochs 1, 2, then 3 explodes

    monkeypatch.setattr(fit_module, "evaluate_nll", overfitting)
    flow = _small()
    h = nfcore.fit(flow, sample_toy("moons", 600, 0), epochs=10, batch_size=50, log=None)
    assert h.stopped_early and len(h.rows) == 3 and h.best_epoch in (0, 1)
