"""The CLI end to end, its error messages, and every example as a smoke test."""

import importlib.util
import pathlib
import re

import numpy as np
import pytest

import nfcore
from nfcore.cli import main

EXAMPLES = sorted((pathlib.Path(__file__).parent.parent / "examples").glob("*.py"))


def _run(argv, capsys):
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_train_logprob_sample_info(tmp_path, capsys):
    run = tmp_path / "run"
    rc, out, _ = _run(["train", "--n-train", 1500, "--epochs", 2, "--layers", 2, "--hidden", 16, "--out", run], capsys)
    assert rc == 0, out
    assert "test NLL" in out and "samples/s" in out
    # the run ends at least as good as its start (the cross-validated base on this small table)
    # and close to the data's entropy: measured 1.0565 nats against the best achievable 1.009
    (start,) = _numbers(out, "start       val NLL")
    (best,) = _numbers(out, "best validation NLL")
    (test_nll, floor, _) = _numbers(out, "test NLL on 20000 fresh draws:")
    assert best <= start and floor - 0.02 < test_nll < floor + 0.1, out
    for name in ("model.npz", "last.npz", "history.csv"):
        assert (run / name).exists()
    x = np.random.default_rng(0).normal(size=(7, 2))
    np.save(tmp_path / "x.npy", x)
    rc, out, _ = _run(["logprob", run / "model.npz", tmp_path / "x.npy", "--output", tmp_path / "lp.npy"], capsys)
    assert rc == 0
    lp = np.load(tmp_path / "lp.npy")
    np.testing.assert_allclose(lp, nfcore.load(run / "model.npz").log_prob(x.astype(np.float32)), rtol=1e-6)
    rc, out, _ = _run(["logprob", run / "model.npz", tmp_path / "x.npy", "--workers", 2], capsys)
    assert rc == 0
    np.testing.assert_allclose(np.array(out.split(), dtype=float), lp, rtol=1e-6, atol=1e-6)
    rc, out, _ = _run(["sample", run / "model.npz", "-n", 4, "--seed", 1], capsys)
    assert rc == 0 and len(out.strip().splitlines()) == 4
    rc, out2, _ = _run(["sample", run / "model.npz", "-n", 4, "--seed", 1, "--workers", 2], capsys)
    assert rc == 0  # the base noise is drawn before the split: the same samples on two workers
    two, one = (np.loadtxt(o.splitlines(), delimiter=",") for o in (out2, out))
    np.testing.assert_allclose(two, one, atol=2e-6)
    rc, out, _ = _run(["sample", run / "model.npz", "-n", 9, "--output", tmp_path / "s.npy"], capsys)
    assert np.load(tmp_path / "s.npy").shape == (9, 2)
    rc, out, _ = _run(["info", run / "model.npz"], capsys)
    assert rc == 0 and repr(nfcore.load(run / "model.npz")) in out and "realnvp" in out


def test_glow_on_digits_and_image_commands(tmp_path, capsys):
    run = tmp_path / "glow"
    rc, out, _ = _run(["train", "--data", "digits", "--flow", "glow", "--epochs", 1, "--layers", 1, "--hidden", 8,
                       "--out", run], capsys)
    assert rc == 0, out
    assert "bits/dim" in out and "test:" in out
    from nfcore.data import load_digit_images

    np.save(tmp_path / "te.npy", load_digit_images("test")[:5].astype(np.uint8))
    rc, out, _ = _run(["logprob", run / "model.npz", tmp_path / "te.npy"], capsys)
    assert rc == 0 and "bits/dim over 5 images" in out
    rc, out, _ = _run(["sample", run / "model.npz", "-n", 6, "--temperature", 0.7, "--output", tmp_path / "s.npy"],
                      capsys)
    s = np.load(tmp_path / "s.npy")
    assert rc == 0 and s.shape == (6, 8, 8, 1) and s.max() <= 16
    pytest.importorskip("matplotlib")
    rc, out, _ = _run(["sample", run / "model.npz", "-n", 16, "--output", tmp_path / "grid.png"], capsys)
    assert rc == 0 and (tmp_path / "grid.png").stat().st_size > 0
    rc, _, err = _run(["train", "--data", "digits", "--flow", "maf", "--epochs", 1], capsys)
    assert rc == 2 and "image data" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--data", "no-such-density"], "unknown dataset"),
        (["train", "--data", "missing.csv"], "no such file"),
        (["logprob", "missing.npz", "x.npy"], "missing.npz"),
    ],
)
def test_errors_are_clear(argv, message, capsys):
    rc, _, err = _run(argv, capsys)
    assert rc == 2 and message in err


def test_bad_csv_and_wrong_dimension(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2\n3,nan\n4,5\n")
    rc, _, err = _run(["train", "--data", bad, "--epochs", 1], capsys)
    assert rc == 2 and "NaN" in err
    run = tmp_path / "run"
    _run(["train", "--n-train", 500, "--epochs", 1, "--layers", 2, "--hidden", 8, "--out", run, "--no-plot"], capsys)
    np.save(tmp_path / "x3.npy", np.zeros((4, 3)))
    rc, _, err = _run(["logprob", run / "model.npz", tmp_path / "x3.npy"], capsys)
    assert rc == 2 and "(N, 2)" in err


def test_unknown_flow_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--flow", "glowish"])
    assert "invalid choice" in capsys.readouterr().err


def _numbers(text, after):
    """The numbers printed after the phrase ``after`` on its line(s)."""
    lines = [line.split(after, 1)[1] for line in text.splitlines() if after in line]
    assert lines, f"{after!r} not printed:\n{text}"
    return [float(v) for line in lines for v in re.findall(r"-?\d+\.\d+(?:e-?\d+)?|-?\bnan\b|-?\binf\b", line)]


def _check_two_moons(out):
    nll, best = _numbers(out, "test NLL")
    # a normalised density cannot beat the data's entropy; the quick run (2 epochs) measured 1.81
    assert best - 0.05 < nll < 2.3, out


def _check_conditional(out):
    (nll,) = _numbers(out, "conditional test NLL")
    angles = _numbers(out, "mean sample angle mod pi/4 =")
    assert np.isfinite(nll) and nll < 5.0 and len(angles) == 2, out  # quick run: 4.16
    assert all(0.0 <= a <= np.pi / 4 for a in angles), out


def _check_glow_digits(out):
    bpd = _numbers(out, "test:")[0]
    lo, hi = _numbers(out, "sample pixel levels:")
    assert np.isfinite(bpd) and 0.0 < bpd < 6.0 and 0.0 <= lo <= hi <= 16.0, out  # quick run (1 epoch): 4.31


def _check_iaf_reverse_kl(out):
    for target in ("banana", "funnel"):
        kl, ess = _numbers(out, f"IAF on the {target}:")
        # KL(q || p) >= 0 up to Monte Carlo noise; the quick run measured 0.087 and 0.015
        assert -0.02 < kl < 1.0 and 0.0 < ess <= 1.0, out


def _check_load_csv(out):
    lp = _numbers(out, "log p of the first five raw rows:")
    assert len(lp) == 5 and all(np.isfinite(lp)) and max(lp) < 5.0, out


def _check_reverse_kl_banana(out):
    loss, floor, kl = _numbers(out, "reverse KL - log Z:")
    assert loss >= floor - 0.05 and np.isclose(kl, loss - floor, atol=1e-3), out  # quick run: KL 0.149
    m1, s1, m2 = _numbers(out, "sample mean of x1")[:3]
    assert abs(m1) < 0.5 and 1.0 < s1 < 3.0 and 0.0 < m2 < 2.0, out


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(path, capsys, monkeypatch, tmp_path):
    """Each example's quick mode, and what it prints checked against what it claims."""
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(quick=True)
    check = globals().get(f"_check_{path.stem}")
    assert check is not None, f"examples/{path.name} has no output check here: add _check_{path.stem}"
    check(capsys.readouterr().out)


def test_train_maf_and_refuse_iaf(tmp_path, capsys):
    run = tmp_path / "maf"
    rc, out, _ = _run(["train", "--data", "8gaussians", "--flow", "maf", "--n-train", 1500, "--epochs", 2,
                       "--layers", 2, "--hidden", 16, "--out", run, "--no-plot"], capsys)
    assert rc == 0 and "test NLL" in out
    flow = nfcore.load(run / "model.npz")
    # 1,500 rows are a small table: standardisation, then the whitening layer, then the MAFs
    assert [type(t).__name__ for t in flow.transform.transforms[:3]] == ["Standardize", "AffineLU", "MAF"]
    assert flow.sample(3, seed=0).shape == (3, 2)
    rc, _, err = _run(["train", "--flow", "iaf", "--epochs", 1], capsys)
    assert rc == 2 and "fit_reverse_kl" in err


def test_digits_flat_is_a_tabular_dataset(tmp_path, capsys):
    from nfcore.data import load_digits

    x, labels = load_digits(seed=0, return_labels=True)
    assert x.shape == (1797, 64) and labels.shape == (1797,)
    assert 0.0 <= x.min() and x.max() < 1.0  # dequantised: (v + u) / 17
    np.testing.assert_array_equal(np.floor(x * 17), np.floor(load_digits(seed=1) * 17))  # same pixels, new noise
    assert load_digits(flat=False, dequantize=False).shape == (1797, 8, 8, 1)
    rc, out, _ = _run(["train", "--data", "digits-flat", "--flow", "maf", "--layers", 2, "--hidden", 70, "--epochs", 1,
                       "--out", tmp_path / "d", "--no-plot"], capsys)
    assert rc == 0 and "(1797, 64)" in out


def test_family_defaults_of_the_vector_trainer(tmp_path, capsys):
    """--flow resflow without options on a large table: 4 residual blocks on the MADE mixture prior
    (32 components per conditional); the options still override the family's defaults. (Small
    tables, under 4,096 training rows, get the base chosen by cross-validation: test_tabular.py.)"""
    run = tmp_path / "rf"
    rc, out, _ = _run(["train", "--data", "checkerboard", "--flow", "resflow", "--n-train", 4600, "--epochs", 1,
                       "--hidden", 8, "--prior-hidden", 8, "--out", run, "--no-plot"], capsys)
    assert rc == 0 and "(4600, 2)" in out
    flow = nfcore.load(run / "model.npz")
    blocks = [t for t in flow.transform.transforms if type(t).__name__ == "ResidualBlock"]
    assert len(blocks) == 4
    assert type(flow.base).__name__ == "AutoregressivePrior" and flow.base.components == 32
    run = tmp_path / "rf2"
    rc, out, _ = _run(["train", "--data", "checkerboard", "--flow", "resflow", "--n-train", 600, "--epochs", 1,
                       "--hidden", 8, "--layers", 2, "--prior", "normal", "--out", run, "--no-plot"], capsys)
    flow = nfcore.load(run / "model.npz")
    assert sum(type(t).__name__ == "ResidualBlock" for t in flow.transform.transforms) == 2
    assert type(flow.base).__name__ != "AutoregressivePrior"
