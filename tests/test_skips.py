"""The expected-skip list (tests/expected_skips.txt) and the check in conftest.py that enforces it."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXPECTED_SKIPS, read_expected_skips, skip_mismatch

HERE = Path(__file__).resolve().parent


def test_every_entry_names_tests_that_exist(request):
    collected = [item.nodeid for item in request.session.items]
    if not any(node.startswith("tests/test_cuda_parity.py::") for node in collected):
        pytest.skip("only meaningful when the whole suite is collected")  # never in a full run
    import fnmatch

    for cond, pattern in read_expected_skips():
        assert any(fnmatch.fnmatchcase(n, pattern) for n in collected), f"{cond} {pattern} matches no test"


def test_mismatch_in_both_directions():
    entries = [("no-gpu", "t.py::gpu[[]*[]]"), ("no-matplotlib", "t.py::png")]
    collected = ["t.py::gpu[a]", "t.py::gpu[b]", "t.py::png", "t.py::other"]
    gpu_less = {"no-gpu": True, "no-matplotlib": False}.get
    assert skip_mismatch(collected, ["t.py::gpu[a]", "t.py::gpu[b]"], entries, gpu_less) == ([], [])
    assert skip_mismatch(collected, ["t.py::gpu[a]", "t.py::other"], entries, gpu_less) == (
        ["t.py::other"], ["t.py::gpu[b]"])
    # on a GPU machine the GPU tests run: nothing is expected to skip
    assert skip_mismatch(collected, [], entries, lambda cond: False) == ([], [])


def _project(root, listed):
    """A throwaway project with our conftest (its no-gpu condition forced true, so the outcome is the
    same on every machine), the given skip list, and one test that skips; run in full."""
    tests = root / "tests"
    tests.mkdir(parents=True)
    (root / "pyproject.toml").write_text('[tool.pytest.ini_options]\ntestpaths = ["tests"]\n')
    conftest = (HERE / "conftest.py").read_text() + '\nCONDITIONS["no-gpu"] = lambda: True\n'
    (tests / "conftest.py").write_text(conftest)
    (tests / EXPECTED_SKIPS.name).write_text(listed)
    (tests / "test_a.py").write_text(
        "import pytest\n\ndef test_runs():\n    pass\n\ndef test_skips():\n    pytest.skip('no png here')\n")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=root,
                          capture_output=True, text=True, timeout=300)


def test_a_full_run_fails_on_an_unlisted_skip_and_passes_when_listed(tmp_path):
    run = _project(tmp_path / "unlisted", "# nothing may skip\n")
    assert run.returncode == 1 and "skipped, not expected: tests/test_a.py::test_skips" in run.stdout, run.stdout
    run = _project(tmp_path / "listed", "no-gpu tests/test_a.py::test_skips\n")
    assert run.returncode == 0 and "skips: 1, exactly those" in run.stdout, run.stdout
    run = _project(tmp_path / "stale", "no-gpu tests/test_a.py::test_skips\nno-gpu tests/test_a.py::test_runs\n")
    assert run.returncode == 1 and "expected to skip, ran: tests/test_a.py::test_runs" in run.stdout, run.stdout
