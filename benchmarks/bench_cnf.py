"""Continuous-flow (FFJORD) training-step speed: nfcore's CNF vs zuko's CNF, CPU, float32.

Both: one continuous block whose dynamics is an MLP with two hidden layers of 64 tanh units
(nfcore: concat-squash layers, the time gating and shifting each unit; zuko: its MLP on
[x, cos/sin time embedding with 3 frequencies], zuko's default), the adaptive Dormand-Prince 5(4)
solver at rtol = atol = 1e-5, the same trace mode (exact, or Hutchinson's estimator with one
Gaussian probe: zuko's ``exact=False``), a standard normal base, Adam at lr 1e-3, D = 2, batch
512 of standardised two-moons draws (the same batches for both). nfcore takes its gradient by
the adjoint ODE (its default), zuko by its adaptive checkpoint adjoint (the forward steps kept
and differentiated: discretise-then-optimise with checkpoints); nfcore also with its
``discretise`` gradient, the same idea. nfcore runs without the RNODE penalties, as zuko has none.

Dynamics that have not been trained are nearly linear and need a handful of function evaluations,
so both models are first trained ``--warm`` steps (default 300) on their own, and then timed over
further training steps, interleaved round by round (the median round reported). NFE per step
counts every evaluation of the dynamics in the forward and backward solves; time per NFE is the
step's time divided by them.

    pip install '.[bench]'     # torch (CPU), zuko
    python benchmarks/bench_cnf.py [--quick] [--rounds R] [--warm W]
"""

import argparse
import statistics
import time

import numpy as np
from _timing import equal_threads, protocol

import nfcore

D, BATCH, HIDDEN, TOL, LR = 2, 512, 64, 1e-5, 1e-3


def _batches(seed=0, n=20_000):
    x = nfcore.data.sample_toy("moons", n, seed=seed)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    rng = np.random.default_rng(seed)
    while True:
        yield x[rng.choice(n, BATCH, replace=False)]


class NfcoreCase:
    def __init__(self, trace, gradient):
        self.name = f"nfcore ({gradient})"
        self.flow = nfcore.build({"flow": "ffjord", "dim": D, "layers": 1, "hidden": [HIDDEN, HIDDEN],
                                  "activation": "tanh", "rtol": TOL, "atol": TOL, "trace": trace,
                                  "gradient": gradient, "dtype": "float32"})
        self.cnf = self.flow.transform.transforms[0]
        self.opt = nfcore.Adam(self.flow.parameters(), lr=LR)
        self.data = _batches()
        self.nfe = []

    def step(self):
        self.opt.zero_grad()
        self.flow.loss_and_grad(next(self.data), workers=1)
        self.opt.step()
        s = self.cnf.stats
        self.nfe.append(s["forward_nfe"] + s["backward_nfe"])


class ZukoCase:
    name = "zuko"

    def __init__(self, trace):
        import torch
        import zuko

        torch.manual_seed(0)
        self.torch = torch
        self.flow = zuko.flows.CNF(D, hidden_features=(HIDDEN, HIDDEN), activation=torch.nn.Tanh, atol=TOL,
                                   rtol=TOL, exact=trace == "exact")
        self.opt = torch.optim.Adam(self.flow.parameters(), lr=LR)
        self.data = _batches()
        self.count = 0
        ode = self.flow.transform.ode
        inner = ode.forward

        def counted(*args, **kwargs):
            self.count += 1
            return inner(*args, **kwargs)

        ode.forward = counted
        self.nfe = []

    def step(self):
        self.count = 0
        x = self.torch.from_numpy(next(self.data))
        self.opt.zero_grad()
        loss = -self.flow().log_prob(x).mean()
        loss.backward()
        self.opt.step()
        self.nfe.append(self.count)


def _timed(case, min_time):
    """(seconds per step, NFE per step) over steps lasting at least min_time."""
    start = len(case.nfe)
    t0 = time.perf_counter()
    n = 0
    while True:
        case.step()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_time:
            return dt / n, float(np.mean(case.nfe[start:]))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one round, 20 warm steps (a smoke run)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warm", type=int, default=300, help="training steps before timing")
    p.add_argument("--min-time", type=float, default=3.0, help="seconds per library per round")
    p.add_argument("--trace", nargs="+", default=["exact", "hutchinson"], choices=["exact", "hutchinson"])
    args = p.parse_args()
    rounds, warm, min_time = (1, 20, 1.0) if args.quick else (args.rounds, args.warm, args.min_time)
    threads = equal_threads()
    print(f"FFJORD training step, D={D}, batch {BATCH}, 2x{HIDDEN} tanh, dopri5 rtol=atol={TOL:g}, float32; "
          f"{warm} warm steps each; {protocol(rounds, threads)}")
    print("| trace | library | ms / step | NFE / step | us / NFE | nfcore speedup |")
    print("|---|---|---|---|---|---|")
    for trace in args.trace:
        cases = [NfcoreCase(trace, "adjoint"), NfcoreCase(trace, "discretise"), ZukoCase(trace)]
        for c in cases:
            t0 = time.perf_counter()
            for _ in range(warm):
                c.step()
            print(f"  ({c.name}, {trace}: {warm} warm steps in {time.perf_counter() - t0:.1f} s, "
                  f"last NFE {c.nfe[-1]})", flush=True)
        times = {c.name: [] for c in cases}
        nfes = {c.name: [] for c in cases}
        for _ in range(rounds):
            for c in cases:
                time.sleep(0.5)
                t, nfe = _timed(c, min_time)
                times[c.name].append(t)
                nfes[c.name].append(nfe)
        med = {k: statistics.median(v) for k, v in times.items()}
        for c in cases:
            nfe = statistics.median(nfes[c.name])
            ours = c.name.startswith("nfcore")
            print(f"| {trace} | {c.name} | {med[c.name] * 1e3:.1f} | {nfe:.0f} | {med[c.name] / nfe * 1e6:.0f} | "
                  + (f"{med['zuko'] / med[c.name]:.2f}x |" if ours else "|"), flush=True)


if __name__ == "__main__":
    main()
