"""Fused layer kernels against the op-by-op path: kernel calls, Python time and time per step.

For RealNVP D=2 (8 couplings, 2x64) and MAF D=8 (5 MADEs, 2x128), float32, one worker, at
batch 64, 256 and 1024, it reports per training step (zero grads, loss_and_grad, Adam):
- **calls**: op calls from Python (every call into the CPU backend, counted by wrapping its ops);
- **Python**: the step's time outside those calls (dispatch, allocation, the layers' glue), from
  the same wrapped run: its wall time minus the time inside the ops, minus the wrappers' own
  cost (measured on an empty op) for every call;
- **step**: the step's time unwrapped, the median of the rounds (paths interleaved).

Each path runs in a process of its own, the processes alternating round by round: the fused
kernels call scipy's OpenBLAS (numba's ``np.dot``), the op-by-op path numpy's, and interleaving the
two libraries' thread pools in one process made both paths look 1.3-1.8x slower
(benchmarks/RESULTS.md, "Session 11").

    python benchmarks/bench_fused.py [--quick] [--rounds R]
"""

import argparse
import json
import statistics
import subprocess
import sys
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
    """True: every fused kernel that applies (the default); False: the op-by-op path."""
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


def measure(fused, min_time, detail):
    """One round of one path, in this process: {(label, batch): [step seconds, calls, Python seconds]}."""
    set_path(fused)
    cost = wrapper_cost() if detail else 0.0
    out = {}
    for label, cfg in MODELS.items():
        flow = nfcore.build({**cfg, "dtype": "float32"})
        opt = nfcore.Adam(flow.parameters(), lr=1e-4)
        for batch in BATCHES:
            x = np.random.default_rng(0).normal(size=(batch, cfg["dim"])).astype(np.float32)

            def step(x=x, flow=flow, opt=opt):
                opt.zero_grad()
                flow.loss_and_grad(x, workers=1)
                opt.step()

            for _ in range(3):
                step()
            calls = python = None
            if detail:
                with OpClock() as clock:
                    reps = 50
                    t0 = time.perf_counter()
                    for _ in range(reps):
                        step()
                    wall = time.perf_counter() - t0
                calls, python = clock.calls / reps, (wall - clock.inside - cost * clock.calls) / reps
            out[f"{label}|{batch}"] = [timeit(step, min_time), calls, python]
    return out


def run(rounds, min_time):
    print(f"per training step, float32, one worker; step: median of {rounds} rounds (paths interleaved, "
          "one process each)" + ("" if rounds >= MIN_ROUNDS else f" (a smoke run: under {MIN_ROUNDS} rounds)"))
    print("| model | batch | path | calls | Python | step | fused speed-up |")
    print("|---|---|---|---|---|---|---|")
    rounds_of = {False: [], True: []}
    for r in range(rounds):
        for fused in (False, True):
            time.sleep(0.1)
            cmd = [sys.executable, __file__, "--measure", "fused" if fused else "op", "--min-time", str(min_time)]
            if r == 0:
                cmd.append("--detail")
            rounds_of[fused].append(json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                                              text=True).stdout.splitlines()[-1]))
    for key in rounds_of[False][0]:
        label, batch = key.split("|")
        med = {f: statistics.median(rd[key][0] for rd in rounds_of[f]) for f in (False, True)}
        for fused in (False, True):
            _, calls, python = rounds_of[fused][0][key]
            path = "fused" if fused else "op by op"
            speed = f"{med[False] / med[True]:.2f}x" if fused else ""
            print(f"| {label} | {batch} | {path} | {calls:.0f} | {python * 1e3:.3f} ms | "
                  f"{med[fused] * 1e3:.3f} ms | {speed} |", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one round, short timings (a smoke run)")
    p.add_argument("--rounds", type=int, default=MIN_ROUNDS)
    p.add_argument("--min-time", type=float, default=0.3)
    p.add_argument("--measure", choices=["op", "fused"], help=argparse.SUPPRESS)  # one round of one path
    p.add_argument("--detail", action="store_true", help=argparse.SUPPRESS)  # with calls and Python time
    args = p.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure == "fused", args.min_time, args.detail)))
        return None
    if args.quick:
        return run(1, 0.05)
    return run(args.rounds, args.min_time)


if __name__ == "__main__":
    main()
