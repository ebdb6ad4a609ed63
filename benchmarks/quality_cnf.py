"""FFJORD on 2-D toy densities: nfcore's CLI defaults vs zuko's CNF, same size, tolerance and time budget.

nfcore: ``nfcore train --flow ffjord --data D`` with every default (one continuous block, a
concat-squash 2 -> 64 -> 64 -> 64 -> 2 tanh dynamics, dopri5 at rtol = atol = 1e-5, exact trace,
adjoint gradients, the RNODE weights of ``nfcore.cli.FFJORD_DEFAULTS``, the CLI's epochs of 100,000
points at batch 256, Adam with cosine decay, the best validation epoch kept). zuko: its
``CNF`` with the same hidden widths (3 x 64) and tanh (on [x, time embedding]), the same tolerance, exact trace,
the same standardised data, batch, learning rate and schedule, trained for the **wall time
nfcore's run took** (its schedule planned for nfcore's number of steps), the best validation
epoch kept. Both are scored on the same 20,000 fresh draws (nfcore's CLI line ``test NLL``), and
their function evaluations per training step measured at the end (forward and backward solves
of one batch).

    python benchmarks/quality_cnf.py [--data moons 8gaussians checkerboard] [--seed 0] [--no-peer]
    python benchmarks/quality_cnf.py --data moons --peer-only SECONDS STEPS   # zuko alone, given nfcore's run
"""

import argparse
import io
import math
import re
import time
from contextlib import redirect_stdout

import numpy as np

import nfcore
from nfcore.cli import _VECTOR_DEFAULTS
from nfcore.cli import main as cli_main
from nfcore.data import ENTROPY, load_data, sample_toy, standardization

BATCH = 256
#: the points ``nfcore train --flow ffjord`` draws (its default), given to the peer too
N_TRAIN = _VECTOR_DEFAULTS["ffjord"]["n_train"]
#: what ``nfcore train --flow ffjord`` trains (its defaults), given to the peer too
HIDDEN, LR = (64, 64, 64), 3e-3


def run_nfcore(data, seed, extra):
    out = f"runs/quality-ffjord-{data}-{seed}"
    buf = io.StringIO()
    t0 = time.perf_counter()
    with redirect_stdout(buf):
        cli_main(["train", "--flow", "ffjord", "--data", data, "--seed", str(seed), "--out", out, "--no-plot",
                  *extra])
    wall = time.perf_counter() - t0
    text = buf.getvalue()
    print(text, flush=True)
    nll = float(re.search(r"test NLL on \d+ fresh draws: ([0-9.\-]+)", text).group(1))
    trained = float(re.search(r"trained \d+ epochs in ([0-9.]+) s", text).group(1))
    steps = int(re.search(r"\((\d+) steps\)", text).group(1))
    flow = nfcore.load(f"{out}/model.npz")
    x = load_data(data, n=N_TRAIN, seed=seed)[:BATCH].astype(flow.dtype)
    flow.loss_and_grad(x, workers=1)
    cnfs = [m for m in flow.modules() if isinstance(m, nfcore.CNF)]
    nfe = sum(c.stats["forward_nfe"] + c.stats["backward_nfe"] for c in cnfs)
    assert tuple(cnfs[0].net.dims[1:-1]) == HIDDEN, "the peer is given nfcore's default widths"
    return nll, trained, wall, steps, nfe


def run_zuko(data, seed, budget, planned_steps):
    import torch
    import zuko

    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 5])
    x = load_data(data, n=N_TRAIN, seed=seed)
    mean, std = standardization(x)
    z = ((x - mean) / std).astype(np.float32)
    perm = rng.permutation(len(z))
    n_val = len(z) // 10
    val, train = z[perm[:n_val]], z[perm[n_val:]]
    flow = zuko.flows.CNF(2, hidden_features=HIDDEN, activation=torch.nn.Tanh, atol=1e-5, rtol=1e-5, exact=True)
    opt = torch.optim.Adam(flow.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, planned_steps)
    log_std = float(np.sum(np.log(std)))
    count = [0]
    inner = flow.transform.ode.forward

    def counted(*a, **k):
        count[0] += 1
        return inner(*a, **k)

    flow.transform.ode.forward = counted

    def nll(a):
        flow.eval()
        with torch.no_grad():
            lp = torch.cat([flow().log_prob(torch.from_numpy(a[i : i + 5000])) for i in range(0, len(a), 5000)])
        flow.train()
        return float(-lp.double().mean() + log_std)

    best, best_state = math.inf, None
    t0 = time.perf_counter()
    steps = epochs = 0
    per_epoch = len(train) // BATCH
    while time.perf_counter() - t0 < budget:
        order = rng.permutation(len(train))
        for s in range(per_epoch):
            if time.perf_counter() - t0 >= budget:
                break
            opt.zero_grad()
            loss = -flow().log_prob(torch.from_numpy(train[order[s * BATCH : (s + 1) * BATCH]])).mean()
            loss.backward()
            opt.step()
            if steps < planned_steps:
                sched.step()
            steps += 1
        epochs += 1
        v = nll(val)
        if v < best:
            best, best_state = v, {k: t.clone() for k, t in flow.state_dict().items()}
    seconds = time.perf_counter() - t0
    flow.load_state_dict(best_state)
    test = sample_toy(data, 20_000, seed=10_000 + seed)
    score = nll(((test - mean) / std).astype(np.float32))
    count[0] = 0
    opt.zero_grad()
    (-flow().log_prob(torch.from_numpy(train[:BATCH])).mean()).backward()
    return score, seconds, steps, count[0]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", nargs="+", default=["moons", "8gaussians", "checkerboard"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--peer-only", nargs=2, type=float, metavar=("SECONDS", "STEPS"),
                    help="run zuko alone with nfcore's training time and planned steps from an earlier run")
    args = ap.parse_args(argv)
    nfcore.set_num_threads(2)
    rows = []
    for data in args.data:
        floor = ENTROPY[data]
        if args.peer_only:
            import torch

            torch.set_num_threads(2)
            znll, sec, zsteps, znfe = run_zuko(data, args.seed, args.peer_only[0], int(args.peer_only[1]))
            print(f"| {data} | zuko | {znll:.4f} | {znll - floor:+.3f} | {sec:.0f} s | {zsteps} | {znfe} |", flush=True)
            continue
        nll, trained, wall, steps, nfe = run_nfcore(data, args.seed, [])
        rows.append(f"| {data} | nfcore | {nll:.4f} | {nll - floor:+.3f} | {trained:.0f} s ({wall:.0f} s with "
                    f"evaluation) | {steps} | {nfe} |")
        print(rows[-1], flush=True)
        if not args.no_peer:
            import torch

            torch.set_num_threads(2)
            znll, sec, zsteps, znfe = run_zuko(data, args.seed, trained, steps)
            rows.append(f"| {data} | zuko | {znll:.4f} | {znll - floor:+.3f} | {sec:.0f} s | {zsteps} | {znfe} |")
            print(rows[-1], flush=True)
    print("| data | library | test NLL | gap to the entropy | training time | steps | NFE / step at the end |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
