"""Focal loss in the form of the LDAM-DRW code (Lin et al. 2017 on sparse labels).

``ce = w_y * CE(x, y)``, ``p = exp(-ce)``, ``l = (1 - p)^gamma * ce``, plain
mean over the batch. The class weight sits *inside* the focal term (so the
modulation sees the weighted cross-entropy), as in the code that produced the
LDAM paper's "Focal" and "Focal + DRW" rows.
"""

import keras
from keras import ops

from keras_margins import ops as km_ops
from keras_margins.losses.base import MarginLoss
from keras_margins.priors import validate_non_negative

__all__ = ["FocalLoss", "focal_modulation"]


def focal_modulation(cross_entropy, gamma):
    """``(1 - exp(-ce))^gamma`` computed with ``expm1`` (exact for small ce)."""
    if gamma == 0.0:
        return ops.ones_like(cross_entropy)
    one_minus_p = -ops.expm1(-cross_entropy)
    if gamma == 1.0:
        return one_minus_p
    return ops.power(ops.maximum(one_minus_p, 0.0), gamma)


@keras.saving.register_keras_serializable(package="keras_margins")
class FocalLoss(MarginLoss):
    """Focal loss on logits with sparse labels, LDAM-DRW code's form.

    ``ce = w_y * CE(x, y)``, ``p = exp(-ce)``, ``l = (1 - p)^gamma * ce``;
    the batch loss is the plain mean ``sum_i l_i / B`` (also with class
    weights: they act inside the focal term, not as a weighted mean).
    ``gamma = 0`` with no weights is the cross-entropy.

    The class weights can be switched by
    ``keras_margins.callbacks.DeferredReweighting`` ("Focal + DRW").

    Args:
        gamma: focusing parameter, >= 0 (1.0 in the LDAM scripts).
        class_weights: optional per-class weights ``w_j``.
        reduction: Keras reduction, default the plain mean.
        name, dtype: see ``MarginLoss``.

    Example:
    ```python
    model.compile(optimizer="sgd", loss=km.losses.FocalLoss(gamma=1.0))
    ```

    Reference: Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017,
    Eq. 4 (softmax form as in Cao et al. 2019's code).
    """

    # Class weights act inside the focal term (per_sample), not in the reduction.
    class_weights_in_reduction = False

    def __init__(self, gamma=1.0, class_weights=None, reduction="sum_over_batch_size",
                 name="focal_loss", dtype=None):
        super().__init__(class_weights=class_weights, reduction=reduction, name=name,
                         dtype=dtype)
        self.gamma = validate_non_negative(gamma, "gamma")

    def per_sample(self, labels, scores):
        ce = km_ops.margin_softmax_cross_entropy(labels, scores)
        if self._class_weights is not None:
            weights = self.constant(self._class_weights, ops.dtype(scores))
            ce = ce * ops.take(weights, ops.clip(labels, 0, scores.shape[-1] - 1))
        return focal_modulation(ce, self.gamma) * ce

    def get_config(self):
        config = super().get_config()
        config.update(gamma=self.gamma)
        return config
