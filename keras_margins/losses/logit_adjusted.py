"""Logit-adjusted cross-entropy (Menon et al. 2021); balanced softmax at tau = 1."""

import keras

from keras_margins.losses.base import MarginLoss, per_sample_losses
from keras_margins.priors import log_priors
from keras_margins.validation import validate_non_negative

__all__ = ["LogitAdjustedLoss", "logit_adjusted_loss"]


def _logit_adjusted_rule(batch):
    """Hook: scores ``x_j + log(pi_j^tau + 1e-12)``, then plain cross-entropy."""
    return batch.cross_entropy(scores=batch.scores + batch.vector("offsets")[None, :])


def logit_adjusted_loss(y_true, y_pred, class_counts, tau=1.0):
    """Per-sample logit-adjusted cross-entropy (no reduction).

    ``l = logsumexp_j(x_j + o_j) - (x_y + o_y)`` with ``o_j = log(pi_j^tau + 1e-12)``,
    ``pi_j = n_j / sum_k n_k``; ``tau = 1`` is the balanced softmax.

    Args:
        y_true: sparse (B,), (B, 1) or one-hot (B, C) labels.
        y_pred: (B, C) logits.
        class_counts: per-class training counts (any order).
        tau: temperature of the prior, >= 0 (1.0).

    Returns:
        (B,) float32 losses (float64 for float64 inputs).

    Reference: Menon et al., "Long-Tail Learning via Logit Adjustment",
    ICLR 2021, Eq. 10.
    """
    offsets = log_priors(class_counts, validate_non_negative(tau, "tau"))
    return per_sample_losses(_logit_adjusted_rule, y_true, y_pred,
                             per_class={"offsets": offsets})


@keras.saving.register_keras_serializable(package="keras_margins")
class LogitAdjustedLoss(MarginLoss):
    """Cross-entropy over logits shifted by the scaled log-priors.

    ``l = CE(x + log(pi^tau + 1e-12), y)`` with ``pi_j = n_j / sum_k n_k``;
    plain mean over the batch. ``tau = 1`` is the balanced softmax;
    ``tau = 0`` is the cross-entropy. Predict with the raw logits ``x``.

    Args:
        class_counts: per-class training counts (any order).
        tau: temperature of the prior, >= 0 (1.0).
        reduction, name, dtype: see ``MarginLoss``.

    Example:
    ```python
    model.compile(optimizer="sgd", loss=km.losses.LogitAdjustedLoss(counts, tau=1.0))
    ```

    Reference: Menon et al., "Long-Tail Learning via Logit Adjustment",
    ICLR 2021, Eq. 10.
    """

    accepts_class_weights = False
    rule = staticmethod(_logit_adjusted_rule)
    config_parameters = ("class_counts", "tau")

    def __init__(self, class_counts, tau=1.0, reduction="sum_over_batch_size",
                 name="logit_adjusted_loss", dtype=None):
        super().__init__(class_counts=class_counts, reduction=reduction, name=name,
                         dtype=dtype)
        self.tau = validate_non_negative(tau, "tau")
        self.offsets = log_priors(self._class_counts, self.tau)

    def rule_arguments(self):
        return {"offsets": self.offsets}, {}
