"""Residual flows on 2-D toy densities: nfcore's CLI defaults vs normflows' residual flow, same size and budget.

nfcore: ``nfcore train --data 8gaussians --flow iresnet`` and ``--data checkerboard --flow resflow``
(8 blocks of actnorm + residual block with a 2 -> 64 -> 64 -> 2 LipSwish MLP, c = 0.97; series
log-det with 5 terms / Russian roulette; 40 epochs of 20,000 points at batch 256, Adam 2e-3 with
cosine decay, best validation epoch kept). normflows: the same blocks (LipschitzMLP c = 0.97,
Russian roulette with the Neumann gradient, actnorm), the same data, standardisation, budget and
schedule. Both are evaluated on 20,000 fresh draws with the exact log-det (nfcore in evaluation
mode; normflows' brute-force 2-D determinant in eval mode).

    python benchmarks/quality_resflow.py [--seeds 0] [--epochs 40]
"""

import argparse
import math
import time

import numpy as np

from nfcore.cli import main as cli_main
from nfcore.data import ENTROPY, sample_toy, standardization

CASES = [("8gaussians", "iresnet"), ("checkerboard", "resflow")]


def run_normflows(data, seed, epochs):
    import normflows as nf
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = sample_toy(data, 20_000, seed=seed)
    mean, std = standardization(x)
    z = ((x - mean) / std).astype(np.float32)
    perm = rng.permutation(len(z))
    val, train = z[perm[:2000]], z[perm[2000:]]
    flows = []
    for _ in range(8):
        net = nf.nets.LipschitzMLP([2, 64, 64, 2], init_zeros=True, lipschitz_const=0.97)
        flows += [nf.flows.Residual(net, reduce_memory=True), nf.flows.ActNorm(2)]
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(2), flows)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    steps = len(train) // 256
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps)
    log_std = float(np.sum(np.log(std)))

    def nll(a):
        model.eval()
        with torch.no_grad():
            lp = model.log_prob(torch.from_numpy(a)).double().numpy()
        model.train()
        return float(-lp.mean() + log_std)

    best, best_state = math.inf, None
    t0 = time.perf_counter()
    for _ in range(epochs):
        order = rng.permutation(len(train))
        for s in range(steps):
            xb = torch.from_numpy(train[order[s * 256 : (s + 1) * 256]])
            opt.zero_grad()
            loss = model.forward_kld(xb)
            if torch.isfinite(loss):
                loss.backward()
                opt.step()
            sched.step()
        v = nll(val)
        if v < best:
            best, best_state = v, {k: t.clone() for k, t in model.state_dict().items()}
    seconds = time.perf_counter() - t0
    model.load_state_dict(best_state)
    test = sample_toy(data, 20_000, seed=10_000 + seed)
    return nll(((test - mean) / std).astype(np.float32)), seconds


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--no-peer", action="store_true")
    args = ap.parse_args(argv)
    for data, flow in CASES:
        for seed in args.seeds:
            cli_main(["train", "--data", data, "--flow", flow, "--seed", str(seed), "--epochs", str(args.epochs),
                      "--out", f"runs/quality-{flow}-{data}-{seed}", "--no-plot"])
            if not args.no_peer:
                nll, sec = run_normflows(data, seed, args.epochs)
                floor = ENTROPY[data]
                print(f"normflows residual flow on {data}, seed {seed}: test NLL {nll:.4f} (best achievable "
                      f"{floor:.3f}: gap {nll - floor:.3f}), {sec:.0f} s of training", flush=True)


if __name__ == "__main__":
    main()
