"""The normalised-softmax family from one mechanism: NormFace, CosFace, ArcFace, SphereFace.

All are cross-entropy over scaled cosines where the target cosine is replaced
by ``cos(m1 * theta_y + m2) - m3``, ``theta_y = arccos(c_y)``.
"""

import math

import keras
from keras import ops

from keras_margins import ops as km_ops
from keras_margins.losses.base import MarginLoss, per_sample_losses
from keras_margins.validation import (validate_additive_angle, validate_multiplicative_margin,
                                      validate_non_negative, validate_positive)

__all__ = ["CombinedMarginLoss", "NormFaceLoss", "CosFaceLoss", "ArcFaceLoss",
           "SphereFaceLoss", "combined_margin_loss", "norm_face_loss", "cos_face_loss",
           "arc_face_loss", "sphere_face_loss", "margin_target", "PAST_PI"]


_CLIP = 1e-7  # cosines are clipped to [-1 + _CLIP, 1 - _CLIP] before arccos

#: Conventions for the target logit of an additive angular margin past pi.
PAST_PI = ("monotone", "insightface", "easy")


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


def _validate_past_pi(past_pi, m1):
    if past_pi not in PAST_PI:
        raise ValueError(f"`past_pi` must be one of {PAST_PI}, received {past_pi!r}.")
    if past_pi != "monotone" and m1 != 1.0:
        raise ValueError(f"`past_pi={past_pi!r}` is defined for additive angular margins "
                         f"only (m1 = 1), received m1={m1:g}.")
    return past_pi


def margin_target(cosines, m1, m2, m3, past_pi="monotone"):
    """The target logit ``psi(m1 * arccos(c) + m2) - m3`` for target cosines ``c``.

    ``psi = cos`` while ``m1 * theta + m2 <= pi``. Past pi, ``past_pi`` chooses
    (the last two only for ``m1 = 1``, ``theta = arccos(c)``):

    * ``"monotone"``: ``psi(u) = (-1)^k cos(u) - 2k``, ``k = floor(u / pi)``
      (SphereFace's continuation: continuous, decreasing in ``theta``);
    * ``"insightface"``: ``cos(theta + m2)`` where ``c > cos(pi - m2)``, else
      ``c - m2 * sin(m2)`` (InsightFace's ArcFace);
    * ``"easy"``: ``cos(theta + m2)`` where ``c > 0``, else ``c`` ("easy margin").

    Cosines are clipped to ``[-1 + 1e-7, 1 - 1e-7]`` before ``arccos`` (finite
    gradients at +-1). For ``m1 = 1, m2 = 0`` no ``arccos`` is taken.
    Unscaled; shape of ``cosines``.
    """
    dtype = ops.dtype(cosines)
    if m1 == 1.0 and m2 == 0.0:
        target = cosines
    elif m1 == 1.0:
        # cos(theta + m) = c cos(m) - sin(theta) sin(m), sin(theta) = sqrt(1 - c^2):
        # no arccos, exact in float64 on every backend (Keras' arccos/cos under
        # JAX return float32 for float64 inputs).
        clipped = ops.clip(cosines, -1.0 + _CLIP, 1.0 - _CLIP)
        sine = ops.sqrt(1.0 - ops.square(clipped))
        shifted = clipped * math.cos(m2) - sine * math.sin(m2)
        threshold = math.cos(math.pi - m2)  # theta + m2 > pi exactly when c < threshold
        if past_pi == "monotone":  # psi = -cos(theta + m2) - 2 past pi
            target = ops.where(clipped < threshold, -shifted - 2.0, shifted)
        elif past_pi == "insightface":
            target = ops.where(clipped > threshold, shifted, cosines - m2 * math.sin(m2))
        else:
            target = ops.where(cosines > 0.0, shifted, cosines)
    else:
        angles = ops.cast(km_ops.safe_arccos(cosines, _CLIP), dtype)
        target = ops.cast(monotone_cosine(m1 * angles + m2), dtype)
    return target - m3 if m3 else target


def _combined_rule(batch, m1, m2, m3, scale, past_pi):
    """Hooks: target ``psi(m1 theta_y + m2) - m3``, row scale ``s``."""
    if m1 == 1.0 and m2 == 0.0:  # NormFace, CosFace: a constant margin (or none)
        return batch.cross_entropy(target_shift=-m3 if m3 else None, scale=scale)
    return batch.cross_entropy(target=margin_target(batch.target, m1, m2, m3, past_pi),
                               scale=scale)


def _combined(y_true, y_pred, m1, m2, m3, scale, past_pi="monotone"):
    return per_sample_losses(_combined_rule, y_true, y_pred, m1=m1, m2=m2, m3=m3,
                             scale=validate_positive(scale, "scale"),
                             past_pi=_validate_past_pi(past_pi, m1))


def combined_margin_loss(y_true, y_pred, m1, m2, m3, scale, past_pi="monotone"):
    """Per-sample normalised softmax with combined margins (no reduction).

    ``l = logsumexp_j(s z_j) - s z_y`` with ``z_j = c_j`` for ``j != y`` and
    ``z_y = psi(m1 * theta_y + m2) - m3``, ``theta_y = arccos(c_y)`` (see
    ``margin_target`` for ``psi`` and ``past_pi``).

    Args:
        y_true: sparse (B,), (B, 1) or one-hot (B, C) labels.
        y_pred: (B, C) cosines.
        m1: multiplicative angular margin, >= 1.
        m2: additive angular margin, in [0, pi).
        m3: additive cosine margin, >= 0.
        scale: ``s`` > 0.
        past_pi: ``"monotone"`` (default), ``"insightface"`` or ``"easy"``.

    Returns:
        (B,) float32 losses (float64 for float64 inputs).

    Reference: Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face
    Recognition", CVPR 2019 (combined margins).
    """
    return _combined(y_true, y_pred, validate_multiplicative_margin(m1, "m1"),
                     validate_additive_angle(m2, "m2"), validate_non_negative(m3, "m3"),
                     scale, past_pi)


def norm_face_loss(y_true, y_pred, scale):
    """Per-sample NormFace loss ``CE(s * c, y)`` (no reduction).

    Args:
        y_true: sparse (B,), (B, 1) or one-hot (B, C) labels.
        y_pred: (B, C) cosines.
        scale: ``s`` > 0.

    Returns:
        (B,) float32 losses (float64 for float64 inputs).

    Reference: Wang et al., "NormFace: L2 Hypersphere Embedding for Face
    Verification", ACM MM 2017.
    """
    return _combined(y_true, y_pred, 1.0, 0.0, 0.0, scale)


def cos_face_loss(y_true, y_pred, margin, scale):
    """Per-sample CosFace / AM-Softmax loss, target logit ``s * (c_y - m)`` (no reduction).

    ``l = logsumexp_j(s z_j) - s z_y`` with ``z_j = c_j`` for ``j != y`` and
    ``z_y = c_y - m``: an additive margin on the cosine itself, so no ``arccos``.

    Args:
        y_true, y_pred: labels (sparse or one-hot) and (B, C) cosines.
        margin, scale: the additive cosine margin ``m`` >= 0 and the scale ``s`` > 0.

    Returns:
        (B,) float32 losses (float64 for float64 inputs).

    Reference: Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face
    Recognition", CVPR 2018.
    """
    return _combined(y_true, y_pred, 1.0, 0.0, validate_non_negative(margin, "margin"),
                     scale)


def arc_face_loss(y_true, y_pred, margin, scale, past_pi="monotone"):
    """Per-sample ArcFace loss, target logit ``s * cos(theta_y + m)`` (no reduction).

    Past ``theta_y + m > pi`` the target follows ``past_pi`` (see ``ArcFaceLoss``).

    Args:
        y_true: sparse (B,), (B, 1) or one-hot (B, C) labels.
        y_pred: (B, C) cosines.
        margin: additive angular margin ``m`` in [0, pi).
        scale: ``s`` > 0.
        past_pi: ``"monotone"`` (default), ``"insightface"`` or ``"easy"``.

    Returns:
        (B,) float32 losses (float64 for float64 inputs).

    Reference: Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face
    Recognition", CVPR 2019, Eq. 3.
    """
    return _combined(y_true, y_pred, 1.0, validate_additive_angle(margin, "margin"), 0.0, scale,
                     past_pi)


def sphere_face_loss(y_true, y_pred, margin, scale):
    """Per-sample SphereFace loss with normalised features, target ``s * psi(m theta_y)``.

    ``psi(u) = (-1)^k cos(u) - 2k``, ``k = floor(u / pi)``; no reduction.

    Args:
        y_true, y_pred: labels (sparse or one-hot) and (B, C) cosines.
        margin: multiplicative angular margin ``m`` >= 1.
        scale: ``s`` > 0.

    Returns:
        (B,) float32 losses (float64 for float64 inputs).

    Reference: Liu et al., "SphereFace: Deep Hypersphere Embedding for Face
    Recognition", CVPR 2017 (psi).
    """
    return _combined(y_true, y_pred, validate_multiplicative_margin(margin, "margin"),
                     0.0, 0.0, scale)


@keras.saving.register_keras_serializable(package="keras_margins")
class CombinedMarginLoss(MarginLoss):
    """Normalised softmax with combined angular and cosine margins.

    The target logit is ``s * (psi(m1 * theta_y + m2) - m3)`` with
    ``theta_y = arccos(c_y)``; the other classes keep ``s * c_j``; then
    cross-entropy. ``psi = cos`` while ``m1 * theta_y + m2 <= pi``; beyond, the
    target logit would turn back up (a wrong class would *lower* the loss by
    moving further away), so by default (``past_pi="monotone"``) ``psi``
    continues it as SphereFace does: ``psi(u) = (-1)^k cos(u) - 2k``,
    ``k = floor(u / pi)``, continuous and monotone decreasing in ``theta``.
    With ``m1 = 1``, ``past_pi`` may instead select InsightFace's or the "easy
    margin" convention (see ``ArcFaceLoss`` and ``margin_target``). Cosines are
    clipped to ``[-1 + 1e-7, 1 - 1e-7]`` before ``arccos``, so values and
    gradients stay finite at cosines of exactly +1 and -1. When ``m1 = 1`` and
    ``m2 = 0`` (NormFace, CosFace) no ``arccos`` is taken: the target is ``c_y - m3``.

    NormFace is ``(1, 0, 0)``, CosFace / AM-Softmax ``(1, 0, m)``, ArcFace
    ``(1, m, 0)``, SphereFace with feature normalisation ``(m, 0, 0)``.
    ``combined_margin_loss`` is the functional form.

    Args:
        m1: multiplicative angular margin, >= 1.
        m2: additive angular margin, in [0, pi).
        m3: additive cosine margin, >= 0.
        scale: ``s`` > 0.
        past_pi: ``"monotone"`` (default), ``"insightface"`` or ``"easy"``; the
            last two need ``m1 = 1``.
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
    rule = staticmethod(_combined_rule)
    rule_parameters = ("m1", "m2", "m3", "scale", "past_pi")
    config_parameters = ("m1", "m2", "m3", "scale", "past_pi")

    def __init__(self, m1, m2, m3, scale, past_pi="monotone",
                 reduction="sum_over_batch_size", name="combined_margin_loss", dtype=None):
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.m1 = validate_multiplicative_margin(m1, "m1")
        self.m2 = validate_additive_angle(m2, "m2")
        self.m3 = validate_non_negative(m3, "m3")
        self.scale = validate_positive(scale, "scale")
        self.past_pi = _validate_past_pi(past_pi, self.m1)

    def target_logits(self, cosines):
        """``psi(m1 * arccos(c) + m2) - m3`` for target cosines ``c`` (unscaled)."""
        return margin_target(cosines, self.m1, self.m2, self.m3, self.past_pi)


@keras.saving.register_keras_serializable(package="keras_margins")
class NormFaceLoss(CombinedMarginLoss):
    """NormFace: cross-entropy over scaled cosines, ``CE(s * c, y)``.

    ``CombinedMarginLoss(1, 0, 0, scale)``; ``norm_face_loss`` is the functional form.

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

    config_parameters = ("scale",)

    def __init__(self, scale, reduction="sum_over_batch_size", name="norm_face_loss",
                 dtype=None):
        super().__init__(1.0, 0.0, 0.0, scale, reduction=reduction, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package="keras_margins")
class CosFaceLoss(CombinedMarginLoss):
    """CosFace / AM-Softmax: target logit ``s * (c_y - m)``.

    ``CombinedMarginLoss(1, 0, margin, scale)``; ``cos_face_loss`` is the functional form.

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

    config_parameters = ("margin", "scale")
    margin = property(lambda self: self.m3, doc="The additive cosine margin ``m3``.")

    def __init__(self, margin, scale, reduction="sum_over_batch_size",
                 name="cos_face_loss", dtype=None):
        super().__init__(1.0, 0.0, validate_non_negative(margin, "margin"), scale,
                         reduction=reduction, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package="keras_margins")
class ArcFaceLoss(CombinedMarginLoss):
    """ArcFace: target logit ``s * cos(theta_y + m)``.

    ``CombinedMarginLoss(1, margin, 0, scale)``. Where ``theta_y + m > pi``,
    ``cos(theta_y + m)`` would rise again as the sample moves further from its
    class; ``past_pi`` chooses what the target logit is there:

    * ``"monotone"`` (default): ``-cos(theta_y + m) - 2``, SphereFace's
      continuation: continuous, with a continuous slope, decreasing in ``theta``.
    * ``"insightface"``: ``cos(theta_y + m)`` where ``cos(theta_y) > cos(pi - m)``,
      else ``cos(theta_y) - m * sin(m)`` (InsightFace's ArcFace, the usual
      comparison). At ``m = 0.5`` it differs from ``"monotone"`` only for
      ``theta_y > pi - m``, by up to 0.178 in the target cosine (at
      ``theta_y = pi - m/2``; 0.117 at both ends), and it jumps down by 0.117
      at ``theta_y = pi - m``.
    * ``"easy"``: ``cos(theta_y + m)`` where ``cos(theta_y) > 0``, else
      ``cos(theta_y)`` (the "easy margin" option): no margin past 90 degrees,
      and a jump up by ``sin(m)`` (0.479 at ``m = 0.5``) at ``theta_y = pi/2``.

    ``arc_face_loss`` is the functional form.

    Args:
        margin: additive angular margin ``m`` in [0, pi) (0.5 in the ArcFace paper).
        scale: ``s`` > 0 (64 in the ArcFace paper).
        past_pi: ``"monotone"`` (default), ``"insightface"`` or ``"easy"``.
        reduction, name, dtype: as in ``keras.losses.Loss``.

    Example:
    ```python
    model.compile(loss=km.losses.ArcFaceLoss(margin=0.5, scale=64.0))
    # InsightFace's convention, e.g. to compare with its published numbers:
    model.compile(loss=km.losses.ArcFaceLoss(0.5, 64.0, past_pi="insightface"))
    ```

    Reference: Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face
    Recognition", CVPR 2019, Eq. 3.
    """

    config_parameters = ("margin", "scale", "past_pi")
    margin = property(lambda self: self.m2, doc="The additive angular margin ``m2``.")

    def __init__(self, margin, scale, past_pi="monotone", reduction="sum_over_batch_size",
                 name="arc_face_loss", dtype=None):
        super().__init__(1.0, validate_additive_angle(margin, "margin"), 0.0, scale,
                         past_pi=past_pi, reduction=reduction, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package="keras_margins")
class SphereFaceLoss(CombinedMarginLoss):
    """SphereFace with normalised features: target logit ``s * psi(m * theta_y)``.

    ``CombinedMarginLoss(margin, 0, 0, scale)``, ``psi(u) = (-1)^k cos(u) - 2k``,
    ``k = floor(u / pi)`` (SphereFace's monotone extension of ``cos(m theta)``);
    ``sphere_face_loss`` is the functional form.

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

    config_parameters = ("margin", "scale")
    margin = property(lambda self: self.m1, doc="The multiplicative angular margin ``m1``.")

    def __init__(self, margin, scale, reduction="sum_over_batch_size",
                 name="sphere_face_loss", dtype=None):
        super().__init__(validate_multiplicative_margin(margin, "margin"), 0.0, 0.0, scale,
                         reduction=reduction, name=name, dtype=dtype)
