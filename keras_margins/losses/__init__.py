"""Keras losses for margin-based learning on imbalanced data.

Each loss is a rule run by one pipeline (``keras_margins.losses.base``): the
margin-softmax losses configure ``keras_margins.ops.margin_softmax_cross_entropy``
through hooks (adjusted target score, row scale, target in or out of the
denominator), the sigmoid baselines their per-class binary cross-entropy. Every
loss computes in float32 under any dtype policy, is registered for ``.keras``
saving, and has a functional form returning per-sample values (no reduction),
as ``keras.losses.sparse_categorical_crossentropy`` beside its class::

    per_sample = km.losses.ldam_loss(y_true, cosines, class_counts=counts)
"""

from keras_margins.losses.base import MarginLoss
from keras_margins.losses.class_balanced import ClassBalancedLoss, class_balanced_loss
from keras_margins.losses.equalization import (EqualizationLossV2, EqualizationStatistics,
                                               equalization_loss_v2)
from keras_margins.losses.focal import FocalLoss, focal_loss
from keras_margins.losses.influence_balanced import (InfluenceBalancedLoss,
                                                     influence_balanced_loss)
from keras_margins.losses.kps import KPSLoss, kps_loss
from keras_margins.losses.label_aware_smoothing import (LabelAwareSmoothingLoss,
                                                        label_aware_smoothing_loss)
from keras_margins.losses.lade import LADELoss, lade_loss
from keras_margins.losses.largest_margin import (GMSoftmaxLoss, LMSoftmaxLoss,
                                                 SampleMarginLoss, gm_softmax_loss,
                                                 lm_softmax_loss, sample_margin_loss)
from keras_margins.losses.ldam import ELMLoss, LDAMLoss, elm_loss, ldam_loss
from keras_margins.losses.lmsce import LMSCELoss, lmsce_loss
from keras_margins.losses.logit_adjusted import LogitAdjustedLoss, logit_adjusted_loss
from keras_margins.losses.max_margin import MaxMarginLoss, max_margin_loss
from keras_margins.losses.vs import VSLoss, vs_loss
from keras_margins.losses.normalized import (ArcFaceLoss, CombinedMarginLoss, CosFaceLoss,
                                             NormFaceLoss, SphereFaceLoss, arc_face_loss,
                                             combined_margin_loss, cos_face_loss,
                                             norm_face_loss, sphere_face_loss)

__all__ = [
    # base
    "MarginLoss",
    # seed papers
    "LDAMLoss", "ELMLoss", "MaxMarginLoss", "KPSLoss", "LMSCELoss",
    "LMSoftmaxLoss", "GMSoftmaxLoss", "SampleMarginLoss",
    "CombinedMarginLoss", "NormFaceLoss", "CosFaceLoss", "ArcFaceLoss", "SphereFaceLoss",
    # baselines
    "FocalLoss", "ClassBalancedLoss", "LogitAdjustedLoss", "InfluenceBalancedLoss",
    "EqualizationLossV2", "EqualizationStatistics",
    "VSLoss", "LADELoss", "LabelAwareSmoothingLoss",
    # functional forms: per-sample values, no reduction
    "ldam_loss", "elm_loss", "max_margin_loss", "kps_loss", "lmsce_loss",
    "lm_softmax_loss", "gm_softmax_loss", "sample_margin_loss",
    "combined_margin_loss", "norm_face_loss", "cos_face_loss", "arc_face_loss",
    "sphere_face_loss", "focal_loss", "class_balanced_loss", "logit_adjusted_loss",
    "influence_balanced_loss", "equalization_loss_v2",
    "vs_loss", "lade_loss", "label_aware_smoothing_loss",
]
