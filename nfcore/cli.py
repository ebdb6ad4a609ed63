"""The ``nfcore`` command: train | logprob | sample | info.

    nfcore train                       # RealNVP on two moons, written to runs/<name>/
    nfcore train --data digits --flow glow      # multi-scale Glow on the bundled 8x8 digits
    nfcore sample runs/x/model.npz -n 64 --temperature 0.7 --output grid.png
    nfcore logprob runs/x/model.npz data.npy --output lp.npy
    nfcore sample runs/x/model.npz -n 1000 --output samples.npy
    nfcore info runs/x/model.npz
"""

import argparse
import contextlib
import json
import os
import sys
import time

import numpy as np

from .errors import ConfigError, NfcoreError

__all__ = ["main", "build_parser"]


def _at_least(lo):
    """argparse type: an integer >= lo (the error names the option, the value and the range)."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, got {value}")
        return value

    return parse


def _positive(allow_zero=False):
    """argparse type: a finite float > 0 (or >= 0)."""
    bound = ">= 0" if allow_zero else "> 0"

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a finite number {bound}, got {text!r}") from None
        if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text}")
        return value

    return parse


def _nonempty(text):
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return text


def build_parser():
    p = argparse.ArgumentParser(prog="nfcore", description="Normalizing flows with hand-written gradients.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="fit a flow to data by maximum likelihood")
    t.add_argument("--data", default="moons", help="built-in density name or a .npy/.csv path (default: moons)")
    t.add_argument("--flow", default="realnvp",
                   choices=["realnvp", "nice", "maf", "iaf", "glow", "iresnet", "resflow", "ffjord"],
                   help="flow family (default: realnvp; iaf cannot be fitted to data by maximum likelihood; "
                        "glow, and realnvp on images, are multi-scale image flows; iresnet and resflow are "
                        "invertible residual networks; ffjord is a continuous flow, an ODE)")
    t.add_argument("--layers", type=_at_least(1), default=None,
                   help="coupling (autoregressive, residual) layers; image flows: steps per scale "
                        "(default: 8; resflow: 4)")
    t.add_argument("--scales", type=_at_least(1), default=2, help="image flows: number of scales (default: 2)")
    t.add_argument("--levels", type=_at_least(2), default=None,
                   help="image data: grey levels K (default: 256 for uint8 .npy files, 17 for digits)")
    t.add_argument("--prior", default="auto", choices=["auto", "normal", "diag", "made", "made-mog", "gmm"],
                   help="base distribution: normal, diag, the autoregressive made / made-mog prior, or gmm "
                        "(a learned Gaussian mixture) (default auto: on tables of fewer than 4,096 training rows "
                        "the single Gaussian or a mixture, whichever cross-validates better; otherwise made-mog "
                        "for maf, i.e. 'MAF MoG', and for resflow, normal for the rest)")
    t.add_argument("--prior-components", type=_at_least(1), default=None,
                   help="mixture components per conditional of the made-mog prior (default: 32), or of "
                        "the gmm base (default: 4; with --prior auto, chosen by cross-validation)")
    t.add_argument("--mixture-covariance", default="full", choices=["full", "diag"],
                   help="covariance of the gmm base's components when --prior gmm (default: full)")
    t.add_argument("--whiten", default="auto", choices=["auto", "on", "off"],
                   help="vector data: a learned full affine layer first, started at the rows' mean and Cholesky "
                        "factor, so the untrained flow is the best Gaussian (default auto: on for tables of fewer "
                        "than 4,096 training rows; on the 20,000-row toys it cost 0.02 nats)")
    t.add_argument("--steps", type=_at_least(1), default=None,
                   help="optimiser-step budget, turned into epochs (default: from the data's size; "
                        "--epochs overrides it)")
    t.add_argument("--weight-decay", type=_positive(allow_zero=True), default=None,
                   help="decoupled (AdamW) weight decay (default: from the data's size)")
    t.add_argument("--prior-hidden", type=_at_least(1), default=128,
                   help="hidden width of the made/made-mog prior's MADE, 2 layers (default: 128)")
    t.add_argument("--hidden", type=_at_least(1), default=None,
                   help="hidden width of the conditioner MLPs (default: from the data's size, 64 from 4,096 "
                        "training rows) or ConvNets (default: 128)")
    t.add_argument("--depth", type=_at_least(0), default=None,
                   help="hidden layers per conditioner (default: 2; ffjord: 3, of its dynamics)")
    t.add_argument("--epochs", type=_at_least(1), default=None, help="epochs (default: 40; maf: 60; ffjord: 30)")
    t.add_argument("--batch-size", type=_at_least(1), default=None, help="minibatch size (default: 256; images: 64)")
    t.add_argument("--lr", type=_positive(), default=None,
                   help="peak learning rate, cosine decay (default: 2e-3; images: 1e-3)")
    t.add_argument("--n-train", type=_at_least(2), default=None,
                   help="points drawn from a built-in density (default: 20000; maf, resflow, ffjord: 100000)")
    t.add_argument("--patience", type=_at_least(1), default=None,
                   help="early stopping patience in epochs (vector data default: 20%% of the epochs, at least 5; "
                        "images: off); the best validation weights are restored either way")
    t.add_argument("--clip-norm", type=_positive(), default=None, help="gradient-norm clipping (default: off)")
    t.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="(default: float32)")
    t.add_argument("--seed", type=_at_least(0), default=0)
    t.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    t.add_argument("--threads", type=_at_least(1), default=None,
                   help="cores to use: BLAS threads of one worker, or at most this many workers (default: all)")
    t.add_argument("--workers", type=_at_least(1), default=None,
                   help="worker threads per step, each on a shard of the batch (default: chosen from the batch "
                        "size and --threads; the same seed and workers give the same model bit for bit)")
    ode = t.add_argument_group("continuous flows (--flow ffjord)")
    ode.add_argument("--solver", default="dopri5", choices=["dopri5", "rk4"],
                     help="ODE solver: adaptive Dormand-Prince 5(4) or fixed-step RK4 (default: dopri5)")
    ode.add_argument("--tol", type=_positive(), default=None,
                     help="dopri5's relative and absolute tolerance (default: 1e-5)")
    ode.add_argument("--ode-steps", type=_at_least(1), default=8, help="rk4's steps per solve (default: 8)")
    ode.add_argument("--trace", default=None, choices=["exact", "hutchinson"],
                     help="training trace of df/dz (default: exact up to 16 columns; evaluation is always exact)")
    ode.add_argument("--gradient", default="adjoint", choices=["adjoint", "discretise"],
                     help="gradients by the adjoint ODE or by differentiating the solver's steps (default: adjoint)")
    ode.add_argument("--kinetic", type=_positive(allow_zero=True), default=None,
                     help="RNODE kinetic-energy weight (default: see nfcore.cli.FFJORD_DEFAULTS)")
    ode.add_argument("--jacobian", type=_positive(allow_zero=True), default=None,
                     help="RNODE Jacobian Frobenius-norm weight (default: see nfcore.cli.FFJORD_DEFAULTS)")
    t.add_argument("--out", default=None, type=_nonempty, help="run folder (default: runs/<flow>-<data>-<time>)")
    t.add_argument("--resume", default=None, help="continue from a run folder's last.npz")
    t.add_argument("--no-plot", action="store_true", help="skip the PNGs even if matplotlib is installed")

    lp = sub.add_parser("logprob", help="log-density of every row of a .npy/.csv file")
    lp.add_argument("model")
    lp.add_argument("input")
    lp.add_argument("--output", default=None,
                    help="file for the values: .npy, .csv or .txt, exactly the name given; default prints them")

    s = sub.add_parser("sample", help="draw samples from a trained flow")
    s.add_argument("model")
    s.add_argument("-n", type=_at_least(1), required=True, help="number of samples")
    s.add_argument("--seed", type=_at_least(0), default=None)
    s.add_argument("--temperature", type=_positive(), default=1.0,
                   help="scale of the base noise (image flows: also of every split prior; default: 1)")
    s.add_argument("--output", default=None,
                   help=".npy, .csv or .txt file (exactly the name given), or .png for an image grid; "
                        "default prints CSV")

    for command in (lp, s):
        command.add_argument("--threads", type=_at_least(1), default=None,
                             help="cores to use: BLAS threads of one worker, or at most this many workers "
                                  "(default: all)")
        command.add_argument("--workers", type=_at_least(1), default=None,
                             help="worker threads, each on a share of every chunk's rows (default: chosen from "
                                  "the chunk size and --threads; the values do not depend on it)")

    i = sub.add_parser("info", help="architecture, parameter count and training summary of a checkpoint")
    i.add_argument("model")
    for command in (t, lp, s, i):
        command.add_argument("--allow-large", action="store_true",
                             help="build a model of more than nfcore.models.MAX_PARAMETERS (1e8) parameters "
                                  "(refused by default: a config, a checkpoint's too, cannot make nfcore allocate "
                                  "without being asked)")
    return p


#: rows evaluated or drawn per chunk by logprob and sample: their memory does not grow with N
CHUNK_ROWS = 65_536
#: what --output can write, by extension
OUTPUT_FORMATS = {".npy": "NumPy array", ".csv": "comma-separated text", ".txt": "space-separated text"}


class RowWriter:
    """Rows written chunk by chunk to exactly the file named, in the format of its extension
    (``OUTPUT_FORMATS``): into a temporary file in the same folder, renamed at the end, so a
    crash never leaves a partial file under the output's name. ``.npy`` is written as a header
    and the raw rows (no memory map: memory stays bounded by the chunk)."""

    def __init__(self, path, shape, dtype, allowed=OUTPUT_FORMATS):
        import tempfile

        self.path = os.fspath(path)
        self.ext = os.path.splitext(self.path)[1].lower()
        if self.ext not in allowed:
            raise ConfigError(f"--output {self.path}: unknown extension {self.ext!r}; use one of "
                              + ", ".join(f"{e} ({d})" for e, d in allowed.items()))
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise ConfigError(f"--output {self.path}: the folder {folder} does not exist")
        if os.path.isdir(self.path):
            raise ConfigError(f"--output {self.path} is a folder; name a file")
        self.shape, self.dtype, self.written = tuple(shape), np.dtype(dtype), 0
        # text keeps every digit of the values: 9 significant for float32, 17 for float64
        self.fmt = "%.9g" if self.dtype.itemsize <= 4 else "%.17g"
        fd, self.tmp = tempfile.mkstemp(prefix=".tmp-", suffix=self.ext, dir=folder)
        self.fh = os.fdopen(fd, "wb")
        try:
            if self.ext == ".npy":
                header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                          "shape": self.shape}
                np.lib.format.write_array_header_1_0(self.fh, header)
        except BaseException:
            self._discard()
            raise

    def write(self, rows):
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if self.ext == ".npy":
            self.fh.write(rows.tobytes())
        else:
            sep = "," if self.ext == ".csv" else " "
            np.savetxt(self.fh, rows.reshape(len(rows), -1), delimiter=sep, fmt=self.fmt)
        self.written += len(rows)

    def __enter__(self):
        return self

    def _discard(self):
        try:
            self.fh.close()
        finally:
            if os.path.exists(self.tmp):
                os.unlink(self.tmp)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self._discard()
            return False
        try:
            if self.written != self.shape[0]:
                raise ConfigError(f"--output {self.path}: {self.written} of {self.shape[0]} rows were written; "
                                  "nothing was saved")
            self.fh.close()
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.tmp, 0o666 & ~umask)  # a temporary file is private; the output is not
            os.replace(self.tmp, self.path)
        except BaseException:
            self._discard()
            raise
        return False


def _progress(done, total, what):
    if total > 4 * CHUNK_ROWS:  # long jobs only, on stderr (stdout may carry the values)
        print(f"  {done:,} / {total:,} {what}", file=sys.stderr, flush=True)


#: the vector trainer's defaults per flow family, where an option is not given. MAF and the
#: residual flow get more points of a built-in density (their test NLL on the checkerboard
#: reached the targets with 100,000, not with 20,000), MAF 60 epochs (40 left it at the edge of
#: its target over three seeds); the residual flow 4 blocks, as its base (``--prior auto``) is
#: the MADE mixture prior: blocks with Lip(g) < 1 cannot tear the space apart, so disconnected
#: data need a multimodal base (measured in benchmarks/RESULTS.md).
_VECTOR_DEFAULTS = {
    "maf": {"n_train": 100_000, "epochs": 60, "prior": "made-mog"},
    "resflow": {"n_train": 100_000, "layers": 4, "prior": "made-mog"},
    "ffjord": {"n_train": 100_000, "layers": 1, "depth": 3, "epochs": 30, "lr": 3e-3},
}

#: the continuous flow's ODE settings where an option is not given. One block of a 3 x 64 tanh
#: dynamics, 30 epochs of 100,000 points at lr 3e-3 and RNODE weights 1e-3: on the checkerboard,
#: 2 hidden layers stalled 0.1 nats higher, 4 were slower without gaining, weights 1e-2 held it
#: 0.15 nats back, and the same steps on 20,000 points overfit (test 0.017 nats above train,
#: missing the target by 0.004) (benchmarks/RESULTS.md, sessions 9 and 10)
FFJORD_DEFAULTS = {"tol": 1e-5, "kinetic": 1e-3, "jacobian": 1e-3, "activation": "tanh"}


def _fill_defaults(args, **defaults):
    """Set the options left at None (not given; 0 stays 0 and is refused downstream)."""
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def _resume_epochs(args, given):
    """Epochs for a --resume run: what the interrupted run had left of its plan, unless --epochs
    or --steps says how many more (so a resumed run ends where the uninterrupted one would)."""
    if args.resume is None or given:
        return args.epochs
    from .train.checkpoint import read_info

    meta = read_info(args.resume).get("meta", {})
    planned, done = meta.get("planned_epochs"), meta.get("epochs_done")
    if not isinstance(planned, int) or not isinstance(done, int):
        return args.epochs  # a resume state from before session 6: the epochs given or planned now
    if planned <= done:
        raise ConfigError(f"{args.resume}: that run finished its {planned} planned epochs; pass --epochs N to train "
                          "N more")
    return planned - done


def _use_threads(args):
    """``--threads``: at most that many cores (``nfcore.set_num_threads``)."""
    if args.threads is not None:
        from .threads import set_num_threads

        set_num_threads(args.threads)


def cmd_train(args, out=print):
    from . import models, tabular
    from .data import ENTROPY, IMAGE_DATASETS, TOY_DENSITIES, load_data, sample_toy, standardization
    from .gmm import em_fit
    from .train import evaluate_nll, fit

    epochs_given = args.epochs is not None or args.steps is not None
    _use_threads(args)
    if args.flow == "iaf":
        raise ConfigError(
            "an IAF's density direction is sequential and has no gradient, so it cannot be fitted to data by "
            "maximum likelihood; use --flow maf here, or fit an IAF to an unnormalised density with "
            "nfcore.fit_reverse_kl (examples/reverse_kl_banana.py)"
        )
    if args.flow == "glow" or args.data in IMAGE_DATASETS or args.levels is not None:
        _fill_defaults(args, prior_components=32)
        return _train_images(args, out, epochs_given)
    _fill_defaults(args, n_train=_VECTOR_DEFAULTS.get(args.flow, {}).get("n_train", 20_000))
    data = load_data(args.data, n=args.n_train, seed=args.seed)
    if data.ndim != 2:
        raise ConfigError(f"{args.data}: vector flows take (N, D) rows, got shape {data.shape}")
    discrete = tabular.column_kinds(data)
    plan = tabular.plan(data.shape[0], data.shape[1], args.flow)
    small = plan["regime"] == "small"
    if args.flow == "ffjord":  # one continuous block whatever the table's size
        _fill_defaults(args, layers=1, depth=3)
    _fill_defaults(args, depth=2)
    if small:
        _fill_defaults(args, layers=plan["layers"], hidden=plan["hidden"])
    else:
        _fill_defaults(args, **{k: v for k, v in _VECTOR_DEFAULTS.get(args.flow, {}).items() if k != "prior"})
        _fill_defaults(args, hidden=plan["hidden"], layers=plan["layers"])
    _fill_defaults(args, batch_size=plan["batch_size"], lr=plan["lr"], weight_decay=plan["weight_decay"])
    rng = np.random.default_rng([args.seed, 5])
    perm = rng.permutation(data.shape[0])
    val, train = data[perm[: plan["val_rows"]]], data[perm[plan["val_rows"] :]]
    steps_per_epoch = max(1, train.shape[0] // min(args.batch_size, train.shape[0]))
    if args.epochs is None and args.steps is not None:
        args.epochs = max(1, -(-args.steps // steps_per_epoch))
    _fill_defaults(args, epochs=plan["epochs"])
    _fill_defaults(args, patience=max(5, args.epochs // 5))
    # the start (standardisation, whitening, the base's EM fit) uses every row, validation ones too, so the
    # untrained flow is the maximum-likelihood Gaussian (or mixture) of all the data; validation rows only
    # decide when to stop, and the start stays a candidate (keep_start)
    mean, std = standardization(data)
    standardize = {"mean": mean.tolist(), "std": std.tolist()}
    whiten = args.whiten == "on" or (args.whiten == "auto" and small)
    prior_auto = args.prior == "auto"
    scores = None
    if args.prior == "auto":
        args.prior = "normal" if small else _VECTOR_DEFAULTS.get(args.flow, {}).get("prior", "normal")
    _fill_defaults(args, prior_components=4 if args.prior == "gmm" else 32)
    config = {
        "flow": args.flow, "dim": data.shape[1], "layers": args.layers, "hidden": [args.hidden] * args.depth,
        "dtype": args.dtype, "seed": args.seed,
        "base": args.prior,
        "prior_components": args.prior_components, "prior_hidden": [args.prior_hidden] * 2,
        "mixture_covariance": args.mixture_covariance,
        "standardize": standardize, "whiten": whiten, "discrete": discrete or None,
    }
    if data.shape[1] > 2 and args.flow in ("realnvp", "nice"):
        config["permute"] = "random"
    if args.flow == "ffjord":
        _fill_defaults(args, **{k: FFJORD_DEFAULTS[k] for k in ("tol", "kinetic", "jacobian")})
        config.update(solver=args.solver, rtol=args.tol, atol=args.tol, ode_steps=args.ode_steps, trace=args.trace,
                      gradient=args.gradient, kinetic=args.kinetic, jacobian=args.jacobian,
                      activation=FFJORD_DEFAULTS["activation"])
    flow = models.build(config, allow_large=args.allow_large)
    rows = data.astype(args.dtype)
    if whiten:
        tabular.initialize(flow, rows)
    if small and args.prior == "normal" and prior_auto:
        # the base is chosen in the symmetric whitening of the standardised rows (the frame), then mapped to
        # the rows as the base sees them at the start (Cholesky-whitened, permuted)
        scores = []
        z, frame = tabular.base_rows(flow, rows, with_frame=True)
        choice, _ = tabular.select_base(z, seed=args.seed, log=scores.append, frame=frame)
        if choice is not None:
            args.prior, args.prior_components, args.mixture_covariance, mixture = "gmm", *choice
            config.update(base="gmm", prior_components=args.prior_components,
                          mixture_covariance=args.mixture_covariance)
            start = flow.transform.state_dict()
            flow = models.build(config, allow_large=args.allow_large)
            flow.transform.load_state_dict(start)
            flow.base.set_mixture(*mixture)
    elif args.prior == "gmm":
        w, mu, covs, _ = em_fit(tabular.base_rows(flow, rows), args.prior_components, args.mixture_covariance,
                                seed=args.seed)
        flow.base.set_mixture(w, mu, covs)
    if args.device != "cpu":
        flow.to(args.device)
    out(f"data: {args.data}, {data.shape[0]} rows x {data.shape[1]} columns; "
        + (f"integer-valued columns {discrete} dequantised (uniform noise)" if discrete else "no integer columns"))
    out(f"plan ({plan['regime']} table): {train.shape[0]} training / {val.shape[0]} validation rows, batch "
        f"{args.batch_size}, {args.epochs} epochs ({args.epochs * steps_per_epoch} steps), lr {args.lr:g} (cosine), "
        f"weight decay {args.weight_decay:g}, patience {args.patience} epochs; whitening "
        f"{'on' if whiten else 'off'}; base {args.prior}"
        + (f" (K={args.prior_components}, {args.mixture_covariance})" if args.prior == "gmm" else ""))
    for line in scores or []:
        out(line)
    name = os.path.splitext(os.path.basename(str(args.data)))[0]
    run_dir = args.out if args.out is not None else os.path.join(
        "runs", f"{args.flow}-{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    out(f"nfcore train: {args.flow} ({args.layers} layers, hidden {config['hidden']}), {flow.num_parameters()} "
        f"parameters, data {args.data} {data.shape}, {args.dtype} on {args.device} -> {run_dir}")
    t0 = time.perf_counter()
    history = fit(flow, train.astype(args.dtype), val_data=val.astype(args.dtype),
                  epochs=_resume_epochs(args, epochs_given),
                  batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, clip_norm=args.clip_norm,
                  patience=args.patience, seed=args.seed, out_dir=run_dir, resume=args.resume, log=out,
                  lr_schedule="cosine", keep_start=whiten or args.prior == "gmm", workers=args.workers,
                  meta={"data": str(args.data), "n_train": int(train.shape[0]), "n_val": int(val.shape[0])})
    elapsed = time.perf_counter() - t0
    out(f"trained {len(history.rows)} epochs in {elapsed:.1f} s; best validation NLL {history.best_val:.4f} "
        + (f"(epoch {history.best_epoch + 1})" if history.best_epoch >= 0 else "(the untrained start)"))
    if args.data in TOY_DENSITIES:
        test = sample_toy(args.data, 20_000, seed=10_000 + args.seed).astype(args.dtype)
        nll = evaluate_nll(flow, test)
        floor = ENTROPY.get(args.data)
        extra = f" (best achievable {floor:.3f}: gap {nll - floor:.3f})" if floor is not None else ""
        out(f"test NLL on 20000 fresh draws: {nll:.4f} nats{extra}")
    if not args.no_plot and data.shape[1] == 2:
        from .plot import plot_run

        written = plot_run(flow, data, run_dir, seed=args.seed)
        if written:
            out("plots: " + ", ".join(written))
        else:
            out("plots skipped: matplotlib is not installed (pip install 'nfcore[plot]')")
    out(f"model: {os.path.join(run_dir, 'model.npz')}   history: {os.path.join(run_dir, 'history.csv')}")
    return 0


def _bpd(log_prob, dim):
    """-log p / (D log 2): a discrete model's negative log-likelihood in bits per dimension."""
    return -np.asarray(log_prob, dtype=np.float64) / (dim * np.log(2.0))


def _train_images(args, out, epochs_given=False):
    """nfcore train for images: a multi-scale glow/realnvp with Dequantize first; reports bits/dim."""
    _fill_defaults(args, depth=2)
    from . import models
    from .data import load_digit_images, load_images
    from .train import bits_per_dim, fit

    if args.flow not in ("glow", "realnvp"):
        raise ConfigError(f"--flow {args.flow} takes vectors; image data work with --flow glow or realnvp")
    _fill_defaults(args, layers=8, epochs=40, hidden=128, batch_size=64, lr=1e-3)
    val = test = None
    if args.data == "digits":
        images, levels = load_digit_images("train"), 17
        val, test = load_digit_images("val"), load_digit_images("test")
        if args.levels not in (None, 17):
            raise ConfigError("the digits have 17 levels (0..16)")
    else:
        images, levels = load_images(args.data, args.levels)
    hidden = args.hidden
    config = {
        "flow": args.flow, "shape": list(images.shape[1:]), "levels": levels, "layers": args.layers,
        "scales": args.scales, "hidden": [hidden] * args.depth, "dtype": args.dtype, "seed": args.seed,
        "base": "diag" if args.prior == "auto" else args.prior,
        "prior_components": args.prior_components, "prior_hidden": [args.prior_hidden] * 2,
    }
    flow = models.build(config, allow_large=args.allow_large)
    if args.device != "cpu":
        flow.to(args.device)
    dim = int(np.prod(images.shape[1:]))
    name = os.path.splitext(os.path.basename(str(args.data)))[0]
    run_dir = args.out if args.out is not None else os.path.join(
        "runs", f"{args.flow}-{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    out(f"nfcore train: {args.flow} ({args.scales} scales x {args.layers} steps, hidden {config['hidden']}), "
        f"{flow.num_parameters()} parameters, images {args.data} {images.shape} with {levels} levels, "
        f"{args.dtype} on {args.device} -> {run_dir}")
    t0 = time.perf_counter()

    def cast(a):
        return None if a is None else a.astype(args.dtype)

    history = fit(flow, cast(images), val_data=cast(val), epochs=_resume_epochs(args, epochs_given),
                  batch_size=args.batch_size,
                  lr=args.lr, clip_norm=args.clip_norm, patience=args.patience, seed=args.seed,
                  out_dir=run_dir, resume=args.resume, log=out, lr_schedule="cosine", workers=args.workers,
                  meta={"data": str(args.data), "n_train": int(images.shape[0]), "levels": levels})
    out(f"trained {len(history.rows)} epochs in {time.perf_counter() - t0:.1f} s; best validation "
        f"{float(_bpd(-history.best_val, dim)):.4f} bits/dim (epoch {history.best_epoch + 1})")
    if test is not None:
        # the dequantisation bound with fresh noise: average a few draws for a steadier figure
        bpd = bits_per_dim(flow, cast(test), draws=4)
        out(f"test: {bpd:.4f} bits/dim ({bpd * dim * np.log(2.0):.2f} nats per image) on the "
            f"{test.shape[0]} test images of the fixed split")
    if not args.no_plot:
        from .plot import save_image_grid

        path = os.path.join(run_dir, "samples.png")
        if save_image_grid(np.asarray(flow.sample(64, seed=args.seed, temperature=0.7)), path, levels):
            out(f"samples (temperature 0.7): {path}")
    out(f"model: {os.path.join(run_dir, 'model.npz')}   history: {os.path.join(run_dir, 'history.csv')}")
    return 0


def _image_config(flow):
    cfg = flow.config or {}
    return (cfg.get("shape"), cfg.get("levels")) if cfg.get("shape") else (None, None)


def cmd_logprob(args, out=print):
    """log p of every row, chunk by chunk (memory bounded whatever the file's size)."""
    from .data import open_rows
    from .errors import DataError
    from .train import load

    _use_threads(args)
    flow = load(args.model, allow_large=args.allow_large)
    shape, levels = _image_config(flow)
    if shape is not None:
        from .data import load_images

        rows = load_images(args.input, levels)[0]
    else:
        rows = open_rows(args.input)  # sliced lazily below, like the image array
        if rows.shape[1] != flow.shape[0]:
            raise DataError(f"{args.input}: the model takes rows of {flow.shape[0]} values (N, {flow.shape[0]}), "
                            f"the file has {rows.shape[1]}")
    n = len(rows)
    total, n_inf = 0.0, 0
    with RowWriter(args.output, (n,), flow.dtype) if args.output else contextlib.nullcontext() as writer:
        for start in range(0, n, CHUNK_ROWS):
            x = rows[start : start + CHUNK_ROWS]
            bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
            if bad.any():
                raise DataError(f"{args.input}: NaN or inf in row {start + int(np.argmax(bad))}")
            lp = np.asarray(flow.log_prob(x.astype(flow.dtype), workers=args.workers), dtype=np.float64)
            if np.isnan(lp).any():
                raise DataError(f"the model gives NaN for row {start + int(np.argmax(np.isnan(lp)))} of "
                                f"{args.input}; is the model sound (nfcore info)?")
            n_inf += int(np.isinf(lp).sum())
            total += float(np.sum(lp[np.isfinite(lp)]))
            if writer is not None:
                writer.write(lp)
            else:
                for v in lp:
                    out(f"{v:.6f}")
            _progress(start + len(lp), n, "rows")
    mean = total / max(n - n_inf, 1)
    note = f"; {n_inf} rows outside the model's support (log p = -inf)" if n_inf else ""
    if n == 0:
        print(f"{args.input}: no rows, nothing to evaluate", file=sys.stderr)
    elif shape is not None:
        out(f"mean {float(_bpd(mean, int(np.prod(shape)))):.4f} bits/dim over {n} images{note}")
    if args.output:
        out(f"wrote {n} log-densities to {args.output}" + (f" (mean {mean:.4f}{note})" if n else ""))
    return 0


def cmd_sample(args, out=print):
    """Draw -n samples chunk by chunk from one generator (memory bounded whatever n)."""
    from .errors import DataError
    from .train import load

    _use_threads(args)
    flow = load(args.model, allow_large=args.allow_large)
    shape, levels = _image_config(flow)
    rng = np.random.default_rng(args.seed)
    if args.output and args.output.lower().endswith(".png"):
        if shape is None:
            raise ConfigError("a .png grid is for image models; write .npy, .csv or .txt samples")
        if args.n > 1024:
            raise ConfigError(f"a PNG grid of {args.n} images is too large to view; at most 1024 (-n)")
        from .plot import save_image_grid

        x = np.asarray(flow.sample(args.n, seed=rng, temperature=args.temperature, workers=args.workers))
        if not save_image_grid(x, args.output, levels):
            raise ConfigError("writing a PNG needs matplotlib: pip install 'nfcore[plot]'")
        out(f"wrote a grid of {x.shape[0]} samples to {args.output}")
        return 0
    with (RowWriter(args.output, (args.n, *flow.shape), flow.dtype) if args.output
          else contextlib.nullcontext()) as writer:
        for start in range(0, args.n, CHUNK_ROWS):
            m = min(CHUNK_ROWS, args.n - start)
            x = np.asarray(flow.sample(m, seed=rng, temperature=args.temperature, workers=args.workers))
            if not np.all(np.isfinite(x)):
                raise DataError("the model produced NaN or inf samples (an overflow in its inverse); try a lower "
                                "--temperature")
            if writer is not None:
                writer.write(x)
            else:
                for row in x.reshape(m, -1):
                    out(",".join(f"{v:.6f}" for v in row))
            _progress(start + m, args.n, "samples")
    if args.output:
        out(f"wrote {args.n} samples to {args.output}")
    return 0


def cmd_info(args, out=print):
    from .core.module import describe
    from .train import load_checkpoint

    flow, info, _ = load_checkpoint(args.model, allow_large=args.allow_large)
    cfg = info["config"]
    out(f"model: {args.model}")
    out(f"flow: {cfg['flow']}, dim {cfg['dim']}, {cfg['layers']} layers, hidden {cfg['hidden']}, "
        f"activation {cfg['activation']}, base {cfg['base']}, dtype {cfg['dtype']}")
    if cfg.get("shape"):
        out(f"images: shape {cfg['shape']} (H, W, C), {cfg.get('levels')} levels, {cfg.get('scales')} scales")
    out(describe(flow))  # = repr(flow): the layer tree with shapes and parameter counts
    meta = info.get("meta") or {}
    if meta:
        out("training: " + json.dumps(meta, sort_keys=True))
    return 0


COMMANDS = {"train": cmd_train, "logprob": cmd_logprob, "sample": cmd_sample, "info": cmd_info}


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (NfcoreError, OSError) as err:  # OSError: a folder that cannot be written, a full disk, ...
        print(f"nfcore {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
