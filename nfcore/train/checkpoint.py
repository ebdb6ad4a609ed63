"""Checkpoints: one ``.npz`` of arrays plus the model's JSON config, written atomically.

Layout: ``model/<name>`` for the model's parameters and buffers, ``optim/<key>`` for the
optimiser, ``best/<name>`` for the best weights seen, ``extra/<key>`` for other arrays,
and ``__meta__``: UTF-8 JSON bytes (as uint8) holding the format tag, the builder config
and a training summary. Loaded with ``allow_pickle=False``: nothing in the file executes.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import time
import zipfile
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..core.flow import Flow
from ..errors import CheckpointError, ConfigError, NfcoreError
from .adam import Adam

__all__ = ["save", "load", "load_checkpoint", "read_info", "FORMAT"]

FORMAT = "nfcore-checkpoint"
VERSION = 1


#: a temporary checkpoint older than this (seconds) was left by a crash (a kill -9 mid-write)
STALE_SECONDS = 600


def _remove_stale_temporaries(folder):
    """Delete the ``.tmp-*.npz`` files a crashed write left in ``folder`` (those older than
    ``STALE_SECONDS``: a write in progress elsewhere is younger)."""
    now = time.time()
    for name in os.listdir(folder):
        if name.startswith(".tmp-") and name.endswith(".npz"):
            full = os.path.join(folder, name)
            try:
                if now - os.path.getmtime(full) > STALE_SECONDS:
                    os.unlink(full)
            except OSError:
                pass  # gone already, or not ours to remove


def save(path: str | os.PathLike[str], flow: Flow, optimizer: Adam | None = None, meta: dict[str, Any] | None = None,
         best_state: Mapping[str, ArrayLike] | None = None, extra: Mapping[str, ArrayLike] | None = None) -> None:
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
    _remove_stale_temporaries(folder)
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


#: the JSON metadata entry is small; a larger one is refused before it is read
MAX_META_BYTES = 1 << 20
#: an entry outside model/ and best/ may hold at most this many elements, or as many as the
#: model has (optimiser buffers and keep_start's copy of the start hold one per parameter;
#: history columns one per epoch)
MAX_EXTRA_ELEMENTS = 10_000_000


#: what reading a damaged archive can raise (zipfile's own errors, unsupported fields it reads
#: as such, short reads, bad headers); all become CheckpointError
CORRUPT = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError, EOFError, ValueError,
           struct.error, UnicodeDecodeError, KeyError, OverflowError, RuntimeError, RecursionError, zlib.error,
           TypeError)


def _entry_header(zf, name):
    """(shape, dtype) from a .npy entry's header, read without reading its data."""
    with zf.open(name) as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    return tuple(shape), np.dtype(dtype)


def _entry(zf, name):
    with zf.open(name) as fh:
        return np.lib.format.read_array(fh, allow_pickle=False)


def _open(path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        return path, zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise CheckpointError(f"{path}: not an nfcore checkpoint (not an .npz archive: {err})") from err


def _read_info(path, zf):
    """The checkpoint's JSON metadata, checked (format tag, version), read before anything else."""
    if "__meta__.npy" not in zf.namelist():
        raise CheckpointError(f"{path}: an .npz file but not an nfcore checkpoint (no __meta__ entry)")
    shape, dtype = _entry_header(zf, "__meta__.npy")
    if dtype != np.uint8 or len(shape) != 1 or shape[0] > MAX_META_BYTES:
        raise CheckpointError(f"{path}: corrupt metadata entry (shape {shape}, dtype {dtype})")
    try:
        info = json.loads(_entry(zf, "__meta__.npy").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as err:
        raise CheckpointError(f"{path}: corrupt metadata ({err})") from err
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an nfcore checkpoint (format tag "
                              f"{info.get('format') if isinstance(info, dict) else None!r})")
    version = info.get("version", 0)
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(f"{path}: written by a newer nfcore (version {version!r} > {VERSION})")
    if not isinstance(info.get("meta", {}), dict):
        raise CheckpointError(f"{path}: corrupt metadata (meta is not a dict)")
    return info


def _read_arrays(path, zf, expected):
    """Every array entry, each header checked before its data is read: model/ and best/ entries
    must have the model's names, shapes and a float dtype and be finite; the rest are numeric
    and bounded in size."""
    arrays = {}
    limit = max(MAX_EXTRA_ELEMENTS, sum(int(v.size) for v in expected.values()))
    for info in zf.infolist():
        if info.compress_type != zipfile.ZIP_STORED:  # np.savez stores: what is read is what the file holds
            raise CheckpointError(f"{path}: entry {info.filename!r} is compressed; nfcore writes stored entries")
    for name in zf.namelist():
        if name == "__meta__.npy":
            continue
        key = name[: -len(".npy")] if name.endswith(".npy") else None
        section = key.split("/", 1)[0] if key and "/" in key else None
        if section not in ("model", "best", "optim", "extra"):
            raise CheckpointError(f"{path}: unexpected entry {name!r}")
        try:
            shape, dtype = _entry_header(zf, name)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise CheckpointError(f"{path}: entry {name!r} is corrupt ({err})") from err
        if dtype.kind not in "fiub":
            raise CheckpointError(f"{path}: entry {name!r} has dtype {dtype}, not numbers")
        param = key.split("/", 1)[1]
        if section in ("model", "best"):
            if param not in expected:
                raise CheckpointError(f"{path}: entry {name!r} is not a parameter of the model its config builds")
            want = expected[param]
            if shape != want.shape or (dtype.kind == "f") != (want.dtype.kind == "f"):
                raise CheckpointError(f"{path}: {key} has shape {shape} and dtype {dtype}; the model's config "
                                      f"expects shape {want.shape} and dtype {want.dtype}")
        elif int(np.prod(shape, dtype=np.float64)) > limit:
            raise CheckpointError(f"{path}: entry {name!r} claims shape {shape}: too large")
        try:
            value = _entry(zf, name)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise CheckpointError(f"{path}: entry {name!r} is corrupt ({err})") from err
        if section in ("model", "best"):
            _check_value(path, key, value, expected[param])
        arrays[key] = value
    for section in ("model", "best"):
        have = {k[len(section) + 1 :] for k in arrays if k.startswith(section + "/")}
        missing = sorted(set(expected) - have)
        if missing and (section == "model" or have):  # best/ is all or nothing
            raise CheckpointError(f"{path}: {section} entries missing: {missing[:10]}")
    return arrays


def _check_value(path, key, value, built):
    """Weights finite; integer buffers (masks, permutations, MADE degrees: index data the kernels
    trust) equal to those the config builds, the ActNorm ``initialized`` flags 0 or 1."""
    structural = key.rsplit(".", 1)[-1] in ("mask", "perm", "input_degrees")
    if built.dtype.kind == "f" and not structural:
        if not np.all(np.isfinite(value)):
            raise CheckpointError(f"{path}: {key} holds NaN or inf values (a diverged run's weights?)")
    elif key.endswith("initialized"):
        if not np.all((value == 0) | (value == 1)):
            raise CheckpointError(f"{path}: {key} must be 0 or 1")
    elif not np.array_equal(value, built):
        raise CheckpointError(f"{path}: {key} differs from the structure its config builds (a mask, permutation or "
                              "degree vector is fixed by the config and seed)")


def read_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint's metadata (format, config, meta) alone, checked, without building the model."""
    path = os.fspath(path)
    try:
        path, zf = _open(path)
        with zf:
            return _read_info(path, zf)
    except NfcoreError:
        raise
    except CORRUPT as err:
        raise CheckpointError(f"{path}: corrupt checkpoint ({type(err).__name__}: {err})") from err


def _section(arrays, prefix):
    n = len(prefix)
    return {k[n:]: v for k, v in arrays.items() if k.startswith(prefix)}


def load_checkpoint(path: str | os.PathLike[str], device: str = "cpu",
                    allow_large: bool = False) -> tuple[Flow, dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """(flow, info, sections): the model rebuilt from its config plus every stored section.

    ``sections`` has keys ``optim``, ``best``, ``extra`` (dicts of arrays, possibly empty).
    The file is untrusted input: its config is validated and its size estimated before the
    model is built (``allow_large``: build one above ``models.MAX_PARAMETERS``), and every
    entry's header is checked against the model before the entry is read.
    """
    from ..models import build

    path = os.fspath(path)
    try:
        path, zf = _open(path)
        with zf:
            info = _read_info(path, zf)
            try:
                flow = build(info.get("config"), allow_large=allow_large)
            except ConfigError as err:
                raise CheckpointError(f"{path}: its config is refused: {err}") from err
            expected = {k: np.asarray(v) for k, v in flow.state_dict().items()}
            arrays = _read_arrays(path, zf, expected)
    except NfcoreError:
        raise
    except CORRUPT as err:  # a damaged archive: whatever zipfile or the .npy reader trips on
        raise CheckpointError(f"{path}: corrupt checkpoint ({type(err).__name__}: {err})") from err
    flow.load_state_dict(_section(arrays, "model/"))
    if device != "cpu":
        flow.to(device)
    flow.eval()  # a loaded model evaluates (batch norm: running averages); fit() switches to train()
    sections = {name: _section(arrays, name + "/") for name in ("optim", "best", "extra")}
    return flow, info, sections


def load(path: str | os.PathLike[str], device: str = "cpu", allow_large: bool = False) -> Flow:
    """Rebuild the ``Flow`` stored in ``path`` (no code from the file is executed; the file is
    checked as untrusted input, see ``load_checkpoint``).

    Example:
        >>> import os, tempfile, numpy as np, nfcore
        >>> flow = nfcore.build({"dim": 2, "layers": 2, "hidden": [8]})
        >>> path = os.path.join(tempfile.mkdtemp(), "m.npz")
        >>> nfcore.save(path, flow)
        >>> x = np.zeros((1, 2))
        >>> bool(np.allclose(nfcore.load(path).log_prob(x), flow.log_prob(x)))
        True
    """
    return load_checkpoint(path, device, allow_large)[0]
