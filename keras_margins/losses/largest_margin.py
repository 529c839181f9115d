"""Losses of "Learning Towards the Largest Margins" (Zhou et al., ICLR 2022).

LM-Softmax and GM-Softmax over cosine-classifier outputs, and the
sample-margin regulariser ``R_sm``, alone or added to a base loss.
"""

import keras
from keras import ops

from keras_margins.losses.base import Batch, MarginLoss, per_sample_losses
from keras_margins.validation import (validate_finite, validate_non_negative,
                                      validate_positive)

__all__ = ["LMSoftmaxLoss", "GMSoftmaxLoss", "SampleMarginLoss", "lm_softmax_loss",
           "gm_softmax_loss", "sample_margin_loss"]


def _lm_softmax_rule(batch, scale):
    """Hooks: target out of the denominator, row scale ``s``; divided by ``s``."""
    return batch.cross_entropy(scale=scale, exclude_target=True) / scale


def _validate_gm(alpha1, alpha2, beta1, beta2):
    alpha1 = validate_finite(alpha1, "alpha1")
    if alpha1 < 0.5:
        raise ValueError(f"`alpha1` must be >= 0.5, received {alpha1!r}.")
    checked_alpha2 = validate_finite(alpha2, "alpha2")
    if checked_alpha2 > alpha1:
        raise ValueError(f"`alpha2` must be <= alpha1 ({alpha1:g}), received {alpha2!r}.")
    beta1, beta2 = validate_finite(beta1, "beta1"), validate_finite(beta2, "beta2")
    return alpha1, checked_alpha2, beta1, beta2


def _gm_softmax_rule(batch, alpha1, alpha2, beta1, beta2, scale):
    """Hooks: scores ``s c``, target ``a2 s c_y + b2`` in the denominator, then
    the numerator's ``a1 s c_y + b1`` swapped in."""
    scaled = scale * batch.scores
    target = batch.gather(scaled)
    denominator_target = alpha2 * target + beta2
    numerator_target = alpha1 * target + beta1
    # logsumexp(denominator) - denominator_target, then swap in the numerator.
    losses = batch.cross_entropy(target=denominator_target, scores=scaled,
                                 gathered_target=target)
    return losses + denominator_target - numerator_target


def _sample_margin_rule(batch, cross_entropy_weight=None):
    """``R_sm = max_{j != y} c_j - c_y``; or ``CE + weight * R_sm`` from one max."""
    other, _ = batch.non_target_max(stop_gradient=False, indices=False)
    regulariser = other - batch.target
    if cross_entropy_weight is None:
        return regulariser
    return batch.cross_entropy() + cross_entropy_weight * regulariser


def lm_softmax_loss(y_true, y_pred, scale, *, class_weights=None):
    """Per-sample largest-margin softmax loss (no reduction).

    ``l = (1/s) * logsumexp_{j != y}(s * (c_j - c_y))`` (the target dropped from
    the denominator), times ``w_y`` when ``class_weights`` are given.

    Args:
        y_true: sparse (B,), (B, 1) or one-hot (B, C) labels.
        y_pred: (B, C) cosines.
        scale: ``s`` > 0.
        class_weights: optional per-class weights ``w_j``.

    Returns:
        (B,) float32 losses (float64 for float64 inputs).

    Reference: Zhou et al., "Learning Towards the Largest Margins", ICLR 2022
    (LM-Softmax).
    """
    return per_sample_losses(_lm_softmax_rule, y_true, y_pred, class_weights=class_weights,
                             scale=validate_positive(scale, "scale"))


def gm_softmax_loss(y_true, y_pred, alpha1, alpha2, beta1, beta2, scale):
    """Per-sample generalised margin softmax loss (no reduction).

    ``l = -log( exp(s*a1*c_y + b1) / (exp(s*a2*c_y + b2) + sum_{j != y} exp(s*c_j)) )``.

    Args:
        y_true: sparse (B,), (B, 1) or one-hot (B, C) labels.
        y_pred: (B, C) cosines.
        alpha1, alpha2: the target's multipliers in the numerator and the
            denominator (``alpha1 >= 0.5``, ``alpha2 <= alpha1``).
        beta1, beta2: the target's offsets in the numerator and the denominator.
        scale: ``s`` > 0.

    Returns:
        (B,) float32 losses (float64 for float64 inputs).

    Reference: Zhou et al., "Learning Towards the Largest Margins", ICLR 2022
    (generalised margin softmax).
    """
    alpha1, alpha2, beta1, beta2 = _validate_gm(alpha1, alpha2, beta1, beta2)
    return per_sample_losses(_gm_softmax_rule, y_true, y_pred, alpha1=alpha1,
                             alpha2=alpha2, beta1=beta1, beta2=beta2,
                             scale=validate_positive(scale, "scale"))


def sample_margin_loss(y_true, y_pred):
    """Per-sample sample-margin regulariser ``R_sm = -(c_y - max_{j != y} c_j)``.

    Args:
        y_true: sparse (B,), (B, 1) or one-hot (B, C) labels.
        y_pred: (B, C) cosines or logits.

    Returns:
        (B,) float32 values (float64 for float64 inputs).

    Reference: Zhou et al., "Learning Towards the Largest Margins", ICLR 2022
    (sample-margin regulariser).
    """
    return per_sample_losses(_sample_margin_rule, y_true, y_pred)


@keras.saving.register_keras_serializable(package="keras_margins")
class LMSoftmaxLoss(MarginLoss):
    """Largest-margin softmax: the target is dropped from the denominator.

    ``l = (1/s) * logsumexp_{j != y}(s * (c_j - c_y))``, computed with a stable
    log-sum-exp (finite at ``s = 64`` in float32, where the naive
    ``log(sum(exp(.)))`` overflows). The loss is negative once the target
    beats every other class by a margin; it is unbounded below only as the
    cosines separate, which the cosine classifier bounds.

    Args:
        scale: ``s`` > 0 (the reference values use 5; larger is closer to the
            max-margin objective ``max_{j != y} c_j - c_y``).
        class_weights: optional per-class weights, applied as sample weights
            (``reduction="mean_with_sample_weight"`` gives ``sum w_y l / sum w_y``).
        reduction, name, dtype: as in ``keras.losses.Loss``.

    Example:
    ```python
    outputs = km.layers.CosineDense(10, kernel_regularizer=km.regularizers.ZeroCentroid(1.0))(h)
    model.compile(optimizer="sgd", loss=km.losses.LMSoftmaxLoss(scale=5.0))
    ```

    Reference: Zhou et al., "Learning Towards the Largest Margins", ICLR 2022
    (LM-Softmax).
    """

    rule = staticmethod(_lm_softmax_rule)
    rule_parameters = ("scale",)
    config_parameters = ("scale",)

    def __init__(self, scale, class_weights=None, reduction="sum_over_batch_size",
                 name="lm_softmax_loss", dtype=None):
        super().__init__(class_weights=class_weights, reduction=reduction, name=name,
                         dtype=dtype)
        self.scale = validate_positive(scale, "scale")


@keras.saving.register_keras_serializable(package="keras_margins")
class GMSoftmaxLoss(MarginLoss):
    """Generalised margin softmax.

    ``l = -log( exp(s*a1*c_y + b1) / (exp(s*a2*c_y + b2) + sum_{j != y} exp(s*c_j)) )``
    with ``a1 >= 1/2`` and ``a2 <= a1``. ``(a1, a2, b1, b2) = (1, 1, 0, 0)`` is
    NormFace; ``b1 < b2`` adds an additive margin.

    Args:
        alpha1, alpha2: the target's multipliers in the numerator and the
            denominator (``alpha1 >= 0.5``, ``alpha2 <= alpha1``).
        beta1, beta2: the target's offsets in the numerator and the denominator.
        scale: ``s`` > 0.
        reduction, name, dtype: as in ``keras.losses.Loss``.

    Example:
    ```python
    model.compile(loss=km.losses.GMSoftmaxLoss(1.0, 1.0, 0.0, 0.0, scale=16.0))
    ```

    Reference: Zhou et al., "Learning Towards the Largest Margins", ICLR 2022
    (generalised margin softmax).
    """

    accepts_class_weights = False

    rule = staticmethod(_gm_softmax_rule)
    rule_parameters = ("alpha1", "alpha2", "beta1", "beta2", "scale")
    config_parameters = ("alpha1", "alpha2", "beta1", "beta2", "scale")

    def __init__(self, alpha1, alpha2, beta1, beta2, scale,
                 reduction="sum_over_batch_size", name="gm_softmax_loss", dtype=None):
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.alpha1, self.alpha2, self.beta1, self.beta2 = _validate_gm(
            alpha1, alpha2, beta1, beta2)
        self.scale = validate_positive(scale, "scale")


@keras.saving.register_keras_serializable(package="keras_margins")
class SampleMarginLoss(MarginLoss):
    """The sample-margin regulariser ``R_sm``, alone or added to a base loss.

    ``R_sm = -(c_y - max_{j != y} c_j)`` per sample (the target excluded from
    the max). Alone, the loss is the mean ``R_sm``. With ``base_loss`` the
    loss is ``base_loss(y_true, y_pred, sample_weight) + weight * mean(R_sm)``:
    the base loss keeps its own reduction and class weights (a DRW callback
    finds it through the ``base_loss`` attribute), while ``R_sm`` is averaged
    with this loss's reduction and the given sample weights.

    Args:
        base_loss: ``None`` or a ``keras.losses.Loss`` (e.g. ``NormFaceLoss``,
            ``LDAMLoss``), or its serialized config.
        weight: multiplier of ``R_sm`` (0.5 in the paper's "CE + 0.5 R_sm"), >= 0.
        reduction, name, dtype: as in ``keras.losses.Loss``.

    Speed: with ``keras.losses.SparseCategoricalCrossentropy(from_logits=True)``
    as the base (same reduction, no ``ignore_class``), the sum is computed in
    one pass: the non-target max that ``R_sm`` needs also shifts the
    cross-entropy's log-sum-exp (same value; on JAX/XLA about 1.1-1.3x the
    time of cross-entropy instead of 1.4-3x for two separate losses).

    Example:
    ```python
    loss = km.losses.SampleMarginLoss(km.losses.NormFaceLoss(scale=16.0), weight=0.5)
    model.compile(optimizer="sgd", loss=loss)
    ```

    Reference: Zhou et al., "Learning Towards the Largest Margins", ICLR 2022
    (sample-margin regulariser).
    """

    accepts_class_weights = False

    rule = staticmethod(_sample_margin_rule)

    def __init__(self, base_loss=None, weight=1.0, reduction="sum_over_batch_size",
                 name="sample_margin_loss", dtype=None):
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        if isinstance(base_loss, dict):
            base_loss = keras.losses.deserialize(base_loss)
        if base_loss is not None and not isinstance(base_loss, keras.losses.Loss):
            raise ValueError(
                "`base_loss` must be None or a keras.losses.Loss instance (e.g. "
                "keras.losses.SparseCategoricalCrossentropy(from_logits=True)), "
                f"received {base_loss!r}.")
        self.base_loss = base_loss
        self.weight = validate_non_negative(weight, "weight")

    @staticmethod
    def sample_margin_regularizer(labels, scores):
        """``R_sm = -(c_y - max_{j != y} c_j)``, shape (batch,)."""
        return _sample_margin_rule(Batch(scores, labels))

    def _fuses_cross_entropy(self):
        """True when the base is plain sparse softmax CE on logits with our reduction."""
        if type(self.base_loss) is not keras.losses.SparseCategoricalCrossentropy:
            return False
        config = self.base_loss.get_config()
        return (config.get("from_logits") is True and config.get("ignore_class") is None
                and self.base_loss.reduction == self.reduction)

    def rule_arguments(self):
        # Fused: CE + weight * R_sm from one non-target max (R_sm's value and CE's shift).
        return {}, {"cross_entropy_weight": self.weight if self._fuses_cross_entropy()
                    else None}

    def __call__(self, y_true, y_pred, sample_weight=None):
        if self._fuses_cross_entropy():  # the rule gives CE + weight * R_sm
            return super().__call__(y_true, y_pred, sample_weight=sample_weight)
        regulariser = super().__call__(y_true, y_pred, sample_weight=sample_weight)
        if self.weight != 1.0:
            regulariser = self.weight * regulariser
        if self.base_loss is None:
            return regulariser
        base = self.base_loss(y_true, y_pred, sample_weight=sample_weight)
        return ops.cast(base, ops.dtype(regulariser)) + regulariser

    def get_config(self):
        config = super().get_config()
        config.update(weight=self.weight,
                      base_loss=(None if self.base_loss is None
                                 else keras.losses.serialize(self.base_loss)))
        return config
