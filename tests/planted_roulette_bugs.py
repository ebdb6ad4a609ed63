"""Plant four roulette bugs one at a time, run the roulette tests, revert: each must fail a test.

    python tests/planted_roulette_bugs.py

The bugs are the ones a statistical test cannot see (issue 16): the 1/P(N >= k) reweighting
dropped, the estimator cut to a plain n_terms truncation, the Neumann vector's (k+1) factor
dropped, and only the Neumann vector's first term kept. The source file is restored even when
the run is interrupted.
"""

import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "nfcore" / "transforms" / "iresnet.py"

BUGS = {
    "drop 1/P(N>=k)": ("            c = c / (1.0 - self.roulette_p) ** beyond", "            pass"),
    "n_terms truncation": ('n = self.n_terms + (extra if mode == "roulette" else 0)', "n = self.n_terms"),
    "Neumann (k+1) dropped": ("float(abs(c[k]) * (k + 1))", "float(abs(c[k]))"),
    "Neumann first term only": ("                    if need_grad:\n                        ops.axpy",
                                "                    if need_grad and k == 0:\n                        ops.axpy"),
}


def main():
    original = SOURCE.read_text()
    caught = 0
    try:
        for name, (good, bad) in BUGS.items():
            if original.count(good) != 1:
                print(f"{name}: the line to break is not in {SOURCE.name} (the code moved: update BUGS)")
                return 2
            SOURCE.write_text(original.replace(good, bad))
            run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                  "tests/test_iresnet.py", "-k", "roulette"],
                                 cwd=SOURCE.parents[2], capture_output=True, text=True)
            failed = [line.split("::")[-1] for line in run.stdout.splitlines() if line.startswith("FAILED")]
            caught += bool(failed)
            print(f"{name}: {run.stdout.strip().splitlines()[-1]}")
            for test in failed:
                print(f"    failed: {test}")
    finally:
        SOURCE.write_text(original)
    return 0 if caught == len(BUGS) else 1


if __name__ == "__main__":
    sys.exit(main())
