"""Residual flows on 2-D toy densities: nfcore's CLI defaults vs normflows' residual flow, same size and budget.

nfcore: ``nfcore train --data 8gaussians --flow iresnet`` and ``--data checkerboard --flow resflow``
(8 / 4 blocks of actnorm + residual block with a 2 -> 64 -> 64 -> 2 LipSwish MLP, c = 0.97; series
log-det with 5 terms / Russian roulette; 40 epochs of 20,000 / 100,000 points at batch 256, Adam
2e-3 with cosine decay, best validation epoch kept; resflow's default base is the MADE mixture
prior, ``--nfcore-prior normal`` gives it the peer's base). normflows: the same blocks (LipschitzMLP c = 0.97,
Russian roulette with the Neumann gradient, actnorm), the same data, standardisation, budget and
schedule, and ``nf.utils.update_lipschitz(model, 50)`` after every step as normflows' own
residual-flow example does (without it the spectral norms lag the weights). Both are
evaluated on 20,000 fresh draws with the exact log-det (nfcore in evaluation mode; normflows'
brute-force 2-D determinant in eval mode).

    python benchmarks/quality_resflow.py [--seeds 0] [--epochs 40] [--only resflow] [--nfcore-prior normal]
"""

import argparse
import math
import time

import numpy as np

from nfcore.cli import main as cli_main
from nfcore.data import ENTROPY, load_data, sample_toy, standardization

#: (data, nfcore flow, blocks, points): the CLI's defaults for that flow (the peer gets the same)
CASES = [("8gaussians", "iresnet", 8, 20_000), ("checkerboard", "resflow", 4, 100_000)]


def run_normflows(data, seed, epochs, blocks, n_train):
    import normflows as nf
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = load_data(data, n=n_train, seed=seed)
    mean, std = standardization(x)
    z = ((x - mean) / std).astype(np.float32)
    perm = rng.permutation(len(z))
    n_val = n_train // 10
    val, train = z[perm[:n_val]], z[perm[n_val:]]
    flows = []
    for _ in range(blocks):
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
            nf.utils.update_lipschitz(model, 50)  # as normflows' residual-flow example does every step
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
    ap.add_argument("--only", choices=[c[1] for c in CASES], default=None, help="one case only")
    ap.add_argument("--nfcore-prior", default="auto", help="nfcore's --prior (normal: the peer's base)")
    args = ap.parse_args(argv)
    for data, flow, blocks, n_train in CASES:
        if args.only not in (None, flow):
            continue
        for seed in args.seeds:
            cli_main(["train", "--data", data, "--flow", flow, "--seed", str(seed), "--epochs", str(args.epochs),
                      "--prior", args.nfcore_prior, "--out", f"runs/quality-{flow}-{data}-{seed}", "--no-plot"])
            if not args.no_peer:
                nll, sec = run_normflows(data, seed, args.epochs, blocks, n_train)
                floor = ENTROPY[data]
                print(f"normflows residual flow on {data}, seed {seed}: test NLL {nll:.4f} (best achievable "
                      f"{floor:.3f}: gap {nll - floor:.3f}), {sec:.0f} s of training", flush=True)


if __name__ == "__main__":
    main()
