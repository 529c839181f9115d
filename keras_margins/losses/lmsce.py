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
        cross_entropy = km_ops.margin_softmax_cross_entropy(labels, scores, mask=mask)
        if self.lam == 0.0:
            return cross_entropy
        # log-sum-exp over the non-target logits (target excluded, zero target score).
        zero = ops.zeros_like(scores[:, 0])
        non_target_lse = km_ops.margin_softmax_cross_entropy(
            labels, scores, target_scores=zero, exclude_target=True, mask=mask)
        # log q_j, finite everywhere; the target column is masked out below with
        # `where`, so it never feeds a NaN into the gradient.
        log_q = scores - ops.expand_dims(non_target_lse, -1)
        # zeros_like, not 0.0: keras-torch returns float32 for minimum(float64, 0.0).
        q = ops.exp(ops.minimum(log_q, ops.zeros_like(log_q)))
        terms = (q - 1.0 / (num_classes - 1)) * log_q
        regulariser = ops.sum(ops.where(mask, ops.zeros_like(terms), terms), axis=-1)
        return cross_entropy + (0.5 * self.lam) * regulariser

    def get_config(self):
        config = super().get_config()
        config.update(lam=self.lam)
        return config
