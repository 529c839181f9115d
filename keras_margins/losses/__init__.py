"""Keras losses for margin-based learning on imbalanced data."""

from keras_margins.losses.base import MarginLoss
from keras_margins.losses.ldam import ELMLoss, LDAMLoss

__all__ = ["MarginLoss", "LDAMLoss", "ELMLoss"]
