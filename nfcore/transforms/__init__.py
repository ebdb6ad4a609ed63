"""The wheels: invertible layers with log-dets and hand-written VJPs."""

from .actnorm import ActNorm
from .autoregressive import IAF, MAF
from .batchnorm import BatchNorm
from .cnf import CNF
from .coupling import AdditiveCoupling, AffineCoupling, Coupling, make_mask
from .elementwise import Scaling, Standardize
from .image_coupling import ImageAdditiveCoupling, ImageAffineCoupling, ImageCoupling, image_mask
from .invconv import InvConv1x1, InvConv1x1LU
from .iresnet import ConvResidualBlock, ResidualBlock
from .linear import AffineLU, whitening
from .permute import Permutation, make_permutation
from .preprocess import Dequantize, DequantizeColumns, Logit
from .split import Split
from .squeeze import Flatten, Squeeze

__all__ = [
    "BatchNorm",
    "MAF",
    "IAF",
    "AdditiveCoupling",
    "AffineCoupling",
    "Coupling",
    "make_mask",
    "Scaling",
    "Standardize",
    "Permutation",
    "make_permutation",
    "ActNorm",
    "InvConv1x1",
    "InvConv1x1LU",
    "ImageCoupling",
    "ImageAffineCoupling",
    "ImageAdditiveCoupling",
    "image_mask",
    "Squeeze",
    "Flatten",
    "Split",
    "Dequantize",
    "DequantizeColumns",
    "AffineLU",
    "whitening",
    "Logit",
    "ResidualBlock",
    "ConvResidualBlock",
    "CNF",
]
