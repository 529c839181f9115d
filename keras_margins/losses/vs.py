"""Vector-scaling (VS) loss (Kini et al. 2021): multiplicative and additive logit adjustment."""

import keras
import numpy as np

from keras_margins.losses.base import MarginLoss, per_sample_losses
from keras_margins.priors import log_priors
from keras_margins.validation import validate_class_counts, validate_non_negative

__all__ = ["VSLoss", "vs_loss", "vs_scales"]


def vs_scales(class_counts, gamma=0.2):
    """Multiplicative VS adjustments ``Delta_j = (n_j / n_max)^gamma`` (1 for the head)."""
    counts = validate_class_counts(class_counts)
    gamma = validate_non_negative(gamma, "gamma")
    return (counts / np.max(counts)) ** gamma


def _vs_rule(batch):
    """Hook: scores ``Delta_j x_j + iota_j``, then plain cross-entropy."""
    scores = batch.scores * batch.vector("scales")[None, :] + batch.vector("offsets")[None, :]
    return batch.cross_entropy(scores=scores)


def _vs_vectors(class_counts, gamma, tau):
    return {"scales": vs_scales(class_counts, gamma),
            "offsets": log_priors(class_counts, validate_non_negative(tau, "tau"))}


def vs_loss(y_true, y_pred, class_counts, gamma=0.2, tau=1.2, class_weights=None):
    """Per-sample vector-scaling loss (no reduction).

    ``l = CE(z, y)`` with ``z_j = Delta_j x_j + iota_j``, ``Delta_j = (n_j / n_max)^gamma``
    and ``iota_j = log(pi_j^tau + 1e-12)`` (``= tau log pi_j``), ``pi_j = n_j / sum_k n_k``.

    Args:
        y_true: sparse (B,), (B, 1) or one-hot (B, C) labels.
        y_pred: (B, C) logits.
        class_counts: per-class training counts (any order).
        gamma: exponent of the multiplicative adjustment, >= 0 (0.2).
        tau: temperature of the additive (logit-adjustment) term, >= 0 (1.2).
        class_weights: optional per-class weights ``w_j``; the values are ``w_y l``.

    Returns:
        (B,) float32 losses (float64 for float64 inputs).

    Reference: Kini et al., "Label-Imbalanced and Group-Sensitive Classification
    under Overparameterization", NeurIPS 2021 (the VS-loss
    definition, logits ``Delta_y z_y + iota_y``).
    """
    return per_sample_losses(_vs_rule, y_true, y_pred, class_weights=class_weights,
                             per_class=_vs_vectors(class_counts, gamma, tau))


@keras.saving.register_keras_serializable(package="keras_margins")
class VSLoss(MarginLoss):
    """Cross-entropy over per-class scaled and shifted logits (vector scaling).

    ``l = CE(z, y)``, ``z_j = Delta_j x_j + iota_j`` with the multiplicative
    ``Delta_j = (n_j / n_max)^gamma`` (1 for the most frequent class, smaller
    for the tail) and the additive ``iota_j = tau log pi_j`` (computed as
    ``log(pi_j^tau + 1e-12)``, as ``LogitAdjustedLoss``), ``pi_j = n_j / sum_k n_k``.
    ``gamma = 0`` is ``LogitAdjustedLoss(tau)``; ``gamma = tau = 0`` is the
    cross-entropy; ``tau = 0`` is CDT (Ye et al. 2020). Predict with the raw
    logits ``x``. With ``class_weights`` (e.g. switched on by
    ``DeferredReweighting``) the batch loss is the weighted mean, as
    ``F.cross_entropy(weight=...)`` in the authors' code.

    Args:
        class_counts: per-class training counts (any order).
        gamma: exponent of the multiplicative adjustment, >= 0. Default 0.2, the
            authors' CIFAR-10-LT (ratio 100) command (``--gamma 0.2 --tau 1.2``).
        tau: temperature of the additive adjustment, >= 0 (1.2, same source).
        class_weights: optional per-class weights ``w_j`` (DRW).
        reduction, name, dtype: see ``MarginLoss``.

    Example:
    ```python
    model.compile(optimizer="sgd", loss=km.losses.VSLoss(counts, gamma=0.2, tau=1.2))
    ```

    Reference: Kini et al., "Label-Imbalanced and Group-Sensitive Classification
    under Overparameterization", NeurIPS 2021 (the VS-loss
    definition, logits ``Delta_y z_y + iota_y``).
    """

    rule = staticmethod(_vs_rule)
    config_parameters = ("class_counts", "gamma", "tau")

    def __init__(self, class_counts, gamma=0.2, tau=1.2, class_weights=None,
                 reduction="mean_with_sample_weight", name="vs_loss", dtype=None):
        super().__init__(class_counts=class_counts, class_weights=class_weights,
                         reduction=reduction, name=name, dtype=dtype)
        self.gamma = validate_non_negative(gamma, "gamma")
        self.tau = validate_non_negative(tau, "tau")
        vectors = _vs_vectors(self._class_counts, self.gamma, self.tau)
        self.scales, self.offsets = vectors["scales"], vectors["offsets"]

    def rule_arguments(self):
        return {"scales": self.scales, "offsets": self.offsets}, {}
