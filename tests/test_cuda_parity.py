"""CPU/CUDA parity of every op and of whole training steps (tests/cuda_parity_script.py).

numba's CUDA simulator must be switched on before numba is imported, so the checks run in
a process of their own, once per mode, and each check becomes one test here:

* ``simulator``: always, with NUMBA_ENABLE_CUDASIM=1 and the launch settings shrunk
  (4 threads per block, 3 rows per chunk, 4x4 GEMM tiles) so tiny inputs span many blocks;
  once more at the default launch settings on a small flow;
* ``gpu``: on a real GPU when there is one, with the default launch settings;
* ``ptx``: every kernel compiled by numba-cuda to PTX for the argument types the ops launch
  it with, float32 and float64, and every kernel signature each whole flow launched in the
  simulator run: the type check the simulator cannot give. Needs no GPU, only CUDA's
  compiler libraries (pip: nvidia-cuda-nvcc-cu12 nvidia-cuda-nvrtc-cu12, in the test extra).

Which of these skip where is fixed by ``tests/expected_skips.txt`` (checked by conftest.py).
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
PTX_CHECKS = _script.PTX_CHECKS

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
def launch_record(tmp_path_factory):
    """Where the simulator run writes the kernel signatures each flow launched (for --ptx)."""
    return tmp_path_factory.mktemp("parity") / "flow_launches.pkl"


@pytest.fixture(scope="module")
def simulator_run(launch_record):
    return _run([*SIM_SETTINGS, "--record", str(launch_record)], simulate=True)


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
def ptx_run(simulator_run, launch_record):
    run = _run(["--ptx", "--flows-from", str(launch_record)], simulate=False)
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


def test_narrow_flows_take_the_fused_kernels_on_the_device(simulator_run, launch_record):
    """The device copies of flows with narrow conditioners run the fused layer kernels' CUDA twins
    (a routing change would leave their parity checks passing on the op-by-op path); a flow with
    residual conditioners (nice_diag) does not."""
    import pickle

    assert simulator_run.returncode == 0, simulator_run.output[-3000:]
    with open(launch_record, "rb") as fh:
        launches = pickle.load(fh)

    def kernels(label):
        return {name for _, name, _, _ in launches.get(label, ())}

    fused = {"_net_fwd_kernel", "_net_vjp_rows_kernel", "_net_grads_kernel", "_net_grads_reduce_kernel"}
    for label in ("realnvp", "realnvp32", "maf", "iaf"):
        assert fused <= kernels(label), (label, sorted(kernels(label)))
    assert not fused & kernels("nice_diag")


def test_simulator_at_default_launch_settings():
    """One small flow with the real launch settings (128 threads per block, 256-row chunks):
    the shrunk settings above cannot show a kernel that only works when a block is large."""
    checks = [c for c in CHECKS if c.startswith("flow_realnvp.")]
    run = _run(["--only", *checks], simulate=True)
    assert run.returncode == 0, run.output[-3000:]
    assert set(run.lines) == set(checks)
    for check in checks:
        _assert_check(run, check)


@pytest.mark.parametrize("check", PTX_CHECKS)
def test_ptx(ptx_run, check):
    _assert_check(ptx_run, check)


def test_ptx_run_completes(ptx_run):
    assert ptx_run.returncode == 0, ptx_run.output[-3000:]
    assert set(ptx_run.lines) == set(PTX_CHECKS)
