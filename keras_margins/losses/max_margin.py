"""MM, the maximum-margin loss (and MM-LDAM), over cosine-classifier outputs.

Per sample the margin is chosen from the sample's own scores: the further a
sample is from the decision boundary, the smaller its margin.
"""

import keras
from keras import ops

from keras_margins import ops as km_ops
from keras_margins.losses.base import MarginLoss
from keras_margins.priors import ldam_margins, validate_non_negative, validate_positive

__all__ = ["MaxMarginLoss"]


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

    def __init__(self, delta_neg, beta, scale, class_counts=None, ldam_max_margin=0.5,
                 class_weights=None, reduction="mean_with_sample_weight",
                 name="max_margin_loss", dtype=None):
        super().__init__(class_counts=class_counts, class_weights=class_weights,
                         reduction=reduction, name=name, dtype=dtype)
        self.delta_neg = validate_non_negative(delta_neg, "delta_neg")
        self.beta = validate_non_negative(beta, "beta")
        self.scale = validate_positive(scale, "scale")
        self.ldam_max_margin = validate_non_negative(ldam_max_margin, "ldam_max_margin")
        self.ldam_margins = (None if self._class_counts is None
                             else ldam_margins(self._class_counts, self.ldam_max_margin))

    def sample_margins(self, labels, scores, mask=None, other=None):
        """The margin ``Delta`` of every sample, shape (batch,), no gradient.

        ``other``: the largest non-target score, if the caller has it."""
        scores = ops.stop_gradient(scores)
        target = km_ops.gather_target(scores, labels)
        if other is None:
            other, _ = km_ops.max_non_target(scores, labels, mask)
        other = ops.stop_gradient(other)
        distance = target - other
        if self.ldam_margins is None:
            delta_neg = ops.cast(self.delta_neg, ops.dtype(scores))
        else:
            safe_labels = ops.clip(labels, 0, scores.shape[-1] - 1)
            delta_neg = self.delta_neg - ops.take(
                self.constant(self.ldam_margins, ops.dtype(scores)), safe_labels)
        offset = ops.where(distance > 0, self.beta * delta_neg, delta_neg)
        # exp(-|d| - offset) never overflows, whatever the scores' range.
        margin = ops.exp(-ops.abs(distance) - offset)
        margin = ops.where(distance == 0, ops.zeros_like(margin), margin)
        return ops.stop_gradient(margin)

    def per_sample(self, labels, scores):
        mask = km_ops.target_mask(labels, scores.shape[-1])
        other, _ = km_ops.max_non_target(ops.stop_gradient(scores), labels, mask)
        target = km_ops.gather_target(scores, labels)
        target = target - self.sample_margins(labels, scores, mask, other)
        # One non-target max serves the margin and the log-sum-exp's shift.
        return km_ops.margin_softmax_cross_entropy(
            labels, scores, target_scores=target, scale=self.scale, mask=mask,
            non_target_max=other)

    def get_config(self):
        config = super().get_config()
        config.update(delta_neg=self.delta_neg, beta=self.beta, scale=self.scale,
                      class_counts=(None if self._class_counts is None
                                    else self._class_counts.tolist()),
                      ldam_max_margin=self.ldam_max_margin)
        return config
