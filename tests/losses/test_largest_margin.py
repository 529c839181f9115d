"""LM-Softmax, GM-Softmax and the sample-margin regulariser (losses.largest_margin)."""

import keras
import numpy as np
import pytest

import keras_margins as km
from backend_utils import loss_value_and_grad
from .helpers import (COUNTS, DRW, assert_same, check_fit_and_roundtrip,
                      check_matches_numpy_formula, inputs, np_sample_margin)


@pytest.mark.parametrize("name", [
    "gm_softmax",
    "lm_softmax",
    "sample_margin",
    "sample_margin_plus_normface",
])
def test_matches_numpy_formula(reference, name):
    check_matches_numpy_formula(reference, name)


def test_gm_softmax_offsets_are_cosface(reference):
    """(1, 1, -s*m, -s*m) shifts the target by -m in numerator and denominator: CosFace."""
    c, labels = inputs(reference)
    s, m = 10.0, 0.2
    gm = float(km.losses.GMSoftmaxLoss(1, 1, -s * m, -s * m, s)(labels, c))
    assert gm == pytest.approx(float(km.losses.CosFaceLoss(m, s)(labels, c)), rel=1e-5)


def test_sample_margin_adds_weighted_regulariser(reference):
    c, labels = inputs(reference)
    base = km.losses.ArcFaceLoss(0.1, 5.0)
    rsm = km.losses.SampleMarginLoss()
    combined = km.losses.SampleMarginLoss(base, weight=0.5)
    v1, g1 = loss_value_and_grad(combined, labels, c)
    vb, gb = loss_value_and_grad(base, labels, c)
    vr, gr = loss_value_and_grad(rsm, labels, c)
    assert v1 == pytest.approx(vb + 0.5 * vr, rel=1e-6)
    np.testing.assert_allclose(g1, gb + 0.5 * gr, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "none"])
def test_sample_margin_fused_cross_entropy_equals_the_two_losses(reference, reduction):
    """CE base on logits: the one-pass sum equals base + weight * R_sm (value,
    gradient, sample weights); a base with another reduction is not fused."""
    x, labels = inputs(reference, "logits")
    sample_weight = np.linspace(0.2, 1.7, len(labels)).astype("float32")
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction)
    fused = km.losses.SampleMarginLoss(ce, weight=0.5, reduction=reduction)
    assert fused._fuses_cross_entropy()
    rsm = km.losses.SampleMarginLoss(reduction=reduction)

    def separate(y, z):
        return (ce(y, z, sample_weight=sample_weight)
                + 0.5 * rsm(y, z, sample_weight=sample_weight))

    def reduce_sum(loss):
        return lambda y, z: keras.ops.sum(loss(y, z))

    got = loss_value_and_grad(
        reduce_sum(lambda y, z: fused(y, z, sample_weight=sample_weight)), labels, x)
    want = loss_value_and_grad(reduce_sum(separate), labels, x)
    assert_same(got, want, rtol=1e-5, atol=1e-6)
    # not fused: different reduction, probabilities, or ignore_class
    for base, reduction in (
            (keras.losses.SparseCategoricalCrossentropy(from_logits=True), "sum"),
            (keras.losses.SparseCategoricalCrossentropy(from_logits=False), "sum_over_batch_size"),
            (keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0),
             "sum_over_batch_size")):
        assert not km.losses.SampleMarginLoss(base, reduction=reduction)._fuses_cross_entropy()


def test_sample_margin_keeps_base_class_weights(reference):
    c, labels = inputs(reference)
    weights = np.asarray(reference["class_lists"][DRW])
    base = km.losses.LDAMLoss(COUNTS, class_weights=weights)
    combined = km.losses.SampleMarginLoss(base, weight=0.5)
    expected = float(base(labels, c)) + 0.5 * np_sample_margin(c.astype(float), labels)
    assert float(combined(labels, c)) == pytest.approx(expected, rel=1e-5)
    drw = km.callbacks.find_losses(type("M", (), {"loss": combined})(),
                                   lambda loss: getattr(loss, "accepts_class_weights", False))
    assert drw == [base]


def test_lm_softmax_scale_64_float32_is_stable():
    """Target at -1, others at +1: the naive form overflows exp(128) in float32."""
    c = np.array([[-1.0, 1.0, 1.0, 1.0], [1.0, -1.0, -1.0, -1.0]], "float32")
    labels = np.array([0, 0])
    value, grad = loss_value_and_grad(km.losses.LMSoftmaxLoss(64.0), labels, c)
    expected = np.mean([2.0 + np.log(3) / 64, -2.0 + np.log(3) / 64])
    assert value == pytest.approx(expected, rel=1e-5)
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("name", ["gm_softmax", "lm_softmax_zero_centroid", "sample_margin"])
def test_fit_and_roundtrip(fashion_mnist_lt_small, tmp_path, name):
    check_fit_and_roundtrip(fashion_mnist_lt_small, tmp_path, name)
