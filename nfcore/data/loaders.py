"""Loading user data (.npy, .csv) as a validated (N, D) float64 array."""

import os

import numpy as np

from ..errors import DataError
from .toy import TOY_DENSITIES, sample_toy

__all__ = ["DATASETS", "IMAGE_DATASETS", "load_array", "open_rows", "load_images", "load_data", "standardization"]


class NpyRows:
    """The rows of a 1-D or 2-D ``.npy`` file, read a slice at a time (``rows[a:b]``, float64),
    never all at once: memory bounded by the slice, whatever the file's size. The header is
    checked against the file's size before anything is read (a header claiming terabytes in a
    small file is refused), and the dtype must be real numbers (any byte order)."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as fh:
            try:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            except ValueError as err:
                raise DataError(f"{path}: not a readable .npy file ({err})") from err
            self.offset = fh.tell()
        dtype = np.dtype(dtype)
        if dtype.kind not in "fiub":
            raise DataError(f"{path}: expected real numbers, got dtype {dtype}"
                            + (" (complex values: pass the real part explicitly)" if dtype.kind == "c" else ""))
        if any(int(v) < 0 for v in shape):
            raise DataError(f"{path}: a negative size in the header's shape {tuple(shape)}")
        if len(shape) not in (1, 2):
            raise DataError(f"{path}: expected a 2-D (N, D) array, got shape {tuple(shape)}")
        if fortran and len(shape) == 2 and shape[1] > 1:
            raise DataError(f"{path}: a Fortran-ordered array; save it C-ordered "
                            "(np.save(path, np.ascontiguousarray(a)))")
        self.dtype = dtype
        self.shape = (int(shape[0]), int(shape[1]) if len(shape) == 2 else 1)
        need = self.offset + self.shape[0] * self.shape[1] * dtype.itemsize
        size = os.path.getsize(path)
        if need > size:
            raise DataError(f"{path}: the header claims shape {tuple(shape)} ({need:,} bytes) but the file has "
                            f"{size:,} bytes (truncated or forged)")

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, rows):
        start, stop, step = rows.indices(self.shape[0])
        if step != 1:
            raise IndexError("NpyRows reads contiguous row ranges only")
        count = max(0, stop - start) * self.shape[1]
        with open(self.path, "rb") as fh:
            fh.seek(self.offset + start * self.shape[1] * self.dtype.itemsize)
            block = np.fromfile(fh, dtype=self.dtype, count=count)
        return block.reshape(-1, self.shape[1]).astype(np.float64)


class _InMemoryRows:
    def __init__(self, arr):
        self.arr, self.shape = arr, arr.shape

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, rows):
        return self.arr[rows]


def open_rows(path):
    """Rows of a ``.npy`` (read lazily, ``NpyRows``) or ``.csv``/``.txt`` (parsed whole) file for
    evaluation: any number of rows, zero and one included; ``rows[a:b]`` gives float64 rows.
    The values are checked chunk by chunk by the caller (NaN/inf)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    if os.path.splitext(path)[1].lower() == ".npy":
        return NpyRows(path)
    return _InMemoryRows(load_array(path, min_rows=0))


def load_array(path, min_rows=2):
    """Read an (N, D) array from ``.npy`` or ``.csv`` (comma separated, optional header row).

    Raises ``DataError`` naming the file for a missing file, an unknown extension,
    non-numeric content (complex, object or string arrays), a wrong number of dimensions,
    fewer than ``min_rows`` rows or NaN/inf values. Any byte order is read.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".npy":
            rows = NpyRows(path)  # the header checked against the file's size first
            arr = rows[0 : len(rows)]
        elif ext in (".csv", ".txt"):
            arr = _read_csv(path)
        else:
            raise DataError(f"{path}: unknown extension {ext!r}; use .npy or .csv")
    except DataError:
        raise
    except (ValueError, OSError) as err:
        raise DataError(f"{path}: could not read it ({err})") from err
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise DataError(f"{path}: expected real numbers, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DataError(f"{path}: expected a 2-D (N, D) array, got shape {arr.shape}")
    if arr.shape[0] < min_rows:
        raise DataError(f"{path}: needs at least {min_rows} rows, got {arr.shape[0]}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise DataError(f"{path}: {int(bad.sum())} NaN/inf values (first in row {row}); clean the data first")
    return arr


def _read_csv(path):
    with open(path) as fh:
        first = fh.readline()
    try:
        [float(v) for v in first.strip().split(",") if v.strip()]
        skip = 0
    except ValueError:
        skip = 1  # a header row
    return np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2)


#: built-in data sets that are not 2-D toy densities
DATASETS = ("digits-flat", "digits")
#: built-in image data sets (integer levels, (N, H, W, C))
IMAGE_DATASETS = ("digits",)


def load_images(path, levels=None):
    """Read integer images from ``.npy``: (N, H, W, C) or (N, H, W) (one channel), as float64 levels.

    ``levels`` K: the values must be integers in [0, K-1] (default: 256 for uint8 files, else
    the maximum + 1). Returns ``(images (N, H, W, C) float64, K)``; raises ``DataError`` naming
    the file for a wrong rank, non-integer values, values outside the levels, NaN or inf.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    if os.path.splitext(path)[1].lower() != ".npy":
        raise DataError(f"{path}: images are read from .npy files (uint8 (N, H, W, C) or (N, H, W))")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise DataError(f"{path}: could not read it ({err})") from err
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{path}: expected numbers, got dtype {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise DataError(f"{path}: expected images of shape (N, H, W, C) or (N, H, W), got shape {arr.shape}")
    x = np.ascontiguousarray(arr, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise DataError(f"{path}: NaN/inf values; images must hold integer levels")
    if np.any(x != np.floor(x)):
        raise DataError(f"{path}: non-integer values; images must hold integer levels 0..K-1")
    if levels is None:
        levels = 256 if arr.dtype == np.uint8 else int(x.max()) + 1
    levels = int(levels)
    if x.min() < 0 or x.max() > levels - 1:
        raise DataError(
            f"{path}: values in [{x.min():g}, {x.max():g}] fall outside the {levels} levels 0..{levels - 1}"
        )
    return x, levels


def load_data(source, n=None, seed=None):
    """A built-in density's name (drawing ``n`` points from ``seed``), ``digits-flat`` (the
    bundled digits as dequantised 64-D rows; ``n`` is ignored) or a file path."""
    if source in TOY_DENSITIES:
        return sample_toy(source, 10_000 if n is None else n, seed)
    if source == "digits-flat":
        from .digits import load_digits

        return load_digits(flat=True, seed=seed)
    if source == "digits":
        from .digits import load_digit_images

        return load_digit_images("train")
    if os.path.splitext(str(source))[1] == "" and not os.path.exists(str(source)):
        names = ", ".join([*sorted(TOY_DENSITIES), *DATASETS])
        raise DataError(f"unknown dataset {source!r}; built-in: {names}, or a .npy/.csv path")
    return load_array(source)


def standardization(x):
    """(mean, std) per column, std floored so a constant column cannot divide by zero."""
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    if np.any(std < 1e-12):
        cols = np.flatnonzero(std < 1e-12).tolist()
        raise DataError(f"columns {cols} are constant: a continuous density cannot be fitted to them")
    return mean, std
