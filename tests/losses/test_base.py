"""Behaviour shared by the losses (MarginLoss): extreme and float16 inputs, label
formats, configuration round trips and bad input.
"""

import json

import keras
import numpy as np
import pytest

import keras_margins as km
from backend_utils import loss_value_and_grad, to_numpy
from .helpers import COUNTS, inputs


# ---------------------------------------------------------------------- extreme inputs

EXTREME = np.array([[1.0, -1.0, 1.0, -1.0], [-1.0, -1.0, -1.0, 1.0], [-1.0, 1.0, 1.0, 1.0],
                    [0.999, -0.999, 0.0, 0.2]], "float32")
EXTREME_LABELS = np.array([1, 0, 0, 1])


@pytest.mark.parametrize("make", [
    lambda: km.losses.ArcFaceLoss(0.5, 64.0),
    lambda: km.losses.ArcFaceLoss(3.0, 64.0),
    lambda: km.losses.SphereFaceLoss(4.0, 64.0),
    lambda: km.losses.CombinedMarginLoss(1.35, 0.5, 0.2, 64.0),
    lambda: km.losses.CosFaceLoss(0.35, 64.0),
    lambda: km.losses.LMSoftmaxLoss(64.0),
    lambda: km.losses.GMSoftmaxLoss(1.0, 0.5, 0.0, 1.0, 64.0),
    lambda: km.losses.MaxMarginLoss(0.6, 1.5, 64.0, class_counts=[100, 50, 10, 1]),
    lambda: km.losses.KPSLoss([100, 50, 10, 1], scale=50.0, gradient_adjustment=True),
    lambda: km.losses.SampleMarginLoss(km.losses.NormFaceLoss(64.0)),
])
def test_extreme_cosines_are_finite_float32(make):
    value, grad = loss_value_and_grad(make(), EXTREME_LABELS, EXTREME, "float32")
    assert np.isfinite(value) and np.all(np.isfinite(grad)), (value, grad)


def test_float16_scores_compute_in_float32(reference):
    c, labels = inputs(reference)
    for loss in (km.losses.MaxMarginLoss(0.6, 1.5, 19.0), km.losses.KPSLoss(COUNTS),
                 km.losses.SampleMarginLoss(), km.losses.ArcFaceLoss(0.1, 64.0)):
        half = loss(labels, c.astype("float16"))
        assert keras.backend.standardize_dtype(half.dtype) == "float32"
        assert float(half) == pytest.approx(float(loss(labels, c)), rel=2e-2)


# ------------------------------------------------------------------------ label formats

def test_label_formats_agree(reference):
    c, labels = inputs(reference)
    for loss in (km.losses.MaxMarginLoss(0.6, 1.5, 19.0), km.losses.KPSLoss(COUNTS),
                 km.losses.LMSCELoss(), km.losses.ArcFaceLoss(0.2, 16.0)):
        sparse = float(loss(labels, c))
        assert float(loss(labels[:, None], c)) == pytest.approx(sparse)
        assert float(loss(np.eye(10, dtype="float32")[labels], c)) == pytest.approx(sparse)


def test_labels_one_hot_and_column(reference):
    inputs = reference["inputs"]
    labels = np.asarray(inputs["labels"])
    y_pred = np.concatenate([np.asarray(inputs["logits"]),
                             np.asarray(inputs["ib_features_l1"])[:, None]], -1)
    loss = km.losses.InfluenceBalancedLoss(inputs["cls_num_list"])
    sparse = to_numpy(loss(labels, y_pred.astype("float32")))
    one_hot = to_numpy(loss(np.eye(10)[labels], y_pred.astype("float32")))
    column = to_numpy(loss(labels[:, None], y_pred.astype("float32")))
    np.testing.assert_allclose(one_hot, sparse, rtol=1e-6)
    np.testing.assert_allclose(column, sparse, rtol=1e-6)


# ------------------------------------------------------------------ serialization / config

CONFIG_LOSSES = [
    lambda: km.losses.MaxMarginLoss(1.29, 1.528, 26.0, class_counts=COUNTS,
                                    ldam_max_margin=0.4, class_weights=[1.0] * 10),
    lambda: km.losses.MaxMarginLoss(0.6, 1.5, 19.0),
    lambda: km.losses.KPSLoss(COUNTS, max_margin=0.35, scale=16.0, n_base=40,
                              gradient_adjustment=True, max_scale=45.0),
    lambda: km.losses.LMSCELoss(0.5),
    lambda: km.losses.LMSoftmaxLoss(8.0),
    lambda: km.losses.GMSoftmaxLoss(1.2, 0.9, 0.1, -0.2, 12.0),
    lambda: km.losses.CombinedMarginLoss(1.2, 0.3, 0.1, 30.0),
    lambda: km.losses.NormFaceLoss(16.0),
    lambda: km.losses.CosFaceLoss(0.35, 64.0),
    lambda: km.losses.ArcFaceLoss(0.5, 64.0),
    lambda: km.losses.ArcFaceLoss(0.5, 64.0, past_pi="insightface"),
    lambda: km.losses.CombinedMarginLoss(1.0, 0.5, 0.1, 30.0, past_pi="easy"),
    lambda: km.losses.SphereFaceLoss(1.35, 30.0),
    lambda: km.losses.SampleMarginLoss(),
    lambda: km.losses.SampleMarginLoss(km.losses.LDAMLoss(COUNTS), weight=0.5),
    lambda: km.losses.SampleMarginLoss(keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), weight=0.25),
]


@pytest.mark.parametrize("make", CONFIG_LOSSES)
def test_config_round_trip(reference, make):
    c, labels = inputs(reference)
    loss = make()
    config = loss.get_config()
    json.dumps(config)
    clone = type(loss).from_config(config)
    assert clone.get_config() == config
    assert float(clone(labels, c)) == pytest.approx(float(loss(labels, c)), rel=1e-6)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is type(loss) and restored.get_config() == config


def test_get_config_round_trip(reference):
    counts = reference["inputs"]["cls_num_list"]
    for loss in (km.losses.FocalLoss(gamma=2.0, class_weights=[1.0] * 10),
                 km.losses.ClassBalancedLoss(counts, beta=0.99, loss_type="focal", gamma=0.5),
                 km.losses.LogitAdjustedLoss(counts, tau=0.5),
                 km.losses.InfluenceBalancedLoss(counts, alpha=100.0, gamma=1.0),
                 km.losses.EqualizationLossV2(10, gamma=10.0, mu=0.5, alpha=2.0)):
        restored = keras.losses.deserialize(keras.losses.serialize(loss))
        assert type(restored) is type(loss)
        assert restored.get_config() == loss.get_config()


# ------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("make, pattern", [
    (lambda: km.losses.MaxMarginLoss(-0.1, 1.5, 19.0), r"delta_neg.*-0\.1"),
    (lambda: km.losses.MaxMarginLoss(0.6, -1.0, 19.0), r"beta.*-1"),
    (lambda: km.losses.MaxMarginLoss(0.6, 1.5, 0.0), r"scale.*0"),
    (lambda: km.losses.MaxMarginLoss(0.6, 1.5, 19.0, class_counts=[5, 0]), r"class_counts"),
    (lambda: km.losses.MaxMarginLoss(0.6, 1.5, 19.0, COUNTS, ldam_max_margin=-1),
     r"ldam_max_margin.*-1"),
    (lambda: km.losses.KPSLoss(COUNTS, max_margin=-0.5), r"max_margin.*-0\.5"),
    (lambda: km.losses.KPSLoss(COUNTS, scale=-15.0), r"scale.*-15"),
    (lambda: km.losses.KPSLoss(COUNTS, n_base=1.0), r"n_base.*1"),
    (lambda: km.losses.KPSLoss(COUNTS, max_scale=10.0), r"max_scale.*10"),
    (lambda: km.losses.KPSLoss(COUNTS, gradient_adjustment="yes"), r"gradient_adjustment.*yes"),
    (lambda: km.losses.KPSLoss([100, float("nan")]), r"class_counts"),
    (lambda: km.losses.KPSLoss(COUNTS, class_weights=[1.0] * 3), r"class_weights"),
    (lambda: km.losses.LMSCELoss(-0.3), r"lam.*-0\.3"),
    (lambda: km.losses.LMSoftmaxLoss(0.0), r"scale.*0"),
    (lambda: km.losses.GMSoftmaxLoss(0.4, 0.4, 0, 0, 5.0), r"alpha1.*0\.4"),
    (lambda: km.losses.GMSoftmaxLoss(1.0, 1.5, 0, 0, 5.0), r"alpha2.*1\.5"),
    (lambda: km.losses.GMSoftmaxLoss(1.0, 1.0, float("nan"), 0, 5.0), r"beta1.*nan"),
    (lambda: km.losses.GMSoftmaxLoss(1.0, 1.0, 0, 0, -5.0), r"scale.*-5"),
    (lambda: km.losses.CombinedMarginLoss(0.5, 0, 0, 5.0), r"m1.*0\.5"),
    (lambda: km.losses.CombinedMarginLoss(1, 3.5, 0, 5.0), r"m2.*3\.5"),
    (lambda: km.losses.CombinedMarginLoss(1, 0, -0.2, 5.0), r"m3.*-0\.2"),
    (lambda: km.losses.NormFaceLoss(-1.0), r"scale.*-1"),
    (lambda: km.losses.CosFaceLoss(-0.35, 64.0), r"margin.*-0\.35"),
    (lambda: km.losses.ArcFaceLoss(4.0, 64.0), r"margin.*4"),
    (lambda: km.losses.ArcFaceLoss(0.5, 0.0), r"scale.*0"),
    (lambda: km.losses.ArcFaceLoss(0.5, 64.0, past_pi="clip"), r"past_pi.*clip"),
    (lambda: km.losses.CombinedMarginLoss(1.35, 0.3, 0.0, 30.0, past_pi="insightface"),
     r"past_pi.*m1 = 1"),
    (lambda: km.losses.SphereFaceLoss(0.5, 64.0), r"margin.*0\.5"),
    (lambda: km.losses.SampleMarginLoss("ce"), r"base_loss.*'ce'"),
    (lambda: km.losses.SampleMarginLoss(weight=-0.5), r"weight.*-0\.5"),
])
def test_bad_construction_raises(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


# Bad input.
BAD = [
    (lambda: km.losses.FocalLoss(gamma=-1.0), r"`gamma`.*-1"),
    (lambda: km.losses.FocalLoss(class_weights=[1.0, -1.0]), r"`class_weights`"),
    (lambda: km.losses.ClassBalancedLoss([10, 0, 5]), r"`class_counts`.*0"),
    (lambda: km.losses.ClassBalancedLoss([10, 5], beta=1.0), r"`beta`.*1\.0"),
    (lambda: km.losses.ClassBalancedLoss([10, 5], loss_type="softmx"), r"`loss_type`.*softmx"),
    (lambda: km.losses.ClassBalancedLoss([10, 5], loss_type="focal", gamma=-2),
     r"`gamma`.*-2"),
    (lambda: km.losses.LogitAdjustedLoss([10, 5], tau=-0.5), r"`tau`.*-0\.5"),
    (lambda: km.losses.LogitAdjustedLoss([10]), r"`class_counts`"),
    (lambda: km.losses.InfluenceBalancedLoss([10, 5], alpha=0), r"`alpha`.*0"),
    (lambda: km.losses.InfluenceBalancedLoss([10, 5], gamma=-1), r"`gamma`.*-1"),
    (lambda: km.losses.InfluenceBalancedLoss([10, 5.5]), r"`class_counts`.*5\.5"),
    (lambda: km.losses.EqualizationLossV2(num_classes=1), r"`num_classes`.*1"),
    (lambda: km.losses.EqualizationLossV2(num_classes=10, gamma=-3), r"`gamma`.*-3"),
    (lambda: km.losses.EqualizationLossV2(num_classes=10, alpha=-1), r"`alpha`.*-1"),
]


@pytest.mark.parametrize("factory,pattern", BAD)
def test_bad_arguments(factory, pattern):
    with pytest.raises(ValueError, match=pattern):
        factory()


def test_bad_call_inputs_raise(reference):
    c, labels = inputs(reference)
    with pytest.raises(ValueError, match="class_counts"):
        km.losses.KPSLoss(COUNTS[:5])(labels % 5, c)
    with pytest.raises(ValueError, match="label 10"):
        km.losses.MaxMarginLoss(0.6, 1.5, 19.0)(np.array([0, 1, 2, 3, 4, 5, 6, 10]), c)
    with pytest.raises(ValueError, match="y_pred"):
        km.losses.ArcFaceLoss(0.5, 64.0)(labels, c[0])


def test_wrong_number_of_classes(reference):
    logits = np.asarray(reference["inputs"]["logits"], dtype="float32")
    labels = reference["inputs"]["labels"]
    with pytest.raises(ValueError, match=r"`class_counts` has 3 entries"):
        km.losses.LogitAdjustedLoss([3, 2, 1])(labels, logits)
    with pytest.raises(ValueError, match=r"num_classes=4.*\(8, 10\)"):
        km.losses.EqualizationLossV2(num_classes=4)(labels, logits)
    with pytest.raises(ValueError, match=r"label 10"):
        km.losses.FocalLoss()(np.array([10] * 8), logits)
