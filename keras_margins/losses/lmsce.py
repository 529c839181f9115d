"""LMSCE: softmax cross-entropy plus a large-margin regulariser (Kobayashi 2019)."""

import keras
from keras import ops

from keras_margins import ops as km_ops
from keras_margins.losses.base import MarginLoss
from keras_margins.priors import validate_non_negative

__all__ = ["LMSCELoss"]


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

    def __init__(self, lam=0.3, reduction="sum_over_batch_size", name="lmsce_loss",
                 dtype=None):
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.lam = validate_non_negative(lam, "lam")

    def per_sample(self, labels, scores):
        num_classes = scores.shape[-1]
        mask = km_ops.target_mask(labels, num_classes)
        if self.lam == 0.0:
            return km_ops.margin_softmax_cross_entropy(labels, scores, mask=mask)
        # One exponential pass gives both terms. With q the softmax over the
        # non-targets and lse their log-sum-exp (log q_j = x_j - lse):
        #   CE = softplus(lse - x_y)
        #   sum_{j != y} (q_j - 1/(C-1)) log q_j
        #       = sum_{j != y} q_j x_j - lse - (sum_{j != y} x_j) / (C-1) + lse
        #       = E_q[x] - mean_{j != y} x_j          (sum_j q_j = 1)
        lse, expected = km_ops.non_target_softmax_statistics(scores, labels, mask)
        target = km_ops.gather_target(scores, labels)
        cross_entropy = ops.softplus(lse - target)
        non_target_mean = (ops.sum(scores, axis=-1) - target) / (num_classes - 1)
        return cross_entropy + (0.5 * self.lam) * (expected - non_target_mean)

    def get_config(self):
        config = super().get_config()
        config.update(lam=self.lam)
        return config
