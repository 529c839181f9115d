"""LMSCELoss: tail labels against numpy, zero lambda, large logits."""

import keras
import numpy as np
import pytest

import keras_margins as km
from backend_utils import loss_value_and_grad
from .helpers import TAIL_LABELS, assert_same, check_fit_and_roundtrip, inputs, np_lmsce


def test_lmsce_tail_labels_match_numpy(reference):
    x, _ = inputs(reference, "logits", "float64")
    for lam in (0.3, 1.0):
        loss = km.losses.LMSCELoss(lam)
        expected = np_lmsce(x, TAIL_LABELS, lam)
        assert float(loss(TAIL_LABELS, x.astype("float32"))) == pytest.approx(expected, rel=2e-5)


def test_lmsce_with_zero_lambda_is_cross_entropy(reference):
    x, labels = inputs(reference, "logits")
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    assert_same(loss_value_and_grad(km.losses.LMSCELoss(0.0), labels, x),
                loss_value_and_grad(ce, labels, x), rtol=1e-5)


def test_lmsce_large_logits_are_finite():
    x = np.array([[300.0, -300.0, 0.0, 80.0], [-100.0, 100.0, 100.0, -100.0]], "float32")
    value, grad = loss_value_and_grad(km.losses.LMSCELoss(1.0), np.array([1, 0]), x)
    assert np.isfinite(value) and np.all(np.isfinite(grad))


@pytest.mark.parametrize("name", ["lmsce"])
def test_fit_and_roundtrip(fashion_mnist_lt_small, tmp_path, name):
    check_fit_and_roundtrip(fashion_mnist_lt_small, tmp_path, name)
