"""MaxMarginLoss: numpy formulas, no gradient through the margin, zero distance."""

import keras
import numpy as np
import pytest

import keras_margins as km
from backend_utils import loss_value_and_grad, to_numpy
from .helpers import (COUNTS, assert_same, check_fit_and_roundtrip, check_matches_numpy_formula,
                      inputs)


@pytest.mark.parametrize("name", ["mm", "mm_ldam_drw"])
def test_matches_numpy_formula(reference, name):
    check_matches_numpy_formula(reference, name)


def test_max_margin_has_no_gradient_through_margin(reference):
    c, labels = inputs(reference)
    loss = km.losses.MaxMarginLoss(0.6, 1.5, 19.0, class_counts=COUNTS)
    delta = to_numpy(loss.sample_margins(keras.ops.convert_to_tensor(labels, "int32"),
                                         keras.ops.convert_to_tensor(c)))
    rows = np.arange(len(labels))
    shifted = np.zeros_like(c)
    shifted[rows, labels] = delta
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    # Same value; gradient of CE over (c - constant shift) equals MM's gradient.
    assert_same(loss_value_and_grad(loss, labels, c),
                loss_value_and_grad(
                    lambda y, z: ce(y, 19.0 * keras.ops.subtract(z, shifted)), labels, c),
                rtol=1e-5)
    assert np.all(delta > 0) and np.all(delta < 1)


def test_max_margin_zero_distance_has_zero_margin():
    c = np.array([[0.5, 0.5, -0.2], [0.1, 0.7, 0.3]], "float32")
    labels = np.array([0, 1])
    loss = km.losses.MaxMarginLoss(0.6, 1.5, 10.0)
    delta = to_numpy(loss.sample_margins(keras.ops.convert_to_tensor(labels, "int32"),
                                         keras.ops.convert_to_tensor(c)))
    assert delta[0] == 0.0
    assert delta[1] == pytest.approx(np.exp(-0.4 - 0.9), rel=1e-5)


@pytest.mark.parametrize("name", ["mm_ldam_drw"])
def test_fit_and_roundtrip(fashion_mnist_lt_small, tmp_path, name):
    check_fit_and_roundtrip(fashion_mnist_lt_small, tmp_path, name)
