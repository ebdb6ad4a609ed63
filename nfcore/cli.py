"""The ``nfcore`` command: train | logprob | sample | info.

    nfcore train                       # RealNVP on two moons, written to runs/<name>/
    nfcore logprob runs/x/model.npz data.npy --output lp.npy
    nfcore sample runs/x/model.npz -n 1000 --output samples.npy
    nfcore info runs/x/model.npz
"""

import argparse
import json
import os
import sys
import time

import numpy as np

from .errors import ConfigError, NfcoreError

__all__ = ["main", "build_parser"]


def build_parser():
    p = argparse.ArgumentParser(prog="nfcore", description="Normalizing flows with hand-written gradients.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="fit a flow to data by maximum likelihood")
    t.add_argument("--data", default="moons", help="built-in density name or a .npy/.csv path (default: moons)")
    t.add_argument("--flow", default="realnvp", choices=["realnvp", "nice", "maf", "iaf"],
                   help="flow family (default: realnvp; iaf cannot be fitted to data by maximum likelihood)")
    t.add_argument("--layers", type=int, default=8, help="coupling layers (default: 8)")
    t.add_argument("--prior", default="auto", choices=["auto", "normal", "diag", "made", "made-mog"],
                   help="base distribution: normal, diag, or the autoregressive made / made-mog prior "
                        "(default auto: made-mog for maf, i.e. 'MAF MoG'; normal otherwise)")
    t.add_argument("--hidden", type=int, default=64, help="hidden width of the conditioner MLPs (default: 64)")
    t.add_argument("--depth", type=int, default=2, help="hidden layers per conditioner (default: 2)")
    t.add_argument("--epochs", type=int, default=40, help="epochs (default: 40)")
    t.add_argument("--batch-size", type=int, default=256, help="minibatch size (default: 256)")
    t.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: 2e-3, cosine decay)")
    t.add_argument("--n-train", type=int, default=20_000, help="points drawn from a built-in density (default: 20000)")
    t.add_argument("--patience", type=int, default=None, help="early stopping patience in epochs (default: off)")
    t.add_argument("--clip-norm", type=float, default=None, help="gradient-norm clipping (default: off)")
    t.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="(default: float32)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    t.add_argument("--threads", type=int, default=None, help="BLAS threads (default: all cores)")
    t.add_argument("--out", default=None, help="run folder (default: runs/<flow>-<data>-<time>)")
    t.add_argument("--resume", default=None, help="continue from a run folder's last.npz")
    t.add_argument("--no-plot", action="store_true", help="skip the PNGs even if matplotlib is installed")

    lp = sub.add_parser("logprob", help="log-density of every row of a .npy/.csv file")
    lp.add_argument("model")
    lp.add_argument("input")
    lp.add_argument("--output", default=None, help=".npy (or .csv) file for the values; default prints them")

    s = sub.add_parser("sample", help="draw samples from a trained flow")
    s.add_argument("model")
    s.add_argument("-n", type=int, required=True, help="number of samples")
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--output", default=None, help=".npy or .csv file; default prints CSV")

    i = sub.add_parser("info", help="architecture, parameter count and training summary of a checkpoint")
    i.add_argument("model")
    return p


def _save_array(path, arr):
    if path.endswith(".csv"):
        np.savetxt(path, arr, delimiter=",")
    else:
        np.save(path, arr)


def cmd_train(args, out=print):
    from . import models
    from .data import ENTROPY, TOY_DENSITIES, load_data, sample_toy, standardization
    from .train import evaluate_nll, fit

    if args.threads is not None:
        from .threads import set_num_threads

        set_num_threads(args.threads)
    if args.flow == "iaf":
        raise ConfigError(
            "an IAF's density direction is sequential and has no gradient, so it cannot be fitted to data by "
            "maximum likelihood; use --flow maf here, or fit an IAF to an unnormalised density with "
            "nfcore.fit_reverse_kl (examples/reverse_kl_banana.py)"
        )
    data = load_data(args.data, n=args.n_train, seed=args.seed)
    mean, std = standardization(data)
    config = {
        "flow": args.flow, "dim": data.shape[1], "layers": args.layers, "hidden": [args.hidden] * args.depth,
        "dtype": args.dtype, "seed": args.seed,
        "base": args.prior if args.prior != "auto" else ("made-mog" if args.flow == "maf" else "normal"),
        "standardize": {"mean": mean.tolist(), "std": std.tolist()},
    }
    if data.shape[1] > 2 and args.flow in ("realnvp", "nice"):
        config["permute"] = "random"
    flow = models.build(config)
    if args.device != "cpu":
        flow.to(args.device)
    name = os.path.splitext(os.path.basename(str(args.data)))[0]
    run_dir = args.out or os.path.join("runs", f"{args.flow}-{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    out(f"nfcore train: {args.flow} ({args.layers} layers, hidden {config['hidden']}), {flow.num_parameters()} "
        f"parameters, data {args.data} {data.shape}, {args.dtype} on {args.device} -> {run_dir}")
    t0 = time.perf_counter()
    history = fit(flow, data.astype(args.dtype), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                  clip_norm=args.clip_norm, patience=args.patience, seed=args.seed, out_dir=run_dir,
                  resume=args.resume, log=out, lr_schedule="cosine",
                  meta={"data": str(args.data), "n_train": int(data.shape[0])})
    elapsed = time.perf_counter() - t0
    out(f"trained {len(history.rows)} epochs in {elapsed:.1f} s; best validation NLL {history.best_val:.4f} "
        f"(epoch {history.best_epoch + 1})")
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


def cmd_logprob(args, out=print):
    from .data import load_array
    from .train import load

    flow = load(args.model)
    x = load_array(args.input).astype(flow.dtype)
    lp = np.asarray(flow.log_prob(x))
    if args.output:
        _save_array(args.output, lp)
        out(f"wrote {lp.shape[0]} log-densities to {args.output} (mean {lp.mean():.4f})")
    else:
        for v in lp:
            out(f"{v:.6f}")
    return 0


def cmd_sample(args, out=print):
    from .train import load

    flow = load(args.model)
    x = np.asarray(flow.sample(args.n, seed=args.seed))
    if args.output:
        _save_array(args.output, x)
        out(f"wrote {x.shape[0]} samples to {args.output}")
    else:
        for row in x.reshape(x.shape[0], -1):
            out(",".join(f"{v:.6f}" for v in row))
    return 0


def cmd_info(args, out=print):
    from .train import load_checkpoint

    flow, info, _ = load_checkpoint(args.model)
    cfg = info["config"]
    out(f"model: {args.model}")
    out(f"flow: {cfg['flow']}, dim {cfg['dim']}, {cfg['layers']} layers, hidden {cfg['hidden']}, "
        f"activation {cfg['activation']}, base {cfg['base']}, dtype {cfg['dtype']}")
    out(f"parameters: {flow.num_parameters()}")
    out("layers: " + ", ".join(type(t).__name__ for t in flow.transform.transforms))
    meta = info.get("meta") or {}
    if meta:
        out("training: " + json.dumps(meta, sort_keys=True))
    return 0


COMMANDS = {"train": cmd_train, "logprob": cmd_logprob, "sample": cmd_sample, "info": cmd_info}


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except NfcoreError as err:
        print(f"nfcore {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
