"""Shared fixtures, and the check that a full run skips exactly the tests it is expected to skip.

``tests/expected_skips.txt`` lists, for each test that may skip, the condition under which it
does (no GPU, no CUDA compiler libraries, ...). When the whole suite runs (plain ``pytest``, as
``.ci/run`` does), the set of skipped tests must equal the set the list expects on this machine:
a test that starts skipping, a new skip, or a listed test that stops skipping fails the run.
"""

import fnmatch
import functools
import importlib.util
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXPECTED_SKIPS = Path(__file__).resolve().parent / "expected_skips.txt"


@pytest.fixture
def rng():
    """A generator of the test's own, seeded: inputs never depend on the order tests run in."""
    return np.random.default_rng(1234)


# -- the expected skips ---------------------------------------------------------------------------


@functools.cache
def _cuda_gpu_present():
    """numba.cuda sees a real GPU (asked in a subprocess: the test process never touches CUDA)."""
    probe = subprocess.run([sys.executable, "-c", "from numba import cuda; print(cuda.is_available())"],
                           capture_output=True, text=True, timeout=120)
    return probe.stdout.strip() == "True"


#: condition name -> whether it holds on this machine (evaluated only when an entry uses it)
CONDITIONS = {
    "no-gpu": lambda: not _cuda_gpu_present(),
    # the test extra installs NVVM/NVRTC (nvidia-cuda-nvcc-cu12, -nvrtc-cu12) on Linux x86_64 only
    "no-cuda-compiler": lambda: not (platform.system() == "Linux" and platform.machine() == "x86_64"),
    "no-matplotlib": lambda: importlib.util.find_spec("matplotlib") is None,
}


def read_expected_skips(path=EXPECTED_SKIPS):
    """[(condition, node id pattern)] from the list; blank lines and ``#`` comments ignored."""
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in CONDITIONS:
            raise pytest.UsageError(f"{path.name}:{number}: expected '<condition> <test id pattern>' with a "
                                    f"condition in {sorted(CONDITIONS)}, got {line!r}")
        entries.append((parts[0], parts[1]))
    return entries


def skip_mismatch(collected, skipped, entries, holds):
    """(unexpected, missing): skipped tests no entry expects here, and expected ones that ran."""
    expected = {node for cond, pattern in entries if holds(cond) for node in collected
                if fnmatch.fnmatchcase(node, pattern)}
    return sorted(set(skipped) - expected), sorted(expected - set(skipped))


def _full_run(config):
    """Plain ``pytest`` (the test paths of pyproject.toml), nothing selected out."""
    narrowing = ("keyword", "markexpr", "collectonly", "lf", "deselect", "ignore", "ignore_glob")
    return (getattr(config, "args_source", None) == pytest.Config.ArgsSource.TESTPATHS
            and not any(getattr(config.option, name, None) for name in narrowing))


class SkipLedger:
    """A plugin (registered for the whole session, so it sees the doctests under nfcore/ too)
    that records collected and skipped tests and compares them with the list at the end."""

    def __init__(self):
        self.collected = []
        self.skipped = {}  # node id -> reason
        self.message = None

    def pytest_collection_finish(self, session):
        self.collected = [item.nodeid for item in session.items]

    def pytest_runtest_logreport(self, report):
        if report.skipped and not hasattr(report, "wasxfail"):
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            self.skipped[report.nodeid] = reason

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session, exitstatus):
        if exitstatus != pytest.ExitCode.OK or not _full_run(session.config):
            return  # a failed or partial run says nothing about the skips
        conditions = {}

        def holds(cond):
            if cond not in conditions:
                conditions[cond] = CONDITIONS[cond]()
            return conditions[cond]

        unexpected, missing = skip_mismatch(self.collected, self.skipped, read_expected_skips(), holds)
        if not unexpected and not missing:
            self.message = f"skips: {len(self.skipped)}, exactly those {EXPECTED_SKIPS.name} expects here"
            return
        lines = [f"skips differ from {EXPECTED_SKIPS.name} (conditions here: {conditions}):"]
        lines += [f"  skipped, not expected: {node} ({self.skipped[node]})" for node in unexpected]
        lines += [f"  expected to skip, ran: {node}" for node in missing]
        self.message = "\n".join(lines)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter):
        if self.message:
            terminalreporter.write_line(self.message, red=self.message.startswith("skips differ"))


def pytest_configure(config):
    config.pluginmanager.register(SkipLedger(), "nfcore-skip-ledger")
