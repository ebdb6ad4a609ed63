"""Training: Adam, the fit loops (maximum likelihood and reverse KL), checkpoints."""

from .adam import Adam

__all__ = ["Adam"]
