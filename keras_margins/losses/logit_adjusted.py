"""Logit-adjusted cross-entropy (Menon et al. 2021); balanced softmax at tau = 1."""

import keras
from keras import ops

from keras_margins import ops as km_ops
from keras_margins.losses.base import MarginLoss
from keras_margins.priors import log_priors, validate_non_negative

__all__ = ["LogitAdjustedLoss"]


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

    def __init__(self, class_counts, tau=1.0, reduction="sum_over_batch_size",
                 name="logit_adjusted_loss", dtype=None):
        super().__init__(class_counts=class_counts, reduction=reduction, name=name,
                         dtype=dtype)
        self.tau = validate_non_negative(tau, "tau")
        self.offsets = log_priors(self._class_counts, self.tau)

    def per_sample(self, labels, scores):
        adjusted = scores + self.constant(self.offsets, ops.dtype(scores))[None, :]
        return km_ops.margin_softmax_cross_entropy(labels, adjusted)

    def get_config(self):
        config = super().get_config()
        config.update(class_counts=self._class_counts.tolist(), tau=self.tau)
        return config
