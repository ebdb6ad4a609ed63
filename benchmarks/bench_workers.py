"""Worker-thread scaling: training-step throughput of nfcore with W = 1, 2, 4, ... workers.

Each row is one model and batch; each cell the samples/s of a training step (zero grads,
``loss_and_grad(x, workers=W)``, Adam) with W workers, the median of the rounds (the values of W
interleaved within each round), float32. W runs up to the cores this process may use. BLAS is
held at one thread per worker while workers run; W = 1 runs with BLAS on every core (nfcore's
default), so "best vs W=1" is what a user gains over the default. The first column, one worker
with BLAS held at one thread, is one core's throughput: "best vs one core" is how well W workers
use W cores (where BLAS already splits one worker's products across the cores, the first ratio
stays low however well the workers scale). The last column is the worker count
``workers=None`` picks for that batch.

    python benchmarks/bench_workers.py [--quick] [--rounds R] [--model realnvp ...]
"""

import argparse
import os
import statistics
import time

import numpy as np
from _timing import MIN_ROUNDS, timeit

import nfcore
from nfcore.threads import blas_limit, core_budget, workers_for

MODELS = {  # name: (config, batches)
    "realnvp": ({"flow": "realnvp", "dim": 2, "layers": 8, "hidden": [64, 64]}, [256, 1024, 4096, 16384]),
    "maf": ({"flow": "maf", "dim": 8, "layers": 5, "hidden": [128, 128]}, [256, 1024, 4096]),
    "glow": ({"flow": "glow", "shape": [16, 16, 3], "scales": 2, "layers": 4, "hidden": [64, 64], "base": "diag"},
             [64, 256]),
    "resflow": ({"flow": "resflow", "dim": 16, "layers": 8, "hidden": [128, 128], "base": "diag"}, [1024, 4096]),
}


def worker_counts():
    cores = core_budget()
    return [w for w in (1, 2, 4, 8, 16, 32, 64) if w <= cores]


def run(models, rounds, min_time, pause=0.2):
    counts = worker_counts()
    print(f"training-step samples/s, float32, median of {rounds} rounds (W interleaved), {core_budget()} cores"
          + ("" if rounds >= MIN_ROUNDS else f" (a smoke run: under {MIN_ROUNDS} rounds)"))
    print("| model | batch | W=1, one core | " + " | ".join(f"W={w}" for w in counts)
          + " | best vs W=1 | best vs one core | auto W |")
    print("|" + "---|" * (len(counts) + 6))
    rows = []
    for name in models:
        cfg, batches = MODELS[name]
        flow = nfcore.build({**cfg, "dtype": "float32"})
        opt = nfcore.Adam(flow.parameters(), lr=1e-4)
        for batch in batches:
            x = np.random.default_rng(0).normal(size=(batch, *flow.shape)).astype(np.float32)

            def step(w, x=x, flow=flow, opt=opt):
                opt.zero_grad()
                flow.loss_and_grad(x, workers=w)
                opt.step()

            def one_core(step=step):
                with blas_limit(1):  # held for the whole timing: no switch per step
                    return timeit(lambda: step(1), min_time)

            for w in counts:  # warm-up: compile, replicas, ActNorm's initialisation
                for _ in range(2):
                    step(w)
            times = {w: [] for w in ["core", *counts]}
            for _ in range(rounds):
                for w in times:
                    time.sleep(pause)
                    times[w].append(one_core() if w == "core" else timeit(lambda w=w: step(w), min_time))
            med = {w: statistics.median(v) for w, v in times.items()}
            best = min(counts, key=med.get)
            auto = workers_for(batch, None, "cpu", flow._shard_rows)
            cells = [f"{batch / med[w]:,.0f}" for w in ["core", *counts]]
            print(f"| {name} | {batch} | " + " | ".join(cells)
                  + f" | {med[1] / med[best]:.2f}x (W={best}) | {med['core'] / med[best]:.2f}x | {auto} |",
                  flush=True)
            rows.append({"model": name, "batch": batch, "one_core": batch / med["core"],
                         **{f"W{w}": batch / med[w] for w in counts}, "auto": auto})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one round, short timings (a smoke run)")
    p.add_argument("--rounds", type=int, default=MIN_ROUNDS)
    p.add_argument("--min-time", type=float, default=0.3, help="seconds per timing")
    p.add_argument("--model", action="append", choices=sorted(MODELS), help="(repeatable; default: all)")
    args = p.parse_args(argv)
    models = args.model or list(MODELS)
    if args.quick:
        return run(models, 1, 0.05)
    return run(models, args.rounds, args.min_time)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
