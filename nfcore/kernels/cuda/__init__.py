"""The CUDA backend: ``@cuda.jit`` kernels over ``numba.cuda`` device arrays behind nfcore's op API.

Every public function has a twin of the same name, signature and meaning in
``nfcore.kernels.cpu`` (inputs first, preallocated outputs last, written in place) and a
parity test against it (``tests/cuda_parity_script.py``, run through numba's simulator when
no GPU is present). The element math is not repeated here: kernels call the ``@njit``
scalar functions of ``nfcore.kernels._scalar``, which numba-cuda compiles for the device
the first time a kernel calls them.

Launch settings are module attributes read at every call, so that a test can shrink them
and make tiny inputs span several blocks (stumpy's trick):

* ``THREADS_PER_BLOCK``: threads of a 1-D launch (one thread per element, row or column);
* ``ROWS_PER_CHUNK``: rows that one thread sums in a column reduction; the per-chunk partial
  sums are then added up by ``colsum_acc`` in a fixed order (deterministic, no atomics);
* ``dense.TILE``: the edge of the GEMM's shared-memory tiles.

Host <-> device copies happen only where the API says so: ``asarray`` of a host array,
``to_host``, and the single float that ``total`` and ``sumsq`` return.

This package imports ``numba.cuda``; ``nfcore.kernels.get_backend("cuda")`` imports it only
when asked, after checking that a GPU (or the simulator) is there.
"""

import numpy as np
from numba import cuda

from ...errors import ShapeError
from .. import is_device_array
from .adam import adam_update
from .batchnorm import batchnorm_bwd, batchnorm_coeffs, col_mean_var
from .coupling import (
    additive_coupling,
    additive_coupling_bwd,
    affine_coupling_fwd,
    affine_coupling_fwd_bwd,
    affine_coupling_inv,
    affine_coupling_inv_bwd,
)
from .dense import (
    add_inplace,
    bias_act,
    bias_act_bwd,
    colsum_acc,
    gather_cols,
    linear_act,
    masked_linear_act,
    masked_matmul_nt,
    masked_matmul_tn_acc,
    matmul,
    matmul_nt,
    matmul_tn_acc,
    scatter_add_cols,
)
from .elementwise import (
    diag_affine,
    diag_affine_bwd,
    diag_normal_logprob,
    diag_normal_logprob_bwd,
    fill_sum,
    mask_mul,
    mask_mul_acc,
    normal_logprob,
    normal_logprob_bwd,
    scale_inplace,
    sumsq,
    total,
)
from .image import (
    col2im_acc,
    im2col,
    logit_map,
    logit_map_bwd,
    lu_compose,
    lu_compose_bwd,
    squeeze2x2,
    unsqueeze2x2,
)
from .mixture import logsumexp_cols, mog_logprob, mog_logprob_bwd, mog_sample
from .residual import act2, lipswish_dbeta, rowdot_acc, scale_rows

__all__ = [
    "name",
    "empty",
    "zeros",
    "asarray",
    "to_host",
    "fill",
    "copy",
    "reshape",
    "iadd",
    "add_scalar",
    "axpy",
    "adam_update",
    "batchnorm_bwd",
    "batchnorm_coeffs",
    "col_mean_var",
    "squeeze2x2",
    "unsqueeze2x2",
    "im2col",
    "col2im_acc",
    "logit_map",
    "logit_map_bwd",
    "lu_compose",
    "lu_compose_bwd",
    "act2",
    "lipswish_dbeta",
    "scale_rows",
    "rowdot_acc",
    "mog_logprob",
    "mog_logprob_bwd",
    "mog_sample",
    "logsumexp_cols",
    "additive_coupling",
    "additive_coupling_bwd",
    "affine_coupling_fwd",
    "affine_coupling_fwd_bwd",
    "affine_coupling_inv",
    "affine_coupling_inv_bwd",
    "add_inplace",
    "bias_act",
    "bias_act_bwd",
    "colsum_acc",
    "gather_cols",
    "linear_act",
    "matmul",
    "matmul_nt",
    "matmul_tn_acc",
    "masked_linear_act",
    "masked_matmul_nt",
    "masked_matmul_tn_acc",
    "scatter_add_cols",
    "diag_affine",
    "diag_affine_bwd",
    "diag_normal_logprob",
    "diag_normal_logprob_bwd",
    "fill_sum",
    "mask_mul",
    "mask_mul_acc",
    "normal_logprob",
    "normal_logprob_bwd",
    "scale_inplace",
    "sumsq",
    "total",
]

name = "cuda"

#: threads per block of 1-D launches (tests shrink it so that tiny inputs span several blocks)
THREADS_PER_BLOCK = 128
#: rows one thread sums in a column reduction before the chunk sums are reduced in turn
ROWS_PER_CHUNK = 256


def _grid(n):
    """(blocks, threads) of a 1-D launch with at least ``n`` threads (and at least one block)."""
    tpb = int(THREADS_PER_BLOCK)
    return max(1, -(-int(n) // tpb)), tpb


def _flat(a):
    """A 1-D view of a contiguous device array (no copy)."""
    return a if a.ndim == 1 else a.reshape(a.size)


# -- allocation and transfer -----------------------------------------------------------------


def empty(shape, dtype):
    """An uninitialised device array."""
    return cuda.device_array(shape, dtype=np.dtype(dtype))


def zeros(shape, dtype):
    """A device array of zeros (filled on the device: no host buffer is copied)."""
    a = empty(shape, dtype)
    fill(a, 0)
    return a


def asarray(a, dtype=None):
    """A device array: a host array is copied over (C-contiguous), a device array is returned as is.

    A device array of another ``dtype`` than asked is converted through the host (rare: layers
    never change dtype).
    """
    if is_device_array(a):
        if dtype is None or np.dtype(dtype) == np.dtype(a.dtype):
            return a
        return cuda.to_device(np.ascontiguousarray(a.copy_to_host(), dtype=dtype))
    return cuda.to_device(np.ascontiguousarray(a, dtype=dtype))


def to_host(a):
    """A numpy array with the contents of ``a`` (a copy for a device array)."""
    if is_device_array(a):
        return a.copy_to_host()
    return np.asarray(a)


def copy(a):
    """A new device array with the contents of ``a`` (device-to-device copy)."""
    out = cuda.device_array(a.shape, dtype=a.dtype)
    out.copy_to_device(a)
    return out


def reshape(a, shape):
    """A view of the contiguous device array ``a`` with a new shape (one entry may be -1)."""
    return a.reshape(shape)


# -- element-wise updates over flat views ----------------------------------------------------


@cuda.jit(cache=True)
def _fill_kernel(a, value):
    i = cuda.grid(1)
    if i < a.shape[0]:
        a[i] = value


@cuda.jit(cache=True)
def _iadd_kernel(a, b):
    i = cuda.grid(1)
    if i < a.shape[0]:
        a[i] += b[i]


@cuda.jit(cache=True)
def _add_scalar_kernel(a, c):
    i = cuda.grid(1)
    if i < a.shape[0]:
        a[i] += c


@cuda.jit(cache=True)
def _axpy_kernel(alpha, x, y):
    i = cuda.grid(1)
    if i < y.shape[0]:
        y[i] += alpha * x[i]


def _scalar(a, c):
    # numpy treats a Python scalar as "weak" (a float32 array stays float32): do the same
    return np.dtype(a.dtype).type(c)


def fill(a, value):
    """a[...] = value."""
    f = _flat(a)
    _fill_kernel[_grid(f.shape[0])](f, _scalar(a, value))


def iadd(a, b):
    """a += b (same shape)."""
    if tuple(a.shape) != tuple(b.shape):
        raise ShapeError(f"iadd expects equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    fa = _flat(a)
    _iadd_kernel[_grid(fa.shape[0])](fa, _flat(b))


def add_scalar(a, c):
    """a += c (a Python float)."""
    f = _flat(a)
    _add_scalar_kernel[_grid(f.shape[0])](f, _scalar(a, c))


def axpy(alpha, x, y):
    """y += alpha * x."""
    if tuple(x.shape) != tuple(y.shape):
        raise ShapeError(f"axpy expects equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    fy = _flat(y)
    _axpy_kernel[_grid(fy.shape[0])](_scalar(y, alpha), _flat(x), fy)
