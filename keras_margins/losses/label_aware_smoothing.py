"""Label-aware smoothing (Zhong et al. 2021, MiSLAS): per-class label smoothing."""

import math

import keras
import numpy as np
from keras import ops

from keras_margins.losses.base import MarginLoss, per_sample_losses
from keras_margins.validation import validate_class_counts, validate_non_negative

__all__ = ["LabelAwareSmoothingLoss", "label_aware_smoothing_loss", "label_aware_smoothing"]

SHAPES = ("concave", "linear", "convex")


def label_aware_smoothing(class_counts, eps_max=0.3, eps_min=0.0, shape="concave"):
    """Per-class smoothing ``eps_j = eps_min + (eps_max - eps_min) f(r_j)``.

    ``r_j = (n_j - n_min) / (n_max - n_min)`` and ``f(r) = sin(pi r / 2)``
    ("concave"), ``r`` ("linear") or ``1 - cos(pi r / 2)`` ("convex"): the most
    frequent class gets ``eps_max``, the rarest ``eps_min``. With all counts
    equal every class gets ``eps_max``.
    """
    counts = validate_class_counts(class_counts)
    eps_max = validate_non_negative(eps_max, "eps_max", upper=1.0)
    eps_min = validate_non_negative(eps_min, "eps_min", upper=1.0)
    if eps_min > eps_max:
        raise ValueError(f"`eps_min` ({eps_min:g}) must be <= `eps_max` ({eps_max:g}).")
    if shape not in SHAPES:
        raise ValueError(f"`shape` must be one of {SHAPES}, received {shape!r}.")
    spread = np.max(counts) - np.min(counts)
    r = (counts - np.min(counts)) / spread if spread > 0 else np.ones_like(counts)
    f = {"concave": lambda: np.sin(0.5 * math.pi * r), "linear": lambda: r,
         "convex": lambda: 1.0 - np.cos(0.5 * math.pi * r)}[shape]()
    return eps_min + (eps_max - eps_min) * f


def _label_aware_smoothing_rule(batch):
    """Hook: ``CE + eps_y (x_y - mean_j x_j)``, the CE against the smoothed target."""
    # sum / C, not ops.mean: Keras' JAX mean is only float32-accurate on float64.
    mean = ops.sum(batch.scores, axis=-1) / batch.num_classes
    return batch.cross_entropy() + batch.lookup("smoothing") * (batch.target - mean)


def label_aware_smoothing_loss(y_true, y_pred, class_counts, eps_max=0.3, eps_min=0.0,
                               shape="concave", class_weights=None):
    """Per-sample label-aware smoothing cross-entropy (no reduction).

    ``l = -sum_j q_j log softmax(x)_j`` with ``q = (1 - eps_y) e_y + eps_y / C``
    (uniform over all C classes), i.e. ``l = CE(x, y) + eps_y (x_y - mean_j x_j)``;
    ``eps_y`` from ``label_aware_smoothing(class_counts, eps_max, eps_min, shape)``.

    Args:
        y_true: sparse (B,), (B, 1) or one-hot (B, C) labels.
        y_pred: (B, C) logits.
        class_counts: per-class training counts (any order).
        eps_max: smoothing of the most frequent class, in [0, 1] (0.3).
        eps_min: smoothing of the rarest class, in [0, eps_max] (0.0).
        shape: "concave" (sin), "linear" or "convex" (1 - cos) ("concave").
        class_weights: optional per-class weights ``w_j``; the values are ``w_y l``.

    Returns:
        (B,) float32 losses (float64 for float64 inputs).

    Reference: Zhong et al., "Improving Calibration for Long-Tailed Recognition",
    CVPR 2021 (label-aware smoothing and its eps_y functions).
    """
    smoothing = label_aware_smoothing(class_counts, eps_max, eps_min, shape)
    return per_sample_losses(_label_aware_smoothing_rule, y_true, y_pred,
                             per_class={"smoothing": smoothing}, class_weights=class_weights)


@keras.saving.register_keras_serializable(package="keras_margins")
class LabelAwareSmoothingLoss(MarginLoss):
    """Cross-entropy against labels smoothed more for head classes than for tail ones.

    ``l = -sum_j q_j log softmax(x)_j``, ``q = (1 - eps_y) e_y + eps_y / C``
    (equivalently ``CE(x, y) + eps_y (x_y - mean_j x_j)``), with
    ``eps_y = eps_min + (eps_max - eps_min) f((n_y - n_min) / (n_max - n_min))``
    and ``f(r) = sin(pi r / 2)`` (concave), ``r`` (linear) or
    ``1 - cos(pi r / 2)`` (convex). The smoothing mass ``eps_y / C`` goes to
    every class, the label included, as in the authors' code. ``eps_max =
    eps_min = 0`` is the cross-entropy; ``eps_max = eps_min = e`` is plain label
    smoothing ``e``.

    Args:
        class_counts: per-class training counts (any order).
        eps_max: smoothing of the most frequent class, in [0, 1]. Default 0.3
            (the authors' CIFAR-10-LT, ratio 100, configuration: ``smooth_head``).
        eps_min: smoothing of the rarest class, in [0, eps_max] (0.0, same
            source: ``smooth_tail``).
        shape: "concave" (the paper's choice), "linear" or "convex".
        class_weights: optional per-class weights ``w_j`` (DRW).
        reduction, name, dtype: see ``MarginLoss``.

    Example:
    ```python
    loss = km.losses.LabelAwareSmoothingLoss(counts, eps_max=0.3, eps_min=0.0)
    model.compile(optimizer="sgd", loss=loss)
    ```

    Reference: Zhong et al., "Improving Calibration for Long-Tailed Recognition",
    CVPR 2021 (label-aware smoothing and its eps_y functions).
    """

    rule = staticmethod(_label_aware_smoothing_rule)
    config_parameters = ("class_counts", "eps_max", "eps_min", "shape")

    def __init__(self, class_counts, eps_max=0.3, eps_min=0.0, shape="concave",
                 class_weights=None, reduction="mean_with_sample_weight",
                 name="label_aware_smoothing_loss", dtype=None):
        super().__init__(class_counts=class_counts, class_weights=class_weights,
                         reduction=reduction, name=name, dtype=dtype)
        self.smoothing = label_aware_smoothing(self._class_counts, eps_max, eps_min, shape)
        self.eps_max, self.eps_min, self.shape = float(eps_max), float(eps_min), shape

    def rule_arguments(self):
        return {"smoothing": self.smoothing}, {}
