"""LDAM (label-distribution-aware margin) and ELM (enlarged large margin).

Both are the margin softmax cross-entropy of ``keras_margins.ops`` over the
outputs of a cosine classifier (``keras_margins.layers.CosineDense``) with
class-dependent margins ``m_j = max_margin * n_j^(-1/4) / max_k n_k^(-1/4)``.
"""

import keras
from keras import ops

from keras_margins.losses.base import MarginLoss, counts_or_vector, per_sample_losses
from keras_margins.priors import ldam_margins
from keras_margins.validation import validate_non_negative, validate_positive

__all__ = ["LDAMLoss", "ELMLoss", "ldam_loss", "elm_loss"]


def _ldam_rule(batch, scale):
    """Hooks: target ``c_y - m_y``, row scale ``s``."""
    return batch.cross_entropy(target_shift=-batch.lookup("margins"), scale=scale)


def _elm_rule(batch, scale, lam, target_margin):
    """Hooks: target ``c_y - m_y + lam * m_{j*}`` (j* the hardest negative), scale ``s``."""
    _, hardest = batch.non_target_max()  # also shifts the log-sum-exp
    shift = -lam * ops.take(batch.vector("margins"), hardest)
    if target_margin:
        shift = shift + batch.lookup("margins")
    return batch.cross_entropy(target_shift=-shift, scale=scale)


def _margins(margins, class_counts, max_margin):
    return counts_or_vector("margins", margins, class_counts,
                            lambda counts: ldam_margins(counts, max_margin))


def ldam_loss(y_true, y_pred, class_counts=None, max_margin=0.5, scale=30.0, *,
              margins=None, class_weights=None):
    """Per-sample LDAM loss (no reduction).

    ``l_i = logsumexp_j(s * z_ij) - s * z_iy`` with ``z_ij = c_ij`` for
    ``j != y`` and ``z_iy = c_iy - m_y``, ``m_j = max_margin * n_j^(-1/4) /
    max_k n_k^(-1/4)``; times ``w_y`` when ``class_weights`` are given.

    Args:
        y_true: sparse (B,), (B, 1) or one-hot (B, C) labels.
        y_pred: (B, C) cosines of a cosine classifier.
        class_counts: per-class training counts (any order); or pass ``margins``.
        max_margin: margin of the rarest class (0.5).
        scale: logit scale ``s`` > 0 (30).
        margins: precomputed per-class margins ``m_j`` instead of ``class_counts``.
        class_weights: optional per-class weights ``w_j``.

    Returns:
        (B,) float32 losses (float64 for float64 inputs).

    Example:
    ```python
    losses = km.losses.ldam_loss(labels, cosines, class_counts=counts)
    ```

    Reference: Cao et al., "Learning Imbalanced Datasets with
    Label-Distribution-Aware Margin Loss", NeurIPS 2019, Eq. 13.
    """
    margins = _margins(margins, class_counts, validate_non_negative(max_margin, "max_margin"))
    return per_sample_losses(_ldam_rule, y_true, y_pred, per_class={"margins": margins},
                             class_weights=class_weights,
                             scale=validate_positive(scale, "scale"))


def elm_loss(y_true, y_pred, class_counts=None, lam=1.0, max_margin=0.5, scale=30.0, *,
             target_margin=True, margins=None, class_weights=None):
    """Per-sample enlarged-large-margin loss (no reduction).

    As ``ldam_loss`` with the target ``z_iy = c_iy - m_y + lam * m_{j*}``,
    ``j* = argmax_{j != y} c_ij`` chosen without gradient; ``lam = 0`` is LDAM,
    ``target_margin=False`` drops ``- m_y``. Times ``w_y`` with ``class_weights``.

    Args:
        y_true: sparse (B,), (B, 1) or one-hot (B, C) labels.
        y_pred: (B, C) cosines.
        class_counts: per-class training counts; or pass ``margins``.
        lam: weight of the hardest negative's margin, >= 0 (1.0).
        max_margin: margin of the rarest class (0.5).
        scale: logit scale ``s`` > 0 (30).
        target_margin: keep the LDAM term ``- m_y``.
        margins: precomputed per-class margins instead of ``class_counts``.
        class_weights: optional per-class weights ``w_j``.

    Returns:
        (B,) float32 losses (float64 for float64 inputs).

    Reference: Kato & Hotta, "Enlarged Large Margin Loss for Imbalanced
    Classification", Eq. 7.
    """
    margins = _margins(margins, class_counts, validate_non_negative(max_margin, "max_margin"))
    return per_sample_losses(_elm_rule, y_true, y_pred, per_class={"margins": margins},
                             class_weights=class_weights,
                             scale=validate_positive(scale, "scale"),
                             lam=validate_non_negative(lam, "lam"),
                             target_margin=_validate_flag(target_margin, "target_margin"))


def _validate_flag(value, name):
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False, received {value!r}.")
    return value


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

    rule = staticmethod(_ldam_rule)
    config_parameters = ("class_counts", "max_margin", "scale")

    def __init__(self, class_counts, max_margin=0.5, scale=30.0, class_weights=None,
                 reduction="mean_with_sample_weight", name="ldam_loss", dtype=None):
        super().__init__(class_counts=class_counts, class_weights=class_weights,
                         reduction=reduction, name=name, dtype=dtype)
        self.max_margin = validate_non_negative(max_margin, "max_margin")
        self.scale = validate_positive(scale, "scale")
        self.margins = ldam_margins(self._class_counts, self.max_margin)

    def rule_arguments(self):
        return {"margins": self.margins}, {"scale": self.scale}


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

    rule = staticmethod(_elm_rule)
    config_parameters = ("class_counts", "max_margin", "scale", "lam", "target_margin")

    def __init__(self, class_counts, lam=1.0, max_margin=0.5, scale=30.0,
                 class_weights=None, target_margin=True,
                 reduction="mean_with_sample_weight", name="elm_loss", dtype=None):
        super().__init__(class_counts, max_margin=max_margin, scale=scale,
                         class_weights=class_weights, reduction=reduction,
                         name=name, dtype=dtype)
        self.lam = validate_non_negative(lam, "lam")
        self.target_margin = _validate_flag(target_margin, "target_margin")

    def rule_arguments(self):
        per_class, arguments = super().rule_arguments()
        return per_class, {**arguments, "lam": self.lam, "target_margin": self.target_margin}
