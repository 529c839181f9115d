"""The normalised-softmax family from one mechanism: NormFace, CosFace, ArcFace, SphereFace.

All are cross-entropy over scaled cosines where the target cosine is replaced
by ``cos(m1 * theta_y + m2) - m3``, ``theta_y = arccos(c_y)``.
"""

import math

import keras
from keras import ops

from keras_margins import ops as km_ops
from keras_margins.losses.base import MarginLoss
from keras_margins.priors import validate_non_negative, validate_positive

__all__ = ["CombinedMarginLoss", "NormFaceLoss", "CosFaceLoss", "ArcFaceLoss",
           "SphereFaceLoss"]


_CLIP = 1e-7  # cosines are clipped to [-1 + _CLIP, 1 - _CLIP] before arccos


def _validate_m1(value, name):
    number = validate_positive(value, name)
    if number < 1.0:
        raise ValueError(f"`{name}` (multiplicative angular margin) must be >= 1, "
                         f"received {value!r}.")
    return number


def _validate_m2(value, name):
    number = validate_non_negative(value, name)
    if number >= math.pi:
        raise ValueError(f"`{name}` (additive angular margin) must be in [0, pi), "
                         f"received {value!r}.")
    return number


def monotone_cosine(angles):
    """``psi(u) = (-1)^k cos(u) - 2k`` with ``k = floor(u / pi)``, for ``u >= 0``.

    Equal to ``cos(u)`` on ``[0, pi]`` and continued past ``pi`` so that it keeps
    decreasing, continuously and with a continuous slope (SphereFace's
    ``psi``, Liu et al. 2017): ``psi(pi + v) = -cos(v) - 2``.
    """
    dtype = ops.dtype(angles)
    k = ops.cast(ops.floor(angles / math.pi), dtype)
    sign = 1.0 - 2.0 * (k - 2.0 * ops.cast(ops.floor(k / 2.0), dtype))
    return sign * ops.cast(ops.cos(angles), dtype) - 2.0 * k


@keras.saving.register_keras_serializable(package="keras_margins")
class CombinedMarginLoss(MarginLoss):
    """Normalised softmax with combined angular and cosine margins.

    The target logit is ``s * (psi(m1 * theta_y + m2) - m3)`` with
    ``theta_y = arccos(c_y)``; the other classes keep ``s * c_j``; then
    cross-entropy. ``psi = cos`` while ``m1 * theta_y + m2 <= pi``; beyond, the
    target logit would turn back up (a wrong class would *lower* the loss by
    moving further away), so ``psi`` continues it as SphereFace does:
    ``psi(u) = (-1)^k cos(u) - 2k``, ``k = floor(u / pi)``, continuous and
    monotone decreasing in ``theta``. Cosines are clipped to
    ``[-1 + 1e-7, 1 - 1e-7]`` before ``arccos``, so values and gradients stay
    finite at cosines of exactly +1 and -1. When ``m1 = 1`` and ``m2 = 0``
    (NormFace, CosFace) no ``arccos`` is taken: the target is ``c_y - m3``.

    NormFace is ``(1, 0, 0)``, CosFace / AM-Softmax ``(1, 0, m)``, ArcFace
    ``(1, m, 0)``, SphereFace with feature normalisation ``(m, 0, 0)``.

    Args:
        m1: multiplicative angular margin, >= 1.
        m2: additive angular margin, in [0, pi).
        m3: additive cosine margin, >= 0.
        scale: ``s`` > 0.
        reduction, name, dtype: as in ``keras.losses.Loss``.

    Example:
    ```python
    model.compile(loss=km.losses.CombinedMarginLoss(1.0, 0.3, 0.2, scale=64.0))
    ```

    Reference: Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face
    Recognition", CVPR 2019 (combined margins); Zhou et al., "Learning
    Towards the Largest Margins", ICLR 2022 (the family as one mechanism).
    """

    accepts_class_weights = False

    def __init__(self, m1, m2, m3, scale, reduction="sum_over_batch_size",
                 name="combined_margin_loss", dtype=None):
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.m1 = _validate_m1(m1, "m1")
        self.m2 = _validate_m2(m2, "m2")
        self.m3 = validate_non_negative(m3, "m3")
        self.scale = validate_positive(scale, "scale")

    def target_logits(self, cosines):
        """``psi(m1 * arccos(c) + m2) - m3`` for target cosines ``c`` (unscaled)."""
        dtype = ops.dtype(cosines)
        if self.m1 == 1.0 and self.m2 == 0.0:
            target = cosines
        elif self.m1 == 1.0:
            # cos(theta + m) = c cos(m) - sin(theta) sin(m), sin(theta) = sqrt(1 - c^2):
            # no arccos, exact in float64 on every backend (Keras' arccos/cos under
            # JAX return float32 for float64 inputs).
            clipped = ops.clip(cosines, -1.0 + _CLIP, 1.0 - _CLIP)
            sine = ops.sqrt(1.0 - ops.square(clipped))
            shifted = clipped * math.cos(self.m2) - sine * math.sin(self.m2)
            # theta + m2 > pi exactly when c < cos(pi - m2): psi = -cos(theta + m2) - 2.
            past_pi = clipped < math.cos(math.pi - self.m2)
            target = ops.where(past_pi, -shifted - 2.0, shifted)
        else:
            angles = ops.cast(km_ops.safe_arccos(cosines, _CLIP), dtype)
            target = ops.cast(monotone_cosine(self.m1 * angles + self.m2), dtype)
        return target - self.m3 if self.m3 else target

    def per_sample(self, labels, scores):
        mask = km_ops.target_mask(labels, scores.shape[-1])
        target = self.target_logits(km_ops.gather_target(scores, labels))
        return km_ops.margin_softmax_cross_entropy(
            labels, scores, target_scores=target, scale=self.scale, mask=mask)

    def get_config(self):
        config = super().get_config()
        config.update(m1=self.m1, m2=self.m2, m3=self.m3, scale=self.scale)
        return config


def _base_config(loss):
    return MarginLoss.get_config(loss)


@keras.saving.register_keras_serializable(package="keras_margins")
class NormFaceLoss(CombinedMarginLoss):
    """NormFace: cross-entropy over scaled cosines, ``CE(s * c, y)``.

    ``CombinedMarginLoss(1, 0, 0, scale)``.

    Args:
        scale: ``s`` > 0 (the reference values use 5 and 64).
        reduction, name, dtype: as in ``keras.losses.Loss``.

    Example:
    ```python
    model.compile(loss=km.losses.NormFaceLoss(scale=16.0))
    ```

    Reference: Wang et al., "NormFace: L2 Hypersphere Embedding for Face
    Verification", ACM MM 2017.
    """

    def __init__(self, scale, reduction="sum_over_batch_size", name="norm_face_loss",
                 dtype=None):
        super().__init__(1.0, 0.0, 0.0, scale, reduction=reduction, name=name, dtype=dtype)

    def get_config(self):
        config = _base_config(self)
        config.update(scale=self.scale)
        return config


@keras.saving.register_keras_serializable(package="keras_margins")
class CosFaceLoss(CombinedMarginLoss):
    """CosFace / AM-Softmax: target logit ``s * (c_y - m)``.

    ``CombinedMarginLoss(1, 0, margin, scale)``.

    Args:
        margin: additive cosine margin ``m`` >= 0 (0.35 in the CosFace paper).
        scale: ``s`` > 0 (64 in the CosFace paper).
        reduction, name, dtype: as in ``keras.losses.Loss``.

    Example:
    ```python
    model.compile(loss=km.losses.CosFaceLoss(margin=0.35, scale=64.0))
    ```

    Reference: Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face
    Recognition", CVPR 2018.
    """

    def __init__(self, margin, scale, reduction="sum_over_batch_size",
                 name="cos_face_loss", dtype=None):
        super().__init__(1.0, 0.0, validate_non_negative(margin, "margin"), scale,
                         reduction=reduction, name=name, dtype=dtype)

    @property
    def margin(self):
        return self.m3

    def get_config(self):
        config = _base_config(self)
        config.update(margin=self.m3, scale=self.scale)
        return config


@keras.saving.register_keras_serializable(package="keras_margins")
class ArcFaceLoss(CombinedMarginLoss):
    """ArcFace: target logit ``s * cos(theta_y + m)`` (monotone past pi).

    ``CombinedMarginLoss(1, margin, 0, scale)``.

    Args:
        margin: additive angular margin ``m`` in [0, pi) (0.5 in the ArcFace paper).
        scale: ``s`` > 0 (64 in the ArcFace paper).
        reduction, name, dtype: as in ``keras.losses.Loss``.

    Example:
    ```python
    model.compile(loss=km.losses.ArcFaceLoss(margin=0.5, scale=64.0))
    ```

    Reference: Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face
    Recognition", CVPR 2019.
    """

    def __init__(self, margin, scale, reduction="sum_over_batch_size",
                 name="arc_face_loss", dtype=None):
        super().__init__(1.0, _validate_m2(margin, "margin"), 0.0, scale,
                         reduction=reduction, name=name, dtype=dtype)

    @property
    def margin(self):
        return self.m2

    def get_config(self):
        config = _base_config(self)
        config.update(margin=self.m2, scale=self.scale)
        return config


@keras.saving.register_keras_serializable(package="keras_margins")
class SphereFaceLoss(CombinedMarginLoss):
    """SphereFace with normalised features: target logit ``s * psi(m * theta_y)``.

    ``CombinedMarginLoss(margin, 0, 0, scale)``, ``psi(u) = (-1)^k cos(u) - 2k``,
    ``k = floor(u / pi)`` (SphereFace's monotone extension of ``cos(m theta)``).

    Args:
        margin: multiplicative angular margin ``m`` >= 1 (4 in the SphereFace paper).
        scale: ``s`` > 0 (the feature norm fixed by normalisation).
        reduction, name, dtype: as in ``keras.losses.Loss``.

    Example:
    ```python
    model.compile(loss=km.losses.SphereFaceLoss(margin=1.35, scale=30.0))
    ```

    Reference: Liu et al., "SphereFace: Deep Hypersphere Embedding for Face
    Recognition", CVPR 2017 (psi).
    """

    def __init__(self, margin, scale, reduction="sum_over_batch_size",
                 name="sphere_face_loss", dtype=None):
        super().__init__(_validate_m1(margin, "margin"), 0.0, 0.0, scale,
                         reduction=reduction, name=name, dtype=dtype)

    @property
    def margin(self):
        return self.m1

    def get_config(self):
        config = _base_config(self)
        config.update(margin=self.m1, scale=self.scale)
        return config
