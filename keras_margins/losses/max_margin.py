"""MM, the maximum-margin loss (and MM-LDAM), over cosine-classifier outputs.

Per sample the margin is chosen from the sample's own scores: the further a
sample is from the decision boundary, the smaller its margin.
"""

import keras
from keras import ops

from keras_margins import ops as km_ops
from keras_margins.losses.base import Batch, MarginLoss, per_sample_losses
from keras_margins.priors import ldam_margins
from keras_margins.validation import validate_non_negative, validate_positive

__all__ = ["MaxMarginLoss", "max_margin_loss"]


def _sample_margins(batch, delta_neg, beta):
    """``Delta`` per sample from ``d = c_y - max_{j != y} c_j``, no gradient."""
    other, _ = batch.non_target_max(indices=False)
    distance = ops.stop_gradient(batch.target) - other
    if batch.has("ldam_margins"):
        delta_neg = delta_neg - batch.lookup("ldam_margins")
    else:
        delta_neg = ops.cast(delta_neg, batch.dtype)
    offset = ops.where(distance > 0, beta * delta_neg, delta_neg)
    # exp(-|d| - offset) never overflows, whatever the scores' range.
    margin = ops.exp(-ops.abs(distance) - offset)
    margin = ops.where(distance == 0, ops.zeros_like(margin), margin)
    return ops.stop_gradient(margin)


def _max_margin_rule(batch, delta_neg, beta, scale):
    """Hooks: target ``c_y - Delta`` (per-sample margin), row scale ``s``."""
    margin = _sample_margins(batch, delta_neg, beta)
    # One non-target max serves the margin and the log-sum-exp's shift.
    return batch.cross_entropy(target_shift=-margin, scale=scale)


def _mm_per_class(class_counts, ldam_max_margin):
    return ({} if class_counts is None
            else {"ldam_margins": ldam_margins(class_counts, ldam_max_margin)})


def max_margin_loss(y_true, y_pred, delta_neg, beta, scale, class_counts=None,
                    ldam_max_margin=0.5, *, class_weights=None):
    """Per-sample maximum-margin loss (MM; MM-LDAM with ``class_counts``), no reduction.

    With ``d = c_y - max_{j != y} c_j``: ``Delta = exp(-d - beta * delta_neg)``
    if ``d > 0``, ``exp(d - delta_neg)`` if ``d < 0``, 0 if ``d = 0`` (no
    gradient), and ``l = logsumexp_j(s z_j) - s z_y`` with ``z_y = c_y - Delta``.
    MM-LDAM replaces ``delta_neg`` by ``delta_neg - g_y`` (LDAM margins ``g``).
    Times ``w_y`` when ``class_weights`` are given.

    Args:
        y_true: sparse (B,), (B, 1) or one-hot (B, C) labels.
        y_pred: (B, C) cosines.
        delta_neg: offset for misclassified samples, >= 0.
        beta: ratio ``delta_pos / delta_neg``, >= 0.
        scale: logit scale ``s`` > 0.
        class_counts: optional per-class counts (MM-LDAM).
        ldam_max_margin: largest LDAM margin of MM-LDAM (0.5).
        class_weights: optional per-class weights ``w_j``.

    Returns:
        (B,) float32 losses (float64 for float64 inputs).

    Reference: Kang, Vu & Yoo, "Maximum Margin Loss" for long-tailed
    recognition (the per-sample margin Delta and MM-LDAM).
    """
    return per_sample_losses(
        _max_margin_rule, y_true, y_pred,
        per_class=_mm_per_class(class_counts,
                                validate_non_negative(ldam_max_margin, "ldam_max_margin")),
        class_weights=class_weights, delta_neg=validate_non_negative(delta_neg, "delta_neg"),
        beta=validate_non_negative(beta, "beta"), scale=validate_positive(scale, "scale"))


@keras.saving.register_keras_serializable(package="keras_margins")
class MaxMarginLoss(MarginLoss):
    """Maximum-margin loss: a per-sample margin from the sample margin.

    With the sample margin ``d = c_y - max_{j != y} c_j`` (the target excluded,
    not zeroed), the margin is::

        Delta = exp(-d - delta_pos)   if d > 0
        Delta = exp( d - delta_neg)   if d < 0
        Delta = 0                     if d = 0,    delta_pos = beta * delta_neg

    computed without gradient, and ``l = CE(s * (c - Delta e_y), y)``. With
    ``class_counts`` it is MM-LDAM: ``delta_neg`` becomes the per-class
    ``delta_neg - g_y`` (and ``delta_pos = beta * (delta_neg - g_y)``), ``g`` the
    LDAM margins with largest margin ``ldam_max_margin``. With class weights
    (DRW) the batch loss is the weighted mean ``sum w_y l / sum w_y``.

    This is the paper's per-sample definition. The authors' code differs (it
    uses the first sample's label column for every row and zeroes the target
    instead of excluding it), so no reference values from it are used.

    Args:
        delta_neg: offset for misclassified samples (``d < 0``), >= 0;
            1.29 for CIFAR-100-LT ratio 100, 0.6 for CIFAR-10-LT ratio 100.
        beta: ratio ``delta_pos / delta_neg``, >= 0; 1.528 (CIFAR-100-LT),
            1.5 (CIFAR-10-LT ratio 100).
        scale: logit scale ``s`` > 0 (19 for MM, 26 for MM-LDAM on CIFAR-100-LT).
        class_counts: optional per-class training counts (any order): MM-LDAM.
        ldam_max_margin: largest LDAM margin ``g`` for MM-LDAM (0.5).
        class_weights: optional per-class weights; usually left to
            ``keras_margins.callbacks.DeferredReweighting``.
        reduction, name, dtype: see ``MarginLoss``.

    Example:
    ```python
    loss = km.losses.MaxMarginLoss(delta_neg=1.29, beta=1.528, scale=26.0,
                                   class_counts=counts)   # MM-LDAM
    model.compile(optimizer="sgd", loss=loss)
    model.fit(x, y, callbacks=[km.callbacks.DeferredReweighting(counts, 160)])
    ```

    Reference: Kang, Vu & Yoo, "Maximum Margin Loss" for long-tailed
    recognition (the per-sample margin Delta and its MM-LDAM variant).
    """

    rule = staticmethod(_max_margin_rule)
    config_parameters = ("delta_neg", "beta", "scale", "class_counts", "ldam_max_margin")

    def __init__(self, delta_neg, beta, scale, class_counts=None, ldam_max_margin=0.5,
                 class_weights=None, reduction="mean_with_sample_weight",
                 name="max_margin_loss", dtype=None):
        super().__init__(class_counts=class_counts, class_weights=class_weights,
                         reduction=reduction, name=name, dtype=dtype)
        self.delta_neg = validate_non_negative(delta_neg, "delta_neg")
        self.beta = validate_non_negative(beta, "beta")
        self.scale = validate_positive(scale, "scale")
        self.ldam_max_margin = validate_non_negative(ldam_max_margin, "ldam_max_margin")
        self.ldam_margins = _mm_per_class(self._class_counts,
                                          self.ldam_max_margin).get("ldam_margins")

    def rule_arguments(self):
        per_class = {} if self.ldam_margins is None else {"ldam_margins": self.ldam_margins}
        return per_class, {"delta_neg": self.delta_neg, "beta": self.beta,
                           "scale": self.scale}

    def sample_margins(self, labels, scores):
        """The margin ``Delta`` of every sample, shape (batch,), no gradient."""
        scores = km_ops.to_compute_dtype(scores)
        per_class, arguments = self.rule_arguments()
        batch = Batch(scores, ops.cast(labels, "int32"), per_class)
        return _sample_margins(batch, arguments["delta_neg"], arguments["beta"])
