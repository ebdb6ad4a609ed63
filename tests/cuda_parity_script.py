"""CPU/CUDA parity of every op and of whole training steps, run as a script in its own process.

    NUMBA_ENABLE_CUDASIM=1 python tests/cuda_parity_script.py --tpb 4 --chunk 3 --tile 4
    python tests/cuda_parity_script.py          # on a GPU, with the default launch settings
    python tests/cuda_parity_script.py --ptx    # no GPU: compile every kernel launched to PTX

numba's CUDA simulator must be switched on before numba is imported, hence a process of its
own (``tests/test_cuda_parity.py`` runs it). Every CUDA op (``nfcore.kernels.registry``) runs on the
inputs of its family's ``parity_cases`` (in the family's ``cuda.py``, ``nfcore.kernels.parity``)
as does its CPU twin of the same name, in float32 and float64;
write-only outputs start as NaN on both sides so that an element a kernel misses shows up.
Sizes follow the launch settings (``--tpb``, ``--chunk``, ``--tile``) so that every kernel
spans several blocks, row chunks and GEMM tiles, with ragged edges. Then whole flows: a
CPU model and a copy moved to the device must agree on log_prob, loss and every gradient,
Adam steps, sampling and the reverse-KL gradient.

``--ptx`` is the type check the simulator cannot give (it runs kernels as Python): with no
GPU, each kernel launch is replaced by ``cuda.compile_ptx`` for the argument types of that
launch. It needs CUDA's compiler libraries, NVVM and NVRTC (pip: nvidia-cuda-nvcc-cu12 and
nvidia-cuda-nvrtc-cu12); without them the script exits 77. Whole flows cannot run there (no
kernel executes), so a simulator run given ``--record FILE`` writes the argument types of every
kernel each flow launched, and ``--ptx --flows-from FILE`` compiles exactly those: one
``flow_<label>`` check per flow.

Output: one line per check and dtype, ``PASS|FAIL|SKIP <check> <dtype> <detail>``; exit 1
on any FAIL, 2 when there is no CUDA (nor simulator) at all.
"""

import argparse
import math
import os
import pickle
import sys
import time
import traceback
import warnings
from pathlib import Path

if __name__ == "__main__":  # run as a script: import the nfcore of this checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from numba.core.errors import NumbaPerformanceWarning  # noqa: E402

from nfcore.kernels import cpu, registry  # noqa: E402
from nfcore.kernels.parity import Sizes, op_cases  # noqa: E402

__all__ = ["CHECKS", "FLOW_CHECKS", "PTX_CHECKS", "main"]

#: end-to-end checks: (label, config, dtype) x sub-check
FLOWS = {
    "realnvp": {"dim": 3, "layers": 2, "hidden": [4], "dtype": "float64"},
    "nice_diag": {
        "flow": "nice",
        "dim": 3,
        "layers": 2,
        "hidden": [4, 4],
        "activation": "tanh",
        "residual": True,
        "base": "diag",
        "permute": "reverse",
        "dtype": "float64",
    },
    "realnvp32": {"dim": 3, "layers": 2, "hidden": [4], "activation": "elu", "dtype": "float32"},
    # MADE flows: the device's sequential kernel (MAF sampling, IAF density, the prior's sampling)
    "maf": {"flow": "maf", "dim": 3, "layers": 2, "hidden": [5, 4], "order": "random", "dtype": "float64"},
    "iaf": {"flow": "iaf", "dim": 3, "layers": 2, "hidden": [5], "base": "diag", "dtype": "float64"},
    "realnvp_mog": {"dim": 3, "layers": 2, "hidden": [4], "base": "made-mog", "prior_hidden": [5],
                    "prior_components": 2, "dtype": "float64"},
    "maf_bn": {"flow": "maf", "dim": 3, "layers": 2, "hidden": [5], "batch_norm": True, "dtype": "float64"},
    # image flows (no Dequantize: its noise comes from a host generator): squeeze, actnorm with its
    # data-dependent initialisation, 1x1 convolutions, convolutional couplings, split priors
    "glow": {"flow": "glow", "shape": [4, 4, 1], "layers": 2, "hidden": [3], "base": "diag", "dtype": "float64"},
    "glow_plain32": {"flow": "glow", "shape": [4, 4, 2], "layers": 1, "hidden": [4, 3], "invconv": "plain",
                     "coupling": "additive", "dtype": "float32"},
    "realnvp_image": {"flow": "realnvp", "shape": [4, 4, 1], "layers": 2, "hidden": [3], "dtype": "float64"},
    # residual flows: spectral normalisation, JVP/VJP chains, the series and roulette estimators and their
    # backward (the probes come from each model's own generator, drawn in the same order on both sides)
    "iresnet": {"flow": "iresnet", "dim": 3, "layers": 2, "hidden": [5], "n_terms": 3, "learn_beta": True,
                "dtype": "float64"},
    "resflow": {"flow": "resflow", "dim": 3, "layers": 1, "hidden": [4, 4], "activation": "elu",
                "dtype": "float64"},
    # the multi-scale image i-ResNet: spectral norms of convolution operators, conv JVP/VJP chains
    "iresnet_image": {"flow": "iresnet", "shape": [4, 4, 1], "layers": 1, "hidden": [3], "n_terms": 2,
                      "learn_beta": True, "dtype": "float64"},
}
#: parameter noise of the image flows: their deep conv stacks blow up at the default 0.3
#: (log-scales saturate, and the simulator's pure-Python exp overflows)
NOISE = {"glow": 0.05, "glow_plain32": 0.05, "realnvp_image": 0.05, "iresnet": 0.05, "resflow": 0.05,
         "iresnet_image": 0.05}
FLOW_PARTS = ["log_prob", "loss_and_grad", "sample", "adam", "reverse_kl"]
FLOW_CHECKS = [f"flow_{label}.{part}" for label in FLOWS for part in FLOW_PARTS]
#: the ops without a parity case (``parity_cases`` in each family's ``cuda.py``): allocation,
#: transfer and views (checked by ``misc_checks``) and the fast sequential MADE kernel (its own
#: check, on MADE layers built for it)
HOST_OPS = ("name", "empty", "zeros", "asarray", "to_host", "copy", "reshape")
SEPARATE_OPS = ("ar_sequential",)
#: every check the script reports on: one per public op name, the name list itself, the fast
#: sequential kernel of MADE layers (MAF/IAF passes, the prior's sampling), the flows
TWIN_OPS = [name for name in cpu.__all__ if name not in registry.cpu_only()]  # the fused runs: CPU only
CHECKS = ["name", *TWIN_OPS, "public_names", *FLOW_CHECKS]

DTYPES = (np.float32, np.float64)
TOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-11}


def kernel_ops():
    """The op names that launch a kernel of their own (those with cases here); the others are
    host-side (allocation, transfer, views) and are checked by ``misc_checks`` in the runs."""
    cases = op_cases(np.random.default_rng(0), np.float64, Sizes(4, 3, 4))
    return [name for name in cpu.__all__ if name in cases]


#: the --ptx run's checks: every op that launches a kernel, the sequential MADE kernel, and every
#: kernel signature a whole flow launched in the simulator (one check per flow)
PTX_CHECKS = [*kernel_ops(), "public_names", "ar_sequential", *(f"flow_{label}" for label in FLOWS)]


def _err(got, want):
    """max |got - want| / (1 + |want|); inf when either side is not finite."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return math.inf
    if not (np.all(np.isfinite(got)) and np.all(np.isfinite(want))):
        return math.inf
    return float(np.max(np.abs(got - want) / (1.0 + np.abs(want)), initial=0.0))


# -- op checks -------------------------------------------------------------------------------


def _each(a, fn):
    """fn(a) for an array, a tuple of fn of each array for a tuple of arrays (a fused layer's
    weights), a itself otherwise (scalars)."""
    if isinstance(a, np.ndarray):
        return fn(a)
    if isinstance(a, tuple) and a and all(isinstance(e, np.ndarray) for e in a):
        return tuple(fn(e) for e in a)
    return a


def run_op(dev, name, variants, dt):
    """Max error of one op over its variants (each on fresh copies on both sides)."""
    worst, where = 0.0, ""
    for label, args, outs in variants:
        host = [_each(a, np.copy) for a in args]
        on_dev = [_each(a, dev.asarray) for a in args]
        want = getattr(cpu, name)(*host)
        got = getattr(dev, name)(*on_dev)
        errs = [_err(_each(on_dev[k], dev.to_host), host[k]) if not isinstance(host[k], tuple) else
                max((_err(dev.to_host(g), w) for g, w in zip(on_dev[k], host[k])), default=0.0) for k in outs]
        if want is not None or got is not None:
            errs.append(_err(got, want) if isinstance(got, float) else math.inf)
        e = max(errs)
        if e >= worst:
            worst, where = e, label
    return worst, where


def misc_checks(dev, dt, s):
    """The allocation and transfer functions: {name: (ok, detail)}."""
    rng = np.random.default_rng(7)
    out = {}
    out["name"] = (dev.name == "cuda", f"name={dev.name!r}")
    shape = (s.n, 3)
    e = dev.empty(shape, dt)
    out["empty"] = (tuple(e.shape) == shape and np.dtype(e.dtype) == dt, f"shape={tuple(e.shape)} dtype={e.dtype}")
    z = dev.zeros(shape, dt)
    hz = dev.to_host(z)
    out["zeros"] = (hz.shape == shape and hz.dtype == dt and not hz.any(), f"shape={hz.shape}")
    x = rng.normal(size=shape).astype(dt)
    dx = dev.asarray(x)
    same = dev.asarray(dx) is dx
    cast = dev.to_host(dev.asarray(dx, dtype=np.float64 if dt == np.float32 else np.float32))
    from_list = dev.to_host(dev.asarray([[1.0, 2.0]], dtype=dt))
    out["asarray"] = (
        np.array_equal(dev.to_host(dx), x)
        and same
        and np.allclose(cast, x, rtol=1e-6)
        and from_list.dtype == dt
        and from_list.shape == (1, 2),
        f"device_as_is={same}",
    )
    h = dev.to_host(dx)
    out["to_host"] = (
        isinstance(h, np.ndarray) and np.array_equal(h, x) and np.array_equal(dev.to_host(x), x),
        f"type={type(h).__name__}",
    )
    c = dev.copy(dx)
    dev.fill(c, 3.0)
    out["copy"] = (np.array_equal(dev.to_host(dx), x) and np.all(dev.to_host(c) == 3.0), "independent copy")
    flat = dev.asarray(np.arange(12, dtype=dt))
    v = dev.reshape(flat, (3, -1))
    dev.fill(dev.reshape(v, (12,)), 1.0)  # a view: the write shows through the original
    sliced = dev.reshape(flat[4:10], (2, 3))
    out["reshape"] = (
        tuple(v.shape) == (3, 4) and np.all(dev.to_host(flat) == 1.0) and tuple(sliced.shape) == (2, 3),
        f"shape={tuple(v.shape)}",
    )
    return out


# -- whole flows -----------------------------------------------------------------------------


def flow_checks(dev, label, cfg):
    """{part: error} for a CPU flow and its device copy (same parameters, same inputs)."""
    from nfcore import build, gradcheck
    from nfcore.train.adam import Adam

    dt = np.dtype(cfg["dtype"])
    rng = np.random.default_rng(3)
    host = build(cfg)
    gradcheck.randomize_parameters(host, scale=NOISE.get(label, 0.3), seed=1)
    devf = build(cfg).to("cuda")
    devf.load_state_dict(host.state_dict())  # a device model loads a host state
    x = rng.normal(size=(6, *(cfg.get("shape") or [cfg["dim"]]))).astype(dt)
    res = {}

    res["log_prob"] = max(
        _err(dev.to_host(devf.log_prob(x)), host.log_prob(x)),
        _err(dev.to_host(devf.log_prob(dev.asarray(x))), host.log_prob(x)),
    )

    def grads(m):
        return {k: np.array(dev.to_host(p.grad)) for k, p in m.named_parameters()}

    host.zero_grad()
    devf.zero_grad()
    lh = {}
    refusal = _refused_on_both(lambda: lh.setdefault("loss", host.loss_and_grad(x)),
                               lambda: devf.loss_and_grad(dev.asarray(x)))
    if refusal is None:
        ld = devf.loss_and_grad(dev.asarray(x))
        gh, gd = grads(host), grads(devf)
        res["loss_and_grad"] = max([_err(ld, lh["loss"]), *(_err(gd[k], gh[k]) for k in gh)])
        if not all(np.any(g != 0) for g in gh.values()):
            res["loss_and_grad"] = math.inf  # a parameter without gradient would make the comparison vacuous
        loss = "loss_and_grad"
    else:  # IAF: its density direction has no gradient; its Adam steps follow the reverse-KL loss
        res["loss_and_grad"] = refusal
        loss = "reverse_kl"

    xs_h, lp_h = host.sample_and_log_prob(5, seed=0)
    xs_d, lp_d = devf.sample_and_log_prob(5, seed=0)
    res["sample"] = max(
        _err(dev.to_host(devf.sample(5, seed=0)), host.sample(5, seed=0)),
        _err(dev.to_host(xs_d), xs_h),
        _err(dev.to_host(lp_d), lp_h),
    )

    opt_h = Adam(host.parameters(), lr=0.05, weight_decay=0.01, clip_norm=0.5)
    opt_d = Adam(devf.parameters(), lr=0.05, weight_decay=0.01, clip_norm=0.5)
    errs = []
    for step in range(3):
        opt_h.zero_grad()
        opt_d.zero_grad()
        if loss == "loss_and_grad":
            errs.append(_err(devf.loss_and_grad(x), host.loss_and_grad(x)))
        else:
            errs.append(_err(devf.reverse_kl_loss_and_grad(_log_target, 5, seed=10 + step),
                             host.reverse_kl_loss_and_grad(_log_target, 5, seed=10 + step)))
        errs.append(_err(opt_d.step(), opt_h.step()))
    sh, sd = host.state_dict(), devf.state_dict()
    errs += [_err(sd[k], sh[k]) for k in sh]
    errs += [_err(dev.to_host(opt_d.m), opt_h.m), _err(dev.to_host(opt_d.v), opt_h.v)]
    res["adam"] = max(errs)
    return _reverse_kl_part(dev, host, devf, res, grads)


def _log_target(z):
    """An unnormalised Gaussian centred at 1: log p~ and its gradient (any event shape)."""
    return -0.5 * np.sum((z.reshape(len(z), -1) - 1.0) ** 2, axis=1), -(z - 1.0)


def _refused_on_both(host_call, dev_call):
    """None when the host call returns (the device call is then not made); when the host raises
    GradientNotAvailable the device must raise it too: ``REFUSED <message>``, else an error text."""
    from nfcore.errors import GradientNotAvailable

    try:
        host_call()
        return None
    except GradientNotAvailable as exc:
        message = str(exc)
    try:
        dev_call()
    except GradientNotAvailable:
        return f"REFUSED {message}"
    return "the device computed a gradient that the host refuses: " + message


def _reverse_kl_part(dev, host, devf, res, grads):
    host.zero_grad()
    devf.zero_grad()
    out = {}

    def run(model, key):
        out[key] = model.reverse_kl_loss_and_grad(_log_target, 5, seed=2)

    refusal = _refused_on_both(lambda: run(host, "h"), lambda: run(devf, "d"))
    if refusal is not None:  # MAF: its sampling direction has no gradient on either side
        res["reverse_kl"] = refusal
        return res
    run(devf, "d")
    gh, gd = grads(host), grads(devf)
    res["reverse_kl"] = max([_err(out["d"], out["h"]), *(_err(gd[k], gh[k]) for k in gh)])
    return res


def sequential_checks(dev, dt, s, run=True):
    """The device's fast sequential kernel against the CPU's on the same MADEs: MAF sampling
    with context inputs, random order and tanh; IAF density with random degrees; the
    autoregressive prior's mixture draws. Rows: s.n (several blocks of the CPU's row tiles).
    Returns (max error, detail); with run=False (PTX mode) only launches."""
    from nfcore import gradcheck
    from nfcore.priors import AutoregressivePrior
    from nfcore.transforms import IAF, MAF
    from nfcore.transforms.autoregressive import (
        MODE_CONTRACT,
        MODE_EXPAND,
        MODE_MOG,
        made_sequential,
    )

    rng = np.random.default_rng(5)
    n, d = s.n, 4
    cases = [
        ("maf", MAF(d, [7, 6], order="random", activation="tanh", context_dim=2, rng=3), MODE_EXPAND),
        ("iaf", IAF(d, [9], hidden_degrees="random", rng=4), MODE_CONTRACT),
        ("prior", AutoregressivePrior((d,), hidden=[8, 8], components=3, rng=6), MODE_MOG),
    ]
    errs = []
    for label, host, mode in cases:
        gradcheck.randomize_parameters(host, scale=0.5, seed=2)
        host.to(dtype=dt)
        y = rng.normal(size=(n, d)).astype(dt)
        ctx = rng.normal(size=(n, 2)).astype(dt) if label == "maf" else None
        unif = rng.uniform(size=(n, d)).astype(dt) if mode == MODE_MOG else None
        eps = rng.normal(size=(n, d)).astype(dt) if mode == MODE_MOG else None
        cdim = host.context_dim if label == "maf" else 0
        bound = host.scale_bound
        if run:
            ref = made_sequential(host.made, y, ctx, cdim, bound, mode, unif, eps)
            host.to("cuda")  # the same module, moved: its MADE's weights now live on the device
        dv = [None if a is None else dev.asarray(a) for a in (y, ctx, unif, eps)]
        got = made_sequential(host.made, dv[0], dv[1], cdim, bound, mode, dv[2], dv[3], ops=dev)
        if run:
            out, ld = (np.asarray(dev.to_host(a)) for a in got)
            e = max(_err(out, ref[0]), 0.0 if mode == MODE_MOG else _err(ld, ref[1]))
            errs.append(e)
    if not run:
        return 0.0, ""
    return max(errs), " ".join(f"{c[0]}={e:.1e}" for c, e in zip(cases, errs))


# -- PTX mode: compile instead of launching ---------------------------------------------------


def _lock_simulated_shared_arrays():
    """Work around a race in numba's simulator: ``cuda.shared.array`` looks its block's array up
    (by the calling source line) and creates it when missing, unlocked, so two threads can each
    create one and stop sharing memory (seen as ~1 failed parity run in 7: wrong GEMM tiles).
    The same lookup, done under a lock."""
    import threading

    from numba.core import types
    from numba.cuda.simulator import kernelapi
    from numba.np import numpy_support

    original = kernelapi.FakeCUDAShared.array
    if getattr(original, "_nfcore_locked", False):
        return
    lock = threading.Lock()

    def array(self, shape, dtype, alignment=None):
        if alignment is not None or shape == 0:
            return original(self, shape, dtype, alignment)  # errors / dynamic shared memory: no lookup
        if isinstance(dtype, types.Type):
            dtype = numpy_support.as_dtype(dtype)
        frame = sys._getframe(1)
        caller = (frame.f_code.co_filename, frame.f_lineno)
        with lock:
            res = self._allocations.get(caller)
            if res is None:
                res = np.empty(shape, dtype)
                self._allocations[caller] = res
        return res

    array._nfcore_locked = True
    kernelapi.FakeCUDAShared.array = array


#: functions that build kernels (closure constants such as the dtype and tile compiled in):
#: a recorded launch of one of their kernels names the factory call that made it
KERNEL_FACTORIES = [("nfcore.kernels.dense.cuda", "_gemm_kernel")]


def _noting_factory(make, where, made):
    """``make`` that notes which call built each kernel: made[id(kernel)] = (*where, args)."""

    def wrapped(*args):
        kernel = make(*args)
        made[id(kernel)] = (*where, args)
        return kernel

    return wrapped


def _install_launch_recorder():
    """Simulator: record every kernel launch as (module, kernel or factory, factory arguments,
    numba argument types) into the returned {flow label: set} under the key ``current[0]``."""
    import importlib

    from numba import typeof
    from numba.cuda.simulator import kernel as sim

    launches, current, made = {}, [None], {}
    for module, factory in KERNEL_FACTORIES:
        mod = importlib.import_module(module)
        setattr(mod, factory, _noting_factory(getattr(mod, factory), (module, factory), made))
    run = sim.FakeCUDAKernel.__call__

    def recording(self, *args):
        if current[0] is not None and not (self._device or sim._kernel_context):
            types = tuple(typeof(a._ary if hasattr(a, "_ary") else a) for a in args)
            where = made.get(id(self), (self.fn.__module__, self.fn.__name__, None))
            launches.setdefault(current[0], set()).add((*where, types))
        return run(self, *args)

    sim.FakeCUDAKernel.__call__ = recording
    return launches, current


def _compile_recorded(launches, done):
    """Compile every recorded launch to PTX; returns the kernel names."""
    import importlib

    from numba import cuda

    names = set()
    for module, name, factory_args, types in sorted(launches, key=str):
        kernel = getattr(importlib.import_module(module), name)
        if factory_args is not None:
            kernel = kernel(*factory_args)
        key = (kernel.py_func, factory_args, types)
        if key not in done:
            done[key] = cuda.compile_ptx(kernel.py_func, types, cc=PTX_CC)
        names.add(name)
    return sorted(names)


def _install_ptx_launcher():
    """Make every kernel launch compile its kernel to PTX for the launch's argument types.

    Host numpy arrays stand in for device arrays (numba types both as ``array(dtype, nd, C)``),
    and allocation returns host arrays, so the wrappers run unchanged. Returns the list of
    (kernel name, signature) compiled, appended to as launches happen.
    """
    from numba import cuda, typeof
    from numba.cuda import dispatcher

    def probe(a):
        i = cuda.grid(1)
        if i < a.shape[0]:
            a[i] = 0.0

    try:
        cuda.compile_ptx(probe, (typeof(np.zeros(1)),), cc=PTX_CC)
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
        if "cannot be found" in text or "not found" in text or "No such file" in text:
            print(f"SKIP ptx - no CUDA compiler libraries (NVVM, NVRTC) here ({text})")
            sys.exit(77)  # nothing to check with (tests/expected_skips.txt: no-cuda-compiler)
        print(f"FAIL ptx - the CUDA compiler is there but refused a one-line kernel ({text})")
        sys.exit(1)  # a broken toolchain is a failure, not a skip

    done = _PTX_DONE
    log = []

    def compile_launch(self, *args):
        fn = self.dispatcher.py_func
        sig = tuple(typeof(a) for a in args)
        key = (fn, sig)
        if key not in done:
            done[key] = cuda.compile_ptx(fn, sig, cc=PTX_CC)
        log.append((fn.__name__, sig))

    dispatcher._LaunchConfiguration.__call__ = compile_launch
    cuda.device_array = lambda shape, dtype=np.float64, **kw: np.empty(shape, dtype)
    cuda.to_device = lambda a, **kw: np.array(a)
    return log


#: (python function, argument types) -> PTX, shared by the launcher and the recorded flows
_PTX_DONE = {}
#: compute capability the PTX is generated for: 7.5, the oldest that both CUDA 12 and CUDA 13's
#: compilers accept (13 refuses 7.0; an H200 is 9.0)
PTX_CC = (7, 5)

# -- driver ----------------------------------------------------------------------------------


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tpb", type=int, help="THREADS_PER_BLOCK to use (default: the backend's)")
    p.add_argument("--chunk", type=int, help="ROWS_PER_CHUNK to use")
    p.add_argument("--tile", type=int, help="GEMM tile edge to use")
    p.add_argument("--ptx", action="store_true", help="compile every kernel to PTX instead of running it")
    p.add_argument("--only", nargs="*", help="run only these checks")
    p.add_argument("--record", help="simulator: write the kernel signatures each flow launches to this file")
    p.add_argument("--flows-from", help="--ptx: compile the kernel signatures of the flows recorded in this file")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        # the simulator runs each CUDA thread as a Python thread: a short GIL switch interval
        # makes its barriers (syncthreads) ~10x faster (a setting of this process only)
        sys.setswitchinterval(5e-5)
        _lock_simulated_shared_arrays()
    if args.record:
        if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
            p.error("--record needs the simulator (NUMBA_ENABLE_CUDASIM=1)")
        launches, current = _install_launch_recorder()
    # launches of tiny grids are the point here, not a performance problem
    warnings.simplefilter("ignore", NumbaPerformanceWarning)
    if args.ptx:
        log = _install_ptx_launcher()
        dev = registry.build("cuda")  # directly: get_backend would refuse without a GPU
    else:
        from nfcore.kernels import cuda_available, get_backend

        if not cuda_available():
            print("FAIL setup - no GPU and NUMBA_ENABLE_CUDASIM is not set")
            return 2
        dev = get_backend("cuda")
    from nfcore.kernels import launch

    if args.tpb:
        launch.THREADS_PER_BLOCK = args.tpb
    if args.chunk:
        launch.ROWS_PER_CHUNK = args.chunk
    if args.tile:
        launch.TILE = args.tile
    s = Sizes(launch.THREADS_PER_BLOCK, launch.ROWS_PER_CHUNK, launch.TILE)
    wanted = set(args.only) if args.only else None
    failed = 0

    def report(ok, check, dtype, detail):
        nonlocal failed
        status = ok if isinstance(ok, str) else ("PASS" if ok else "FAIL")
        failed += status == "FAIL"
        print(f"{status} {check} {dtype} {detail}", flush=True)

    def want(check):
        return wanted is None or check in wanted

    if want("public_names"):
        report(
            list(dev.__all__) == TWIN_OPS and all(hasattr(dev, k) for k in TWIN_OPS),
            "public_names",
            "-",
            f"{len(dev.__all__)} names",
        )

    for dt in DTYPES:
        dname = np.dtype(dt).name
        cases = op_cases(np.random.default_rng(0), dt, s)
        for name in TWIN_OPS:
            if not want(name):
                continue
            if name not in cases:  # a host-side op: misc_checks below (not a --ptx check)
                continue
            try:
                if args.ptx:
                    start = len(log)
                    for _, a, _ in cases[name]:
                        getattr(dev, name)(*a)
                    kernels = sorted({k for k, _ in log[start:]})
                    report(bool(kernels), name, dname, "ptx: " + ",".join(kernels))
                else:
                    err, where = run_op(dev, name, cases[name], dt)
                    report(err < TOL[np.dtype(dt)], name, dname, f"max_err={err:.2e} {where}".rstrip())
            except Exception as exc:
                report(False, name, dname, f"{type(exc).__name__}: {exc}".replace("\n", " "))
                traceback.print_exc()
        if args.ptx:
            continue
        try:
            misc = misc_checks(dev, np.dtype(dt), s)
        except Exception as exc:
            misc = {k: (False, f"{type(exc).__name__}: {exc}") for k in HOST_OPS}
            traceback.print_exc()
        for name, (ok, detail) in misc.items():
            if want(name):
                report(ok, name, dname, detail)

    if want("ar_sequential"):
        for dt in DTYPES:
            dname = np.dtype(dt).name
            try:
                if args.ptx:
                    start = len(log)
                    sequential_checks(dev, np.dtype(dt), s, run=False)
                    kernels = sorted({k for k, _ in log[start:]})
                    report("_ar_kernel" in kernels, "ar_sequential", dname, "ptx: " + ",".join(kernels))
                else:
                    err, detail = sequential_checks(dev, np.dtype(dt), s)
                    report(err < TOL[np.dtype(dt)], "ar_sequential", dname, f"max_err={err:.2e} {detail}")
            except Exception as exc:
                report(False, "ar_sequential", dname, f"{type(exc).__name__}: {exc}".replace("\n", " "))
                traceback.print_exc()

    recorded = None
    if args.ptx and args.flows_from:
        with open(args.flows_from, "rb") as fh:
            recorded = pickle.load(fh)  # written by this script's simulator run (a file of the test's own)
    for label, cfg in FLOWS.items():
        checks = [f"flow_{label}.{part}" for part in FLOW_PARTS]
        if args.ptx:
            if want(f"flow_{label}"):
                if recorded is None:
                    report(False, f"flow_{label}", cfg["dtype"], "no --flows-from record of the flows' launches")
                    continue
                try:
                    sigs = recorded.get(label, set())
                    names = _compile_recorded(sigs, _PTX_DONE)
                    detail = f"ptx: {len(sigs)} signatures of " + ",".join(names)
                    report(bool(names), f"flow_{label}", cfg["dtype"], detail)
                except Exception as exc:
                    report(False, f"flow_{label}", cfg["dtype"], f"{type(exc).__name__}: {exc}".replace("\n", " "))
                    traceback.print_exc()
            continue
        if not any(want(c) for c in checks):
            continue
        tol = 1e-10 if cfg["dtype"] == "float64" else 1e-4
        if args.record:
            current[0] = label
        try:
            res = flow_checks(dev, label, cfg)
        except Exception as exc:
            res = {part: f"{type(exc).__name__}: {exc}".replace("\n", " ") for part in FLOW_PARTS}
            traceback.print_exc()
        if args.record:
            current[0] = None
        for part in FLOW_PARTS:
            v = res[part]
            if isinstance(v, str) and v.startswith("REFUSED "):
                report(True, f"flow_{label}.{part}", cfg["dtype"], "both sides refuse: " + v[8:])
            elif isinstance(v, str):
                report(False, f"flow_{label}.{part}", cfg["dtype"], v)
            else:
                report(v < tol, f"flow_{label}.{part}", cfg["dtype"], f"max_err={v:.2e}")

    if args.record:
        with open(args.record, "wb") as fh:
            pickle.dump(launches, fh)
        print(f"# recorded {sum(map(len, launches.values()))} kernel signatures launched by {len(launches)} flows")
    if args.ptx:
        print(f"# compiled {len(_PTX_DONE)} kernel signatures to PTX")
    print(f"# {failed} failed, {time.perf_counter() - t0:.1f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
