"""Peak memory of a Glow training step, plain backward vs memory-saving backward.

A Glow of depth K=32 per scale (L=2 scales, width-64 ConvNets) on 16x16x3 images at batch
256, float32. A step is zero grads, forward, backward and Adam. The peak is tracemalloc's
(numpy reports its buffers to it), measured over one step after a warm-up step, with
nfcore's scratch-array cache emptied first so that only the step's own arrays count. The
memory-saving backward keeps no activations: it rebuilds each layer's input from its output
with the layer's inverse (``build({..., "memory_saving": True})``).

    python benchmarks/bench_memory.py [--depth 32] [--batch 256] [--shape 16 16 3]
"""

import argparse
import gc
import time
import tracemalloc

import numpy as np

import nfcore


def measure(shape, depth, batch, memory_saving):
    flow = nfcore.build({"flow": "glow", "shape": list(shape), "scales": 2, "layers": depth, "hidden": [64, 64],
                         "dtype": "float32", "memory_saving": memory_saving})
    opt = nfcore.Adam(flow.parameters(), lr=1e-4)
    x = np.random.default_rng(0).normal(size=(batch, *shape)).astype(np.float32)

    def step():
        opt.zero_grad()
        loss = flow.loss_and_grad(x)
        opt.step()
        return loss

    step()  # warm-up: JIT, actnorm initialisation
    nfcore.release_memory()
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    loss = step()
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    params = flow.num_parameters()
    return peak, seconds, loss, params


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", type=int, default=32)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--shape", type=int, nargs=3, default=[16, 16, 3])
    args = ap.parse_args(argv)
    rows = {}
    for ms in (False, True):
        rows[ms] = measure(tuple(args.shape), args.depth, args.batch, ms)
    input_mb = args.batch * np.prod(args.shape) * 4 / 2**20
    print(f"Glow, 2 scales x {args.depth} steps, width 64, {'x'.join(map(str, args.shape))} images, batch "
          f"{args.batch}, float32 ({rows[False][3]} parameters; the batch itself is {input_mb:.1f} MiB)")
    print("| backward | peak memory of a step | step time | loss |")
    print("|---|---|---|---|")
    for ms, (peak, sec, loss, _) in rows.items():
        print(f"| {'memory-saving' if ms else 'plain'} | {peak / 2**20:.0f} MiB | {sec:.2f} s | {loss:.4f} |")
    print(f"ratio plain / memory-saving: {rows[False][0] / rows[True][0]:.1f}x less memory, "
          f"{rows[True][1] / rows[False][1]:.2f}x the time")


if __name__ == "__main__":
    main()
