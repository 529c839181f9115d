"""Focal loss in the form of the LDAM-DRW code (Lin et al. 2017 on sparse labels).

``ce = w_y * CE(x, y)``, ``p = exp(-ce)``, ``l = (1 - p)^gamma * ce``, plain
mean over the batch. The class weight sits *inside* the focal term (so the
modulation sees the weighted cross-entropy), as in the code that produced the
LDAM paper's "Focal" and "Focal + DRW" rows.
"""

import keras
from keras import ops

from keras_margins.losses.base import MarginLoss, per_sample_losses
from keras_margins.validation import validate_non_negative

__all__ = ["FocalLoss", "focal_loss", "focal_modulation"]


def focal_modulation(cross_entropy, gamma):
    """``(1 - exp(-ce))^gamma`` computed with ``expm1`` (exact for small ce)."""
    if gamma == 0.0:
        return ops.ones_like(cross_entropy)
    one_minus_p = -ops.expm1(-cross_entropy)
    if gamma == 1.0:
        return one_minus_p
    return ops.power(ops.maximum(one_minus_p, 0.0), gamma)


def _focal_rule(batch, gamma):
    """Cross-entropy ``ce`` times the modulation of the weighted ``w_y * ce``.

    The class weight itself multiplies afterwards (the reduction, or the
    functional form): ``w_y * ce * (1 - exp(-w_y * ce))^gamma``.
    """
    cross_entropy = batch.cross_entropy()
    weights = batch.class_weight
    weighted = cross_entropy if weights is None else weights * cross_entropy
    return focal_modulation(weighted, gamma) * cross_entropy


def focal_loss(y_true, y_pred, gamma=1.0, *, class_weights=None):
    """Per-sample focal loss on logits, LDAM-DRW code's form (no reduction).

    ``ce = w_y * CE(x, y)``, ``p = exp(-ce)``, ``l = (1 - p)^gamma * ce``
    (``w = 1`` without ``class_weights``); ``gamma = 0`` is the (weighted)
    cross-entropy.

    Args:
        y_true: sparse (B,), (B, 1) or one-hot (B, C) labels.
        y_pred: (B, C) logits.
        gamma: focusing parameter, >= 0 (1.0).
        class_weights: optional per-class weights ``w_j`` (inside the focal term).

    Returns:
        (B,) float32 losses (float64 for float64 inputs).

    Reference: Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017,
    Eq. 4 (softmax form as in Cao et al. 2019's code).
    """
    return per_sample_losses(_focal_rule, y_true, y_pred, class_weights=class_weights,
                             gamma=validate_non_negative(gamma, "gamma"))


@keras.saving.register_keras_serializable(package="keras_margins")
class FocalLoss(MarginLoss):
    """Focal loss on logits with sparse labels, LDAM-DRW code's form.

    ``ce = w_y * CE(x, y)``, ``p = exp(-ce)``, ``l = (1 - p)^gamma * ce``;
    the default batch loss is the plain mean ``sum_i l_i / B``. The class
    weight acts inside the focal term: as every loss here, ``w_y`` reaches
    Keras as a sample weight (``l = w_y * [CE * (1 - p)^gamma]``), and the
    modulation ``p`` is taken of the weighted ``ce``. ``gamma = 0`` with no
    weights is the cross-entropy. ``focal_loss`` is the functional form.

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

    rule = staticmethod(_focal_rule)
    rule_parameters = ("gamma",)
    config_parameters = ("gamma",)

    def __init__(self, gamma=1.0, class_weights=None, reduction="sum_over_batch_size",
                 name="focal_loss", dtype=None):
        super().__init__(class_weights=class_weights, reduction=reduction, name=name,
                         dtype=dtype)
        self.gamma = validate_non_negative(gamma, "gamma")
