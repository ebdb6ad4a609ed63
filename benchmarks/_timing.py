"""Timing helpers shared by the benchmark scripts (run them as scripts: this folder is on sys.path)."""

import time

__all__ = ["timeit", "best_of_rounds"]


def timeit(fn, min_time):
    """Seconds per call of fn, repeated for at least min_time."""
    n = 0
    t0 = time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_time:
            return dt / n


def best_of_rounds(cases, rounds, min_time, method="step", pause=0.2):
    """{case.name: best seconds per call} of ``getattr(case, method)``, libraries interleaved round by
    round after a pause that lets the previous library's spinning thread pools go idle (noise on a
    shared machine only adds time, so the best round is the figure)."""
    best = {c.name: float("inf") for c in cases}
    for _ in range(rounds):
        for c in cases:
            time.sleep(pause)
            best[c.name] = min(best[c.name], timeit(getattr(c, method), min_time))
    return best
