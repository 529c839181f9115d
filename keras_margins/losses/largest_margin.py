"""Losses of "Learning Towards the Largest Margins" (Zhou et al., ICLR 2022).

LM-Softmax and GM-Softmax over cosine-classifier outputs, and the
sample-margin regulariser ``R_sm``, alone or added to a base loss.
"""

import keras
from keras import ops

from keras_margins import ops as km_ops
from keras_margins.losses.base import MarginLoss
from keras_margins.priors import validate_non_negative, validate_positive

__all__ = ["LMSoftmaxLoss", "GMSoftmaxLoss", "SampleMarginLoss"]


def _finite(value, name):
    """``float(value)``; ``ValueError`` naming ``name`` unless a finite number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number, received {value!r}.") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"`{name}` must be finite, received {value!r}.")
    return number


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

    def __init__(self, scale, class_weights=None, reduction="sum_over_batch_size",
                 name="lm_softmax_loss", dtype=None):
        super().__init__(class_weights=class_weights, reduction=reduction, name=name,
                         dtype=dtype)
        self.scale = validate_positive(scale, "scale")

    def per_sample(self, labels, scores):
        losses = km_ops.margin_softmax_cross_entropy(
            labels, scores, scale=self.scale, exclude_target=True)
        return losses / self.scale

    def get_config(self):
        config = super().get_config()
        config.update(scale=self.scale)
        return config


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

    def __init__(self, alpha1, alpha2, beta1, beta2, scale,
                 reduction="sum_over_batch_size", name="gm_softmax_loss", dtype=None):
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.alpha1 = _finite(alpha1, "alpha1")
        if self.alpha1 < 0.5:
            raise ValueError(f"`alpha1` must be >= 0.5, received {alpha1!r}.")
        self.alpha2 = _finite(alpha2, "alpha2")
        if self.alpha2 > self.alpha1:
            raise ValueError(f"`alpha2` must be <= alpha1 ({self.alpha1:g}), received "
                             f"{alpha2!r}.")
        self.beta1 = _finite(beta1, "beta1")
        self.beta2 = _finite(beta2, "beta2")
        self.scale = validate_positive(scale, "scale")

    def per_sample(self, labels, scores):
        mask = km_ops.target_mask(labels, scores.shape[-1])
        scaled = self.scale * scores
        target = km_ops.gather_target(scaled, labels)
        denominator_target = self.alpha2 * target + self.beta2
        numerator_target = self.alpha1 * target + self.beta1
        # logsumexp(denominator) - denominator_target, then swap in the numerator.
        losses = km_ops.margin_softmax_cross_entropy(
            labels, scaled, target_scores=denominator_target, mask=mask)
        return losses + denominator_target - numerator_target

    def get_config(self):
        config = super().get_config()
        config.update(alpha1=self.alpha1, alpha2=self.alpha2, beta1=self.beta1,
                      beta2=self.beta2, scale=self.scale)
        return config


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
        mask = km_ops.target_mask(labels, scores.shape[-1])
        other, _ = km_ops.max_non_target(scores, labels, mask)
        return other - km_ops.gather_target(scores, labels)

    def _fuses_cross_entropy(self):
        """True when the base is plain sparse softmax CE on logits with our reduction."""
        if type(self.base_loss) is not keras.losses.SparseCategoricalCrossentropy:
            return False
        config = self.base_loss.get_config()
        return (config.get("from_logits") is True and config.get("ignore_class") is None
                and self.base_loss.reduction == self.reduction)

    def per_sample(self, labels, scores):
        if not self._fuses_cross_entropy():
            return self.sample_margin_regularizer(labels, scores)
        # CE + weight * R_sm from one non-target max (R_sm's value and CE's shift).
        mask = km_ops.target_mask(labels, scores.shape[-1])
        other, _ = km_ops.max_non_target(scores, labels, mask)
        target = km_ops.gather_target(scores, labels)
        cross_entropy = km_ops.margin_softmax_cross_entropy(
            labels, scores, target_scores=target, mask=mask, non_target_max=other)
        return cross_entropy + self.weight * (other - target)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if self._fuses_cross_entropy():  # per_sample holds CE + weight * R_sm
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
