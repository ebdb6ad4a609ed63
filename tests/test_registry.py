"""The op registry: every op has a twin on the other backend and a parity case.

Ops are recorded where they are defined (``registry.cpu_op`` / ``registry.cuda_op``); nothing
lists them by hand, so these tests are what notices an op added on one side only, or added
without a parity case (``parity_cases`` in its family's ``cuda.py``).
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from nfcore.kernels import cpu, parity, registry

SCRIPT = Path(__file__).resolve().parent / "cuda_parity_script.py"


def _parity_script():
    spec = importlib.util.spec_from_file_location("cuda_parity_script_for_registry", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_op_has_a_cuda_twin():
    """Except the CPU-only ones (the fused runs of coupling layers; their reference is the op-by-op
    path, compared in tests/test_contract.py and tests/test_workers.py)."""
    cpu_ops = registry.ops("cpu")
    cuda_ops = registry.ops("cuda")  # imports the CUDA modules; launches nothing, needs no GPU
    assert sorted(set(cpu_ops) - set(registry.cpu_only())) == sorted(cuda_ops)
    cpu_only = registry.cpu_only()
    assert cpu_only and all(cpu_ops[name].py_func.__module__ == "nfcore.kernels.fused.cpu" for name in cpu_only)
    assert len(cpu_ops) >= 60


def test_every_op_has_a_parity_case():
    script = _parity_script()
    cases = parity.op_cases(np.random.default_rng(0), np.float64, parity.Sizes(4, 3, 4))
    covered = set(cases) | set(script.HOST_OPS) | set(script.SEPARATE_OPS)
    twins = set(cpu.__all__) - set(registry.cpu_only())
    missing = sorted(twins - covered)
    assert not missing, f"ops with no parity case (parity_cases in their family's cuda.py): {missing}"
    assert not set(cases) - twins, "a parity case names no op with a CUDA twin"
    assert set(script.CHECKS) >= twins


def test_the_backend_is_built_from_the_registry():
    assert cpu.name == "cpu"
    assert cpu.__all__ == sorted(registry.ops("cpu"))
    assert cpu.matmul is registry.ops("cpu")["matmul"]
    with pytest.raises(AttributeError, match="no op 'not_an_op'"):
        cpu.not_an_op  # noqa: B018


def test_an_op_defined_twice_is_refused():
    def matmul(a, b, out):  # same name as the dense family's op, another function
        return None

    with pytest.raises(RuntimeError, match="defined twice"):
        registry.cpu_op(matmul)


def test_families_are_the_subpackages():
    fams = registry.families()
    for fam in ("adam", "array", "autoregressive", "batchnorm", "coupling", "dense", "elementwise", "image",
                "mixture", "residual"):
        assert fam in fams
