"""LogitAdjustedLoss: numpy formula on the reference and tail labels, tau 0."""

import numpy as np
import pytest

import keras_margins as km
from backend_utils import loss_value_and_grad
from .helpers import (BASELINE_TAIL_LABELS, _ce_value_and_grad, check_fit_logit_losses,
                      check_reference_matches_numpy_formula, check_tail_labels_against_numpy)


TAIL_LABELS = BASELINE_TAIL_LABELS  # the baselines' tail labels


@pytest.mark.parametrize("key", ["logit_adjustment_tau1.0", "logit_adjustment_tau0.5"])
def test_reference_matches_numpy_formula(reference, key):
    """The numpy formulas used for the tail-class test reproduce the references."""
    check_reference_matches_numpy_formula(reference, key)


@pytest.mark.parametrize("key", ["logit_adjustment_tau1.0", "logit_adjustment_tau0.5"])
def test_tail_labels_against_numpy(reference, key):
    check_tail_labels_against_numpy(reference, key)


@pytest.mark.parametrize("labels", [None, TAIL_LABELS])
def test_logit_adjusted_tau0_is_cross_entropy(reference, labels):
    labels = np.asarray(reference["inputs"]["labels"]) if labels is None else labels
    counts = reference["inputs"]["cls_num_list"]
    ce_value, ce_grad = _ce_value_and_grad(reference, labels)
    value, grad = loss_value_and_grad(km.losses.LogitAdjustedLoss(counts, tau=0.0),
                                      labels, reference["inputs"]["logits"])
    np.testing.assert_allclose(value, ce_value, rtol=1e-6)
    np.testing.assert_allclose(grad, ce_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["logit_adjusted"])
def test_fit_logit_losses(fashion_mnist_lt_small, tmp_path, name):
    check_fit_logit_losses(fashion_mnist_lt_small, tmp_path, name)
