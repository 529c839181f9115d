"""LMSCE: softmax cross-entropy plus a large-margin regulariser (Kobayashi 2019)."""

import keras
from keras import ops

from keras_margins import ops as km_ops
from keras_margins.losses.base import MarginLoss, per_sample_losses
from keras_margins.validation import validate_non_negative

__all__ = ["LMSCELoss", "lmsce_loss"]


def _lmsce_rule(batch, lam):
    """Cross-entropy plus ``lam/2 * (E_q[x] - mean_{j != y} x_j)`` from one pass."""
    if lam == 0.0:
        return batch.cross_entropy()
    # One exponential pass gives both terms. With q the softmax over the
    # non-targets and lse their log-sum-exp (log q_j = x_j - lse):
    #   CE = softplus(lse - x_y)
    #   sum_{j != y} (q_j - 1/(C-1)) log q_j
    #       = sum_{j != y} q_j x_j - lse - (sum_{j != y} x_j) / (C-1) + lse
    #       = E_q[x] - mean_{j != y} x_j          (sum_j q_j = 1)
    lse, expected = km_ops.non_target_softmax_statistics(batch.scores, batch.labels,
                                                         batch.mask)
    cross_entropy = ops.softplus(lse - batch.target)
    non_target_mean = ((ops.sum(batch.scores, axis=-1) - batch.target)
                       / (batch.num_classes - 1))
    return cross_entropy + (0.5 * lam) * (expected - non_target_mean)


def lmsce_loss(y_true, y_pred, lam=0.3):
    """Per-sample large-margin softmax cross-entropy (no reduction).

    ``l = CE(x, y) + lam * 0.5 * sum_{j != y} (q_j - 1/(C-1)) * log q_j``,
    ``q`` the softmax over the non-target logits.

    Args:
        y_true: sparse (B,), (B, 1) or one-hot (B, C) labels.
        y_pred: (B, C) logits.
        lam: weight of the regulariser, >= 0 (0.3); 0 is plain cross-entropy.

    Returns:
        (B,) float32 losses (float64 for float64 inputs).

    Reference: Kobayashi, "Large Margin In Softmax Cross-Entropy Loss",
    BMVC 2019.
    """
    return per_sample_losses(_lmsce_rule, y_true, y_pred,
                             lam=validate_non_negative(lam, "lam"))


@keras.saving.register_keras_serializable(package="keras_margins")
class LMSCELoss(MarginLoss):
    """Large-margin softmax cross-entropy over raw logits.

    ``l = CE(x, y) + lam * 0.5 * sum_{j != y} (q_j - 1/(C-1)) * log q_j`` where
    ``q`` is the softmax over the non-target logits only. The regulariser is
    the (scaled) KL divergence between ``q`` and the uniform distribution: it
    pushes the non-target logits towards equal values, which maximises the
    margin between the target and the hardest negative. Plain mean over the
    batch.

    Args:
        lam: weight of the regulariser (0.3), >= 0; 0 is plain cross-entropy.
        reduction, name, dtype: as in ``keras.losses.Loss`` (16-bit dtypes
            compute in float32).

    Example:
    ```python
    model.compile(optimizer="sgd", loss=km.losses.LMSCELoss(lam=0.3))
    ```

    Reference: Kobayashi, "Large Margin In Softmax Cross-Entropy Loss",
    BMVC 2019.
    """

    accepts_class_weights = False
    rule = staticmethod(_lmsce_rule)
    rule_parameters = ("lam",)
    config_parameters = ("lam",)

    def __init__(self, lam=0.3, reduction="sum_over_batch_size", name="lmsce_loss",
                 dtype=None):
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.lam = validate_non_negative(lam, "lam")
