"""CPU/CUDA parity of every op and of whole training steps (tests/cuda_parity_script.py).

numba's CUDA simulator must be switched on before numba is imported, so the checks run in
a process of their own, once per mode, and each check becomes one test here:

* ``simulator``: always, with NUMBA_ENABLE_CUDASIM=1 and the launch settings shrunk
  (4 threads per block, 3 rows per chunk, 4x4 GEMM tiles) so tiny inputs span many blocks;
* ``gpu``: on a real GPU when there is one, with the default launch settings;
* ``ptx``: every kernel compiled by numba-cuda to PTX for the argument types the ops launch
  it with, float32 and float64: the type check the simulator cannot give. Needs no GPU,
  only CUDA's compiler libraries (pip: nvidia-cuda-nvcc-cu12 nvidia-cuda-nvrtc-cu12);
  skipped without them.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCRIPT = HERE / "cuda_parity_script.py"

_spec = importlib.util.spec_from_file_location("cuda_parity_script", SCRIPT)
_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_script)
CHECKS = _script.CHECKS

SIM_SETTINGS = ["--tpb", "4", "--chunk", "3", "--tile", "4"]


class Run(NamedTuple):
    returncode: int
    lines: dict  # check -> ["PASS check dtype detail", ...]
    output: str


def _env(simulate):
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    if simulate:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


#: the simulator run takes ~5 min on two quiet cores; a busy machine has taken over 10
SIM_TIMEOUT = 1800


def _run(args, simulate, timeout=SIM_TIMEOUT):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT,
        env=_env(simulate),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = {}
    for line in proc.stdout.splitlines():
        parts = line.split(maxsplit=3)
        if len(parts) >= 3 and parts[0] in ("PASS", "FAIL", "SKIP"):
            lines.setdefault(parts[1], []).append(line)
    return Run(proc.returncode, lines, proc.stdout + proc.stderr)


def _assert_check(run, check):
    got = run.lines.get(check)
    if not got:
        raise AssertionError(f"no result for {check!r} (exit {run.returncode}); output tail:\n{run.output[-3000:]}")
    if all(line.startswith("SKIP") for line in got):
        pytest.skip(got[0])
    bad = [line for line in got if line.startswith("FAIL")]
    assert not bad, "\n".join(bad)


@pytest.fixture(scope="module")
def simulator_run():
    return _run(SIM_SETTINGS, simulate=True)


@pytest.fixture(scope="module")
def gpu_run():
    probe = subprocess.run(
        [sys.executable, "-c", "from numba import cuda; print(cuda.is_available())"],
        env=_env(False),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if probe.stdout.strip() != "True":
        pytest.skip("no CUDA GPU here (the simulator run covers the kernels)")
    return _run([], simulate=False)


@pytest.fixture(scope="module")
def ptx_run():
    run = _run(["--ptx"], simulate=False)
    if run.returncode == 77:
        pytest.skip("no NVVM/NVRTC: pip install nvidia-cuda-nvcc-cu12 nvidia-cuda-nvrtc-cu12 to type-check kernels")
    return run


@pytest.mark.parametrize("check", CHECKS)
def test_simulator(simulator_run, check):
    _assert_check(simulator_run, check)


def test_simulator_run_completes(simulator_run):
    assert simulator_run.returncode == 0, simulator_run.output[-3000:]
    assert set(simulator_run.lines) == set(CHECKS)


@pytest.mark.parametrize("check", CHECKS)
def test_gpu(gpu_run, check):
    _assert_check(gpu_run, check)


def test_gpu_run_completes(gpu_run):
    assert gpu_run.returncode == 0, gpu_run.output[-3000:]


@pytest.mark.parametrize("check", CHECKS)
def test_ptx(ptx_run, check):
    _assert_check(ptx_run, check)


def test_ptx_run_completes(ptx_run):
    assert ptx_run.returncode == 0, ptx_run.output[-3000:]
