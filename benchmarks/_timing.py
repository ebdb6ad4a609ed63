"""Timing helpers shared by the benchmark scripts (run them as scripts: this folder is on sys.path).

Every comparison here follows one protocol: libraries interleaved round by round, a pause
before each timing so the previous library's spinning thread pools go idle, then one untimed
call (``timeit``: the first call after a pause runs on cold memory), at least
``MIN_ROUNDS`` rounds, and the **median** round reported (the best round hides the noise a user
sees); every library runs with the same number of threads, printed in the table's header.
"""

import os
import statistics
import time

__all__ = ["MIN_ROUNDS", "timeit", "median_of_rounds", "equal_threads", "protocol"]

#: fewest rounds behind a reported median (``--quick`` smoke runs excepted)
MIN_ROUNDS = 5


def timeit(fn, min_time):
    """Seconds per call of fn, repeated for at least min_time, after one untimed call.

    The untimed call: the protocol pauses before every timing (so that the previous library's
    spinning thread pools go idle), and on a VM the first call after a pause runs on cold
    memory. After 2 s idle a MAF D=8 step at batch 4096 took 52-66 ms against 18-30 ms for the
    next ones; its zero_grad (a 400 KB fill, 12 us otherwise) took 5 ms, and 30 GEMMs of numpy
    alone 40 against 17 ms. The cost grows with the memory a call touches, not with its work:
    charged to one 0.3 s timing it moved our MAF ratio against FlowJAX by up to 25% between
    runs (benchmarks/RESULTS.md, "Session 12"). A training loop does not pause between steps,
    so every library is timed warm, the same way."""
    fn()
    n = 0
    t0 = time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_time:
            return dt / n


def median_of_rounds(cases, rounds, min_time, method="step", pause=0.2):
    """{case.name: median seconds per call} of ``getattr(case, method)`` over ``rounds`` rounds,
    the libraries interleaved within each round, each timing after a ``pause``."""
    times = {c.name: [] for c in cases}
    for _ in range(rounds):
        for c in cases:
            time.sleep(pause)
            times[c.name].append(timeit(getattr(c, method), min_time))
    return {name: statistics.median(v) for name, v in times.items()}


def equal_threads():
    """Give torch (when installed) the thread count nfcore's BLAS uses; returns that count."""
    import nfcore

    n = nfcore.get_num_threads() or os.cpu_count() or 1
    try:
        import torch
    except ImportError:
        return n
    torch.set_num_threads(n)
    return n


def protocol(rounds, threads):
    """The header line every table prints: how its figures were taken."""
    return (f"median of {rounds} interleaved rounds, {threads} threads for every library"
            + ("" if rounds >= MIN_ROUNDS else f" (a smoke run: under {MIN_ROUNDS} rounds)"))
