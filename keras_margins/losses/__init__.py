"""Keras losses for margin-based learning on imbalanced data.

Each loss is a configuration of ``keras_margins.ops.margin_softmax_cross_entropy``
(or, for the sigmoid baselines, of per-class binary cross-entropy), computes in
float32 under any dtype policy, and is registered for ``.keras`` saving.
"""

from keras_margins.losses.base import MarginLoss
from keras_margins.losses.class_balanced import ClassBalancedLoss
from keras_margins.losses.equalization import EqualizationLossV2, EqualizationStatistics
from keras_margins.losses.focal import FocalLoss
from keras_margins.losses.influence_balanced import InfluenceBalancedLoss
from keras_margins.losses.kps import KPSLoss
from keras_margins.losses.largest_margin import GMSoftmaxLoss, LMSoftmaxLoss, SampleMarginLoss
from keras_margins.losses.ldam import ELMLoss, LDAMLoss
from keras_margins.losses.lmsce import LMSCELoss
from keras_margins.losses.logit_adjusted import LogitAdjustedLoss
from keras_margins.losses.max_margin import MaxMarginLoss
from keras_margins.losses.normalized import (ArcFaceLoss, CombinedMarginLoss, CosFaceLoss,
                                             NormFaceLoss, SphereFaceLoss)

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
]
