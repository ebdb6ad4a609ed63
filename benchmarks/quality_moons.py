"""Quality at equal budget: test NLL of RealNVP on two moons, nfcore vs zuko vs nflows.

Every library gets the same data (20,000 draws, 10% held out, standardised), the same
architecture (8 affine couplings, MLP 2x64, ReLU), the same budget (40 epochs of batch 256,
Adam, lr 2e-3 with cosine decay) and is scored on the same 20,000 fresh draws, in nats of the
raw data (the standardisation's log-det counted). The best achievable is 1.009 nats.

    python benchmarks/quality_moons.py [--epochs E] [--seeds S]
"""

import argparse
import math
import time

import numpy as np

import nfcore
from nfcore.data import ENTROPY, sample_toy, standardization


def data(seed):
    x = sample_toy("moons", 20_000, seed=seed)
    test = sample_toy("moons", 20_000, seed=10_000 + seed)
    return x, test


def run_nfcore(x, test, epochs, seed):
    mean, std = standardization(x)
    flow = nfcore.build({"flow": "realnvp", "dim": 2, "layers": 8, "hidden": [64, 64], "dtype": "float32",
                         "seed": seed, "standardize": {"mean": mean, "std": std}})
    t = time.perf_counter()
    nfcore.fit(flow, x.astype(np.float32), epochs=epochs, batch_size=256, lr=2e-3, lr_schedule="cosine",
               seed=seed, log=None)
    return nfcore.evaluate_nll(flow, test.astype(np.float32)), time.perf_counter() - t


def run_torch(make_logprob, params, x, test, epochs, seed):
    """Same loop as nfcore.fit: 10% validation split, best-validation weights kept."""
    import copy

    import torch

    torch.manual_seed(seed)
    mean, std = standardization(x)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(x))
    n_val = len(x) // 10
    xs = torch.from_numpy(((x - mean) / std).astype(np.float32))
    val, train = xs[perm[:n_val]], xs[perm[n_val:]]
    module, logprob = make_logprob()
    opt = torch.optim.Adam(params(module), lr=2e-3)
    steps_per_epoch = len(train) // 256
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    best, best_state = math.inf, None
    t = time.perf_counter()
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(train)))
        for s in range(steps_per_epoch):
            xb = train[order[s * 256 : (s + 1) * 256]]
            opt.zero_grad()
            loss = -logprob(module, xb).mean()
            loss.backward()
            opt.step()
            sched.step()
        with torch.no_grad():
            v = -logprob(module, val).mean().item()
        if v < best:
            best, best_state = v, copy.deepcopy(module.state_dict())
    elapsed = time.perf_counter() - t
    module.load_state_dict(best_state)
    with torch.no_grad():
        lp = logprob(module, torch.from_numpy(((test - mean) / std).astype(np.float32))).double().numpy()
    return float(-(lp.mean() - np.log(std).sum())), elapsed


def zuko_case():
    import zuko

    def make():
        flow = zuko.flows.RealNVP(2, transforms=8, hidden_features=(64, 64))
        return flow, lambda m, xb: m().log_prob(xb)

    return make, lambda m: m.parameters()


def nflows_case():
    import torch
    from nflows.distributions import StandardNormal
    from nflows.flows import Flow
    from nflows.nn.nets import MLP
    from nflows.transforms import AffineCouplingTransform, CompositeTransform

    class Net(torch.nn.Module):
        def __init__(self, i, o):
            super().__init__()
            self.mlp = MLP((i,), (o,), hidden_sizes=[64, 64])

        def forward(self, x, context=None):
            return self.mlp(x)

    def make():
        ts = [AffineCouplingTransform((torch.arange(2) + k) % 2, Net) for k in range(8)]
        flow = Flow(CompositeTransform(ts), StandardNormal([2]))
        return flow, lambda m, xb: m.log_prob(xb)

    return make, lambda m: m.parameters()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    results = {"nfcore": [], "zuko": [], "nflows": []}
    times = {k: [] for k in results}
    for seed in range(args.seeds):
        x, test = data(seed)
        nll, t = run_nfcore(x, test, args.epochs, seed)
        results["nfcore"].append(nll)
        times["nfcore"].append(t)
        for name, case in (("zuko", zuko_case), ("nflows", nflows_case)):
            make, params = case()
            nll, t = run_torch(make, params, x, test, args.epochs, seed)
            results[name].append(nll)
            times[name].append(t)
        print(f"seed {seed}: " + ", ".join(f"{k} {v[-1]:.4f}" for k, v in results.items()), flush=True)
    print(f"\ntwo moons, RealNVP 8x(2x64), {args.epochs} epochs, batch 256; best achievable {ENTROPY['moons']:.3f}")
    print("| library | test NLL (mean over seeds) | per seed | training time (s, mean) |")
    print("|---|---|---|---|")
    for k, v in results.items():
        print(f"| {k} | {np.mean(v):.4f} | {', '.join(f'{a:.4f}' for a in v)} | {np.mean(times[k]):.1f} |")


if __name__ == "__main__":
    main()
