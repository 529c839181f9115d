"""KPS, the key point sensitive loss, with its gradient-adjustment (GA) stage.

Every class gets a radius growing with its count (frequent classes get larger
radii), a margin decreasing with it, and, in the GA stage, a per-class scale.
"""

import keras
import numpy as np

from keras_margins.losses.base import MarginLoss, per_sample_losses
from keras_margins.priors import kps_margins, kps_radii, kps_scales
from keras_margins.validation import validate_non_negative, validate_positive

__all__ = ["KPSLoss", "kps_loss"]


def _kps_rule(batch, scale, gradient_adjustment):
    """Hooks: scores ``r_j c_j``, target ``r_y c_y - m_y``, row scale ``s`` or ``s_y``."""
    scaled = batch.scores * batch.vector("radii")[None, :]
    row_scale = batch.lookup("scales") if gradient_adjustment else scale
    return batch.cross_entropy(target_shift=-batch.lookup("margins"), scale=row_scale,
                               scores=scaled)


def _validate_flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be True or False, received {value!r}.")
    return bool(value)


def _max_scale(max_scale, scale):
    return max(50.0, scale) if max_scale is None else validate_positive(max_scale, "max_scale")


def kps_loss(y_true, y_pred, class_counts, max_margin=0.5, scale=15.0, n_base=50,
             gradient_adjustment=False, max_scale=None, *, class_weights=None):
    """Per-sample key point sensitive loss (no reduction).

    ``z_j = r_j * c_j``, ``z_y -= m_y``, ``l = logsumexp_j(s z_j) - s z_y`` with
    ``r_j = 1 + ln(n_j / n_min) / ln(n_base)``, ``m'_j = max(r) + 1 - r_j``,
    ``m_j = max_margin * m'_j / max(m')`` and ``s = scale``, or in the
    gradient-adjustment stage ``s = s_y = clip(scale * m'_y, scale, max_scale)``;
    times ``w_y`` when ``class_weights`` are given.

    Args:
        y_true: sparse (B,), (B, 1) or one-hot (B, C) labels.
        y_pred: (B, C) cosines of a cosine classifier.
        class_counts: per-class training counts (any order).
        max_margin: largest margin, >= 0 (0.5).
        scale: base scale ``s`` > 0 (15).
        n_base: base of the radius logarithm, > 1 (50).
        gradient_adjustment: per-class row scales ``s_y`` instead of ``scale``.
        max_scale: upper clip of the per-class scales (default ``max(50, scale)``).
        class_weights: optional per-class weights ``w_j``.

    Returns:
        (B,) float32 losses (float64 for float64 inputs).

    Reference: Li, Cheung & Hu, "Key Point Sensitive Loss for Long-Tailed
    Visual Recognition", Eq. 26-29 and Section 3.3.
    """
    max_margin = validate_non_negative(max_margin, "max_margin")
    scale = validate_positive(scale, "scale")
    per_class = {"radii": kps_radii(class_counts, n_base),
                 "margins": kps_margins(class_counts, max_margin, n_base),
                 "scales": kps_scales(class_counts, scale, _max_scale(max_scale, scale),
                                      n_base)}
    return per_sample_losses(
        _kps_rule, y_true, y_pred, per_class=per_class, class_weights=class_weights,
        scale=scale,
        gradient_adjustment=_validate_flag(gradient_adjustment, "gradient_adjustment"))


@keras.saving.register_keras_serializable(package="keras_margins")
class KPSLoss(MarginLoss):
    """Key point sensitive loss over cosine-classifier outputs.

    ``z_j = r_j * c_j`` for every class, then ``z_y -= m_y`` and
    ``l = CE(s * z, y)`` with::

        r_j  = 1 + ln(n_j / n_min) / ln(n_base)                 (radius, >= 1)
        m'_j = max(r) + 1 - r_j,   m_j = max_margin * m'_j / max(m')
        s    = scale                                  (stage 1)
        s    = s_y = clip(scale * m'_y, scale, max_scale)   (gradient adjustment)

    In the gradient-adjustment stage each row is scaled by its target class's
    scale. ``keras_margins.callbacks.GradientAdjustment(start_epoch=120)``
    switches ``gradient_adjustment`` during ``fit`` (and rebuilds the compiled
    step so the switch takes effect under ``jit``). Without class weights the
    batch loss is the plain mean (the paper); class weights are accepted for a
    KPS-DRW recipe.

    The margins and scales follow the paper's formula (Eq. 28-29) for counts in
    any order. The authors' code takes the relative margins from the reversed
    radius list instead, ``m'_j = r_{C-1-j}``; the two agree exactly only for
    counts sorted in descending order on an exact exponential profile. On
    integer long-tailed counts sorted in descending order they differ by up to
    1.1e-3 relative in the margins and scales on CIFAR-10-LT (5000 to 50) and
    3.6e-2 relative on CIFAR-100-LT (500 to 5); for counts in another order the
    reversed list assigns margins unrelated to the classes' counts. The arrays
    ``radii``, ``margins`` and ``kps_scales`` are the per-class values in use.
    ``kps_loss`` is the functional form (per-sample values).

    Args:
        class_counts: per-class training counts (any order).
        max_margin: largest margin (0.5 for CIFAR-LT, 0.35 ImageNet-LT,
            0.3 iNaturalist; the authors' code defaults to 0.2).
        scale: base scale ``s`` (15).
        n_base: base of the radius logarithm (50), > 1.
        gradient_adjustment: start in the gradient-adjustment stage.
        max_scale: upper clip of the per-class scales; ``None`` (default):
            ``max(50, scale)``, the authors' 50 for their scale 15, and never
            below ``scale`` (so ``KPSLoss(counts, scale=64)`` needs no other
            argument; gradient adjustment then leaves every row at ``scale``).
        class_weights: optional per-class weights (KPS-DRW).
        reduction, name, dtype: see ``MarginLoss``.

    Example:
    ```python
    loss = km.losses.KPSLoss(counts, max_margin=0.5, scale=15.0)
    model.compile(optimizer="sgd", loss=loss)
    model.fit(x, y, epochs=200,
              callbacks=[km.callbacks.GradientAdjustment(start_epoch=120)])
    ```

    Reference: Li, Cheung & Hu, "Key Point Sensitive Loss for Long-Tailed
    Visual Recognition", Eq. 26-29 and Section 3.3 (gradient adjustment).
    """

    rule = staticmethod(_kps_rule)
    config_parameters = ("class_counts", "max_margin", "scale", "n_base", "gradient_adjustment",
                         "max_scale")

    def __init__(self, class_counts, max_margin=0.5, scale=15.0, n_base=50,
                 gradient_adjustment=False, max_scale=None, class_weights=None,
                 reduction="mean_with_sample_weight", name="kps_loss", dtype=None):
        super().__init__(class_counts=class_counts, class_weights=class_weights,
                         reduction=reduction, name=name, dtype=dtype)
        self.max_margin = validate_non_negative(max_margin, "max_margin")
        self.scale = validate_positive(scale, "scale")
        self.max_scale = _max_scale(max_scale, self.scale)
        self.radii = kps_radii(self._class_counts, n_base)
        self.n_base = float(n_base)
        self.margins = kps_margins(self._class_counts, self.max_margin, self.n_base)
        self.kps_scales = kps_scales(self._class_counts, self.scale, self.max_scale,
                                     self.n_base)
        self.gradient_adjustment = gradient_adjustment

    @property
    def gradient_adjustment(self):
        """Whether rows are scaled per target class (GA stage) instead of ``scale``."""
        return self._gradient_adjustment

    @gradient_adjustment.setter
    def gradient_adjustment(self, value):
        self._gradient_adjustment = _validate_flag(value, "gradient_adjustment")

    def rule_arguments(self):
        per_class = {"radii": self.radii, "margins": self.margins, "scales": self.kps_scales}
        return per_class, {"scale": self.scale,
                           "gradient_adjustment": self._gradient_adjustment}
