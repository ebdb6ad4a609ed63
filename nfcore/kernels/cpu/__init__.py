"""The CPU backend: Numba kernels and numpy BLAS behind nfcore's op API."""

import numpy as np

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
from .memory import pooled_empty
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

name = "cpu"


def empty(shape, dtype):
    return pooled_empty(shape, dtype)


def zeros(shape, dtype):
    a = pooled_empty(shape, dtype)
    a.fill(0)
    return a


def asarray(a, dtype=None):
    """A C-contiguous host array (no copy when it already is one)."""
    return np.ascontiguousarray(a, dtype=dtype)


def to_host(a):
    return np.asarray(a)


def fill(a, value):
    a[...] = value


def copy(a):
    return a.copy()


def reshape(a, shape):
    return a.reshape(shape)


def iadd(a, b):
    """a += b (same shape)."""
    a += b


def add_scalar(a, c):
    """a += c (a Python float)."""
    a += c


def axpy(alpha, x, y):
    """y += alpha * x."""
    y += alpha * x
