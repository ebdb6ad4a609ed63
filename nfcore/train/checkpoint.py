"""Checkpoints: one ``.npz`` of arrays plus the model's JSON config, written atomically.

Layout: ``model/<name>`` for the model's parameters and buffers, ``optim/<key>`` for the
optimiser, ``best/<name>`` for the best weights seen, ``extra/<key>`` for other arrays,
and ``__meta__``: UTF-8 JSON bytes (as uint8) holding the format tag, the builder config
and a training summary. Loaded with ``allow_pickle=False``: nothing in the file executes.
"""

import json
import os
import tempfile
import zipfile

import numpy as np

from ..errors import CheckpointError, ConfigError

__all__ = ["save", "load", "load_checkpoint", "FORMAT"]

FORMAT = "nfcore-checkpoint"
VERSION = 1


def save(path, flow, optimizer=None, meta=None, best_state=None, extra=None):
    """Write ``flow`` (and optionally optimiser state, best weights, extra arrays) to ``path``.

    The file is written to a temporary name in the same folder and renamed, so a crash
    never leaves a half-written checkpoint under ``path``.
    """
    if flow.config is None:
        raise ConfigError("only flows made by nfcore.build(config) can be saved: this one has no config")
    arrays = {f"model/{k}": v for k, v in flow.state_dict().items()}
    if optimizer is not None:
        arrays.update({f"optim/{k}": v for k, v in optimizer.state_dict().items()})
    if best_state is not None:
        arrays.update({f"best/{k}": v for k, v in best_state.items()})
    for k, v in (extra or {}).items():
        arrays[f"extra/{k}"] = np.asarray(v)
    info = {"format": FORMAT, "version": VERSION, "config": flow.config, "meta": meta or {}}
    arrays["__meta__"] = np.frombuffer(json.dumps(info).encode("utf-8"), dtype=np.uint8)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read(path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as err:
        raise CheckpointError(f"{path}: not a readable nfcore checkpoint (truncated or foreign file: {err})") from err
    if "__meta__" not in arrays:
        raise CheckpointError(f"{path}: an .npz file but not an nfcore checkpoint (no __meta__ entry)")
    try:
        info = json.loads(arrays.pop("__meta__").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: corrupt metadata ({err})") from err
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an nfcore checkpoint (format tag {info.get('format')!r})")
    if info.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: written by a newer nfcore (version {info['version']} > {VERSION})")
    return path, info, arrays


def _section(arrays, prefix):
    n = len(prefix)
    return {k[n:]: v for k, v in arrays.items() if k.startswith(prefix)}


def load_checkpoint(path, device="cpu"):
    """(flow, info, sections): the model rebuilt from its config plus every stored section.

    ``sections`` has keys ``optim``, ``best``, ``extra`` (dicts of arrays, possibly empty).
    """
    from ..models import build

    path, info, arrays = _read(path)
    try:
        flow = build(info["config"])
        flow.load_state_dict(_section(arrays, "model/"))
    except (ConfigError, CheckpointError, KeyError) as err:
        raise CheckpointError(f"{path}: does not match its own config ({err})") from err
    if device != "cpu":
        flow.to(device)
    flow.eval()  # a loaded model evaluates (batch norm: running averages); fit() switches to train()
    sections = {name: _section(arrays, name + "/") for name in ("optim", "best", "extra")}
    return flow, info, sections


def load(path, device="cpu"):
    """Rebuild the ``Flow`` stored in ``path`` (no code from the file is executed).

    Example:
        >>> import os, tempfile, numpy as np, nfcore
        >>> flow = nfcore.build({"dim": 2, "layers": 2, "hidden": [8]})
        >>> path = os.path.join(tempfile.mkdtemp(), "m.npz")
        >>> nfcore.save(path, flow)
        >>> x = np.zeros((1, 2))
        >>> bool(np.allclose(nfcore.load(path).log_prob(x), flow.log_prob(x)))
        True
    """
    return load_checkpoint(path, device)[0]
