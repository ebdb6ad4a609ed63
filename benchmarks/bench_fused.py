"""Fused layer kernels against the op-by-op path: kernel calls, Python time and time per step.

For RealNVP D=2 (8 couplings, 2x64) and MAF D=8 (5 MADEs, 2x128), float32, one worker, at
batch 64, 256 and 1024, it reports per training step (zero grads, loss_and_grad, Adam):
- **calls**: op calls from Python (every call into the CPU backend, counted by wrapping its ops);
- **Python**: the step's time outside those calls (dispatch, allocation, the layers' glue), from
  the same wrapped run: its wall time minus the time inside the ops, minus the wrappers' own
  cost (measured on an empty op) for every call;
- **step**: the step's time unwrapped, the median of the rounds (paths interleaved).

    python benchmarks/bench_fused.py [--quick] [--rounds R]
"""

import argparse
import statistics
import time

import numpy as np
from _timing import MIN_ROUNDS, timeit

import nfcore
from nfcore.kernels import cpu
from nfcore.transforms.autoregressive import _Autoregressive
from nfcore.transforms.coupling import Coupling

MODELS = {
    "realnvp D=2 8x(2x64)": {"flow": "realnvp", "dim": 2, "layers": 8, "hidden": [64, 64]},
    "maf D=8 5x(2x128)": {"flow": "maf", "dim": 8, "layers": 5, "hidden": [128, 128]},
}
BATCHES = [64, 256, 1024]


def set_path(fused):
    """True: every fused kernel that applies (MAF included, which otherwise fuses on shards only)."""
    Coupling.fused = fused
    _Autoregressive.fused = fused


class OpClock:
    """Wraps every op of the CPU backend: counts the calls and the time spent inside them."""

    def __init__(self):
        self.calls = 0
        self.inside = 0.0
        self.saved = {}

    def __enter__(self):
        for name in cpu.__all__:
            op = getattr(cpu, name)
            if not callable(op):
                continue
            self.saved[name] = op

            def wrapped(*args, _op=op, **kwargs):
                t0 = time.perf_counter()
                try:
                    return _op(*args, **kwargs)
                finally:
                    self.inside += time.perf_counter() - t0
                    self.calls += 1

            setattr(cpu, name, wrapped)
        return self

    def __exit__(self, *exc):
        for name, op in self.saved.items():
            setattr(cpu, name, op)


def wrapper_cost(n=20000):
    """Seconds a wrapped call adds to an empty op."""
    clock = OpClock()
    cpu.__dict__["_bench_noop"] = lambda: None
    cpu.__all__.append("_bench_noop")
    try:
        with clock:
            f = cpu._bench_noop
            t0 = time.perf_counter()
            for _ in range(n):
                f()
            wrapped = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        f = cpu._bench_noop
        for _ in range(n):
            f()
        plain = (time.perf_counter() - t0) / n
    finally:
        cpu.__all__.remove("_bench_noop")
        del cpu.__dict__["_bench_noop"]
    return max(0.0, wrapped - plain)


def run(rounds, min_time):
    cost = wrapper_cost()
    print(f"per training step, float32, one worker; step: median of {rounds} rounds (paths interleaved)"
          + ("" if rounds >= MIN_ROUNDS else f" (a smoke run: under {MIN_ROUNDS} rounds)"))
    print("| model | batch | path | calls | Python | step | fused speed-up |")
    print("|---|---|---|---|---|---|---|")
    for label, cfg in MODELS.items():
        flow = nfcore.build({**cfg, "dtype": "float32"})
        opt = nfcore.Adam(flow.parameters(), lr=1e-4)
        for batch in BATCHES:
            x = np.random.default_rng(0).normal(size=(batch, cfg["dim"])).astype(np.float32)

            def step(fused, x=x, flow=flow, opt=opt):
                set_path(fused)
                opt.zero_grad()
                flow.loss_and_grad(x, workers=1)
                opt.step()

            detail = {}
            for fused in (False, True):
                for _ in range(3):
                    step(fused)
                with OpClock() as clock:
                    reps = 50
                    t0 = time.perf_counter()
                    for _ in range(reps):
                        step(fused)
                    wall = time.perf_counter() - t0
                detail[fused] = (clock.calls / reps, (wall - clock.inside - cost * clock.calls) / reps)
            times = {False: [], True: []}
            for _ in range(rounds):
                for fused in (False, True):
                    time.sleep(0.1)
                    times[fused].append(timeit(lambda f=fused: step(f), min_time))
            med = {k: statistics.median(v) for k, v in times.items()}
            for fused in (False, True):
                calls, python = detail[fused]
                path = "fused" if fused else "op by op"
                speed = f"{med[False] / med[True]:.2f}x" if fused else ""
                print(f"| {label} | {batch} | {path} | {calls:.0f} | {python * 1e3:.3f} ms | "
                      f"{med[fused] * 1e3:.3f} ms | {speed} |", flush=True)
    set_path(True)
    Coupling.fused, _Autoregressive.fused = True, "auto"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one round, short timings (a smoke run)")
    p.add_argument("--rounds", type=int, default=MIN_ROUNDS)
    p.add_argument("--min-time", type=float, default=0.3)
    args = p.parse_args(argv)
    if args.quick:
        return run(1, 0.05)
    return run(args.rounds, args.min_time)


if __name__ == "__main__":
    main()
