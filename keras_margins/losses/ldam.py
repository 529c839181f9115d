"""LDAM (label-distribution-aware margin) and ELM (enlarged large margin).

Both are the margin softmax cross-entropy of ``keras_margins.ops`` over the
outputs of a cosine classifier (``keras_margins.layers.CosineDense``) with
class-dependent margins ``m_j = max_margin * n_j^(-1/4) / max_k n_k^(-1/4)``.
"""

import keras
from keras import ops

from keras_margins import ops as km_ops
from keras_margins.losses.base import MarginLoss
from keras_margins.priors import (ldam_margins, validate_non_negative,
                                  validate_positive)

__all__ = ["LDAMLoss", "ELMLoss"]


@keras.saving.register_keras_serializable(package="keras_margins")
class LDAMLoss(MarginLoss):
    """Label-distribution-aware margin loss.

    ``l = CE(s * (c - m_y e_y), y)``: the target cosine is lowered by its class
    margin ``m_y = max_margin * n_y^(-1/4) / max_k n_k^(-1/4)`` and every
    column is multiplied by ``s``. With class weights (DRW), the batch loss is
    the weighted mean ``sum w_y l / sum w_y``.

    Args:
        class_counts: per-class training counts (any order).
        max_margin: margin of the rarest class (0.5 in the paper).
        scale: logit scale ``s`` (30).
        class_weights: optional per-class weights; usually left to
            ``keras_margins.callbacks.DeferredReweighting``.
        reduction, name, dtype: see ``MarginLoss``.

    Example:
    ```python
    counts = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    model.compile(optimizer="sgd", loss=km.losses.LDAMLoss(counts))
    model.fit(x, y, callbacks=[km.callbacks.DeferredReweighting(counts, 160)])
    ```

    Reference: Cao et al., "Learning Imbalanced Datasets with
    Label-Distribution-Aware Margin Loss", NeurIPS 2019, Eq. 13.
    """

    def __init__(self, class_counts, max_margin=0.5, scale=30.0, class_weights=None,
                 reduction="mean_with_sample_weight", name="ldam_loss", dtype=None):
        super().__init__(class_counts=class_counts, class_weights=class_weights,
                         reduction=reduction, name=name, dtype=dtype)
        self.max_margin = validate_non_negative(max_margin, "max_margin")
        self.scale = validate_positive(scale, "scale")
        self.margins = ldam_margins(self._class_counts, self.max_margin)

    def target_margins(self, labels, scores):
        """Per-sample margin subtracted from the target cosine, shape (batch,)."""
        return ops.take(self.constant(self.margins, ops.dtype(scores)), labels)

    def per_sample(self, labels, scores):
        safe_labels = ops.clip(labels, 0, scores.shape[-1] - 1)
        mask = km_ops.target_mask(labels, scores.shape[-1])
        target = km_ops.gather_target(scores, labels)
        target = target - self.target_margins(safe_labels, scores)
        return km_ops.margin_softmax_cross_entropy(
            labels, scores, target_scores=target, scale=self.scale, mask=mask)

    def get_config(self):
        config = super().get_config()
        config.update(class_counts=self._class_counts.tolist(),
                      max_margin=self.max_margin, scale=self.scale)
        return config


@keras.saving.register_keras_serializable(package="keras_margins")
class ELMLoss(LDAMLoss):
    """Enlarged large margin loss: LDAM plus the hardest negative's margin.

    With ``j* = argmax_{j != y} c_j`` (chosen on the input, no gradient through
    the choice), the target cosine becomes ``c_y - m_y + lam * m_{j*}``; the
    other columns are unchanged; then ``CE(s * ., y)``. ``lam = 0`` is LDAM.
    ``target_margin=False`` drops ``- m_y`` (the paper's "without Delta_y").

    Args:
        class_counts: per-class training counts (any order).
        lam: weight of the hardest negative's margin (1.0, 0.5 or 0.1 in the paper).
        max_margin: margin of the rarest class (0.5).
        scale: logit scale (30).
        class_weights: optional per-class weights (DRW).
        target_margin: keep the LDAM term ``- m_y``.
        reduction, name, dtype: see ``MarginLoss``.

    Example:
    ```python
    model.compile(optimizer="sgd", loss=km.losses.ELMLoss(counts, lam=1.0))
    ```

    Reference: Kato & Hotta, "Enlarged Large Margin Loss for Imbalanced
    Classification", Eq. 7 (sign of the ``lam`` term as in the paper and code).
    """

    def __init__(self, class_counts, lam=1.0, max_margin=0.5, scale=30.0,
                 class_weights=None, target_margin=True,
                 reduction="mean_with_sample_weight", name="elm_loss", dtype=None):
        super().__init__(class_counts, max_margin=max_margin, scale=scale,
                         class_weights=class_weights, reduction=reduction,
                         name=name, dtype=dtype)
        self.lam = validate_non_negative(lam, "lam")
        if not isinstance(target_margin, bool):
            raise ValueError(f"`target_margin` must be True or False, received "
                             f"{target_margin!r}.")
        self.target_margin = target_margin

    def target_margins(self, labels, scores, hardest=None):
        """``m_y - lam * m_{j*}`` (``hardest`` = j*, computed when not given)."""
        margins = self.constant(self.margins, ops.dtype(scores))
        if hardest is None:
            _, hardest = km_ops.max_non_target(ops.stop_gradient(scores), labels)
        shift = -self.lam * ops.take(margins, hardest)
        if self.target_margin:
            shift = shift + ops.take(margins, labels)
        return shift

    def per_sample(self, labels, scores):
        safe_labels = ops.clip(labels, 0, scores.shape[-1] - 1)
        mask = km_ops.target_mask(labels, scores.shape[-1])
        # One non-target max gives j* and the log-sum-exp's shift.
        other, hardest = km_ops.max_non_target(ops.stop_gradient(scores), labels, mask)
        target = km_ops.gather_target(scores, labels)
        target = target - self.target_margins(safe_labels, scores, hardest)
        return km_ops.margin_softmax_cross_entropy(
            labels, scores, target_scores=target, scale=self.scale, mask=mask,
            non_target_max=other)

    def get_config(self):
        config = super().get_config()
        config.update(lam=self.lam, target_margin=self.target_margin)
        return config
