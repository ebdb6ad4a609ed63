"""Parameters, buffers and the Module tree.

A ``Module`` finds its parameters, buffers and child modules by attribute (lists and
tuples of modules count too), in attribute order, so names are stable:
``"layers.0.net.linears.1.weight"``. ``repr(module)`` is ``describe(module)``: the tree one
line per layer, with shapes and parameter counts.
"""

import numpy as np

from ..errors import CheckpointError, DeviceError, ShapeError
from ..kernels import backend_of, get_backend, is_device_array

__all__ = ["Parameter", "Buffer", "Module", "describe", "flatten_parameters"]


class Parameter:
    """A trainable array and the gradient ``backward`` accumulates into it.

    ``data`` and ``grad`` have the same shape, dtype and device. After an optimiser
    flattens its parameters both are *views* into one contiguous buffer: assign with
    ``p.data[...] = value``, never rebind.
    """

    __slots__ = ("data", "grad")

    def __init__(self, data):
        self.data = data
        self.grad = backend_of(data).zeros(data.shape, data.dtype)

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    def __repr__(self):
        return f"Parameter(shape={tuple(self.data.shape)}, dtype={np.dtype(self.data.dtype).name})"


class Buffer:
    """A non-trainable array that belongs to the model state (saved in checkpoints)."""

    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data

    def __repr__(self):
        return f"Buffer(shape={tuple(self.data.shape)}, dtype={np.dtype(self.data.dtype).name})"


def _children(value):
    if isinstance(value, Module):
        yield "", value
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            if isinstance(v, Module):
                yield str(i), v


class Module:
    """Base class of every layer, conditioner network, distribution and flow."""

    training = True
    #: on a worker's replica, its place among the shards of the call (``nfcore.parallel``)
    _shard = None
    #: rows per worker below which splitting a batch does not pay for this layer (measured; a
    #: flow takes the smallest over its modules, ``nfcore.threads.workers_for``); None: no opinion
    min_shard_rows = None

    def before_shards(self):
        """Hook: work a training step does once on the whole model before the batch is cut into
        shards (``nfcore.parallel``); a spectrally normalised layer runs its power iteration here."""

    def whole_batch_pending(self):
        """Hook: True while the next training call must see the whole batch unsplit (an ActNorm
        waiting for its data-dependent initialisation)."""
        return False

    def _walk(self, prefix=""):
        """Yield (name, object) for parameters and buffers of this module and its children."""
        for key, value in vars(self).items():
            if isinstance(value, (Parameter, Buffer)):
                yield prefix + key, value
            else:
                for sub, child in _children(value):
                    name = prefix + key + ("." + sub if sub else "") + "."
                    yield from child._walk(name)

    def modules(self):
        """This module and all its descendants, depth first."""
        yield self
        for value in vars(self).values():
            for _, child in _children(value):
                yield from child.modules()

    def named_parameters(self):
        return [(k, v) for k, v in self._walk() if isinstance(v, Parameter)]

    def parameters(self):
        return [v for _, v in self.named_parameters()]

    def named_buffers(self):
        return [(k, v) for k, v in self._walk() if isinstance(v, Buffer)]

    def num_parameters(self):
        return int(sum(int(np.prod(p.shape)) for p in self.parameters()))

    def zero_grad(self):
        for p in self.parameters():
            backend_of(p.grad).fill(p.grad, 0)

    def train(self, mode=True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    @property
    def dtype(self):
        ps = [v for _, v in self._walk() if isinstance(v, Parameter)]
        return np.dtype(ps[0].data.dtype) if ps else None

    @property
    def device(self):
        for _, v in self._walk():
            return "cuda" if is_device_array(v.data) else "cpu"
        return "cpu"

    def _generators(self):
        return [v for m in self.modules() for v in vars(m).values() if isinstance(v, np.random.Generator)]

    def generator_states(self):
        """The states of the random generators the modules hold (dequantisation noise, residual
        blocks' probes), in a fixed order: a resume state saves them so training continues the
        same random streams."""
        return [g.bit_generator.state for g in self._generators()]

    def set_generator_states(self, states):
        """Restore ``generator_states()`` (as saved by a resume state)."""
        gens = self._generators()
        if not isinstance(states, list) or len(states) != len(gens):
            raise CheckpointError(f"the resume state holds {len(states) if isinstance(states, list) else 'no'} "
                                  f"generator states; the model has {len(gens)} generators")
        for g, state in zip(gens, states):
            try:
                g.bit_generator.state = state
            except (TypeError, ValueError, KeyError, OverflowError) as err:
                raise CheckpointError(f"a generator state in the resume state is not valid ({err})") from err

    def state_dict(self):
        """{name: host array} for every parameter and buffer (copies)."""
        return {k: np.array(backend_of(v.data).to_host(v.data)) for k, v in self._walk()}

    def load_state_dict(self, state, strict=True):
        """Copy arrays into the existing parameters and buffers (shapes must match)."""
        own = dict(self._walk())
        if strict:
            missing = sorted(set(own) - set(state))
            extra = sorted(set(state) - set(own))
            if missing or extra:
                raise CheckpointError(f"state does not match the model: missing {missing}, unexpected {extra}")
        for k, obj in own.items():
            if k not in state:
                continue
            value = np.asarray(state[k])
            if tuple(value.shape) != tuple(obj.data.shape):
                raise CheckpointError(f"{k}: expected shape {tuple(obj.data.shape)}, got {tuple(value.shape)}")
            value = value.astype(obj.data.dtype, copy=False)
            if is_device_array(obj.data):
                obj.data.copy_to_device(np.ascontiguousarray(value))
            else:
                obj.data[...] = value
        for m in self.modules():
            m._after_load()
        return self

    def _after_load(self):
        """Hook: recompute anything derived from buffers after load_state_dict."""

    # -- the readable tree (``describe``) -----------------------------------------------
    def extra_repr(self):
        """This module's shapes and settings on one line (``describe`` adds the name and the count)."""
        return ""

    def tree_children(self):
        """(label, module) pairs that ``describe`` gives lines of their own; whatever else the
        subtree holds (a layer's conditioner network) is summarised on this module's line."""
        return []

    def __repr__(self):
        return describe(self)

    def to(self, device=None, dtype=None):
        """Move (``"cpu"``/``"cuda"``) and/or cast (float32/float64) parameters and buffers.

        Rebinds arrays, so do it before an optimiser is created.
        """
        ops = get_backend(device) if device is not None else None
        for _, v in self._walk():
            host = np.asarray(backend_of(v.data).to_host(v.data))
            if dtype is not None and np.issubdtype(host.dtype, np.floating):
                host = host.astype(dtype)  # parameters and float buffers; index buffers keep theirs
            host = np.ascontiguousarray(host)
            target = ops if ops is not None else backend_of(v.data)
            v.data = target.asarray(host)
            if isinstance(v, Parameter):
                v.grad = target.zeros(host.shape, host.dtype)
        for m in self.modules():
            m._after_load()
        return self


def shape_text(*shapes):
    """``[8x8x1 -> 4x4x4]`` (H x W x C images, D for vectors); a shape that does not change is shown once."""
    parts = []
    for s in shapes:
        text = "x".join(str(int(d)) for d in s)
        if not parts or parts[-1] != text:
            parts.append(text)
    return "[" + " -> ".join(parts) + "]"


def widths_text(sizes, notes=()):
    """``1 -> 64 -> 64 -> 2 (relu)``: a network's widths, then its notes in parentheses."""
    notes = [n for n in notes if n]
    return " -> ".join(str(int(s)) for s in sizes) + (f" ({', '.join(notes)})" if notes else "")


def describe(module):
    """The module tree as text: one line per module, children indented under their parent.

    A line is ``label ClassName extra_repr, N params`` with N the parameters of the module's
    whole subtree (a layer's line counts its conditioner's); the root line gives the total.
    Which children get lines of their own is each module's ``tree_children`` (a flow's
    transform and base, a chain's layers); the rest is summarised in ``extra_repr``.

    Example:
        >>> from nfcore import build
        >>> print(describe(build({"flow": "realnvp", "dim": 2, "layers": 2, "hidden": [8]})))
        Flow(realnvp, dim=2, base=StandardNormal, 68 parameters)
        ├─ Chain 2 layers, 68 params
        │  ├─ 0 AffineCoupling [2], conditioner MLP 1 -> 8 -> 2 (relu), 34 params
        │  └─ 1 AffineCoupling [2], conditioner MLP 1 -> 8 -> 2 (relu), 34 params
        └─ base StandardNormal [2]
    """
    root = [module.extra_repr(), f"{module.num_parameters():,} parameters"]
    lines = [f"{type(module).__name__}({', '.join(t for t in root if t)})"]

    def walk(parent, indent):
        children = parent.tree_children()
        for i, (label, child) in enumerate(children):
            last = i == len(children) - 1
            text = " ".join(t for t in (label, type(child).__name__, child.extra_repr()) if t)
            n = child.num_parameters()
            lines.append(indent + ("└─ " if last else "├─ ") + text + (f", {n:,} params" if n else ""))
            walk(child, indent + ("   " if last else "│  "))

    walk(module, "")
    return "\n".join(lines)


def flatten_parameters(params):
    """Make every parameter's data and grad views of two flat buffers; return them.

    One buffer lets an optimiser update all parameters (and zero all gradients) in one
    kernel call, which matters for small flows where per-call overhead dominates.
    """
    if not params:
        raise ShapeError("no parameters to optimise")
    dtypes = {np.dtype(p.data.dtype) for p in params}
    devices = {is_device_array(p.data) for p in params}
    if len(dtypes) != 1 or len(devices) != 1:
        raise DeviceError(f"parameters must share one dtype and device, found dtypes {sorted(map(str, dtypes))}")
    ops = backend_of(params[0].data)
    dtype = dtypes.pop()
    sizes = [int(np.prod(p.data.shape)) for p in params]
    total = int(sum(sizes))
    flat = ops.empty((total,), dtype)
    gflat = ops.zeros((total,), dtype)
    host = np.empty(total, dtype)
    off = 0
    for p, n in zip(params, sizes):
        host[off : off + n] = np.asarray(ops.to_host(p.data)).ravel()
        off += n
    if ops.name == "cuda":
        flat.copy_to_device(host)
    else:
        flat[...] = host
    off = 0
    for p, n in zip(params, sizes):
        shape = tuple(p.data.shape)
        p.data = ops.reshape(flat[off : off + n], shape)
        p.grad = ops.reshape(gflat[off : off + n], shape)
        off += n
    return flat, gflat
