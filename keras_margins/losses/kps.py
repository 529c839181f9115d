"""KPS, the key point sensitive loss, with its gradient-adjustment (GA) stage.

Every class gets a radius growing with its count (frequent classes get larger
radii), a margin decreasing with it, and, in the GA stage, a per-class scale.
"""

import keras
import numpy as np
from keras import ops

from keras_margins import ops as km_ops
from keras_margins.losses.base import MarginLoss
from keras_margins.priors import (kps_margins, kps_radii, kps_scales,
                                  validate_non_negative, validate_positive)

__all__ = ["KPSLoss"]


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
    any order. The authors' code reverses the radius list instead, which agrees
    only for counts sorted in descending order on an exact exponential profile
    (on CIFAR-10-LT's integer counts the two differ by up to 1.2e-4 in the
    margins). The arrays ``radii``, ``margins`` and ``kps_scales`` are the
    per-class values in use.

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

    def __init__(self, class_counts, max_margin=0.5, scale=15.0, n_base=50,
                 gradient_adjustment=False, max_scale=None, class_weights=None,
                 reduction="mean_with_sample_weight", name="kps_loss", dtype=None):
        super().__init__(class_counts=class_counts, class_weights=class_weights,
                         reduction=reduction, name=name, dtype=dtype)
        self.max_margin = validate_non_negative(max_margin, "max_margin")
        self.scale = validate_positive(scale, "scale")
        self.max_scale = (max(50.0, self.scale) if max_scale is None
                          else validate_positive(max_scale, "max_scale"))
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
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"`gradient_adjustment` must be True or False, received "
                             f"{value!r}.")
        self._gradient_adjustment = bool(value)

    def per_sample(self, labels, scores):
        dtype = ops.dtype(scores)
        safe_labels = ops.clip(labels, 0, scores.shape[-1] - 1)
        mask = km_ops.target_mask(labels, scores.shape[-1])
        scaled = scores * self.constant(self.radii, dtype)[None, :]
        target = km_ops.gather_target(scaled, labels)
        target = target - ops.take(self.constant(self.margins, dtype), safe_labels)
        if self._gradient_adjustment:
            scale = ops.take(self.constant(self.kps_scales, dtype), safe_labels)
        else:
            scale = self.scale
        return km_ops.margin_softmax_cross_entropy(
            labels, scaled, target_scores=target, scale=scale, mask=mask)

    def get_config(self):
        config = super().get_config()
        config.update(class_counts=self._class_counts.tolist(), max_margin=self.max_margin,
                      scale=self.scale, n_base=self.n_base,
                      gradient_adjustment=self._gradient_adjustment,
                      max_scale=self.max_scale)
        return config
