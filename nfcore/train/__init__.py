"""Training: Adam, the fit loops (maximum likelihood and reverse KL), checkpoints."""

from .adam import Adam
from .checkpoint import load, load_checkpoint, save
from .fit import History, TrainingDiverged, bits_per_dim, evaluate_nll, fit, fit_reverse_kl

__all__ = [
    "Adam",
    "load",
    "load_checkpoint",
    "save",
    "History",
    "TrainingDiverged",
    "evaluate_nll",
    "bits_per_dim",
    "fit",
    "fit_reverse_kl",
]
