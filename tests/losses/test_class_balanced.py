"""ClassBalancedLoss: numpy formula on the reference and tail labels, identities."""

import numpy as np
import pytest

import keras_margins as km
from backend_utils import loss_value_and_grad
from .helpers import (BASELINE_TAIL_LABELS, check_fit_logit_losses, check_reduces_to_cross_entropy,
                      check_reference_matches_numpy_formula, check_tail_labels_against_numpy)


TAIL_LABELS = BASELINE_TAIL_LABELS  # the baselines' tail labels
REFERENCE_KEYS = ["cb_softmax_beta0.9999", "cb_sigmoid_beta0.9999", "cb_focal_beta0.9999"]


@pytest.mark.parametrize("key", REFERENCE_KEYS)
def test_reference_matches_numpy_formula(reference, key):
    """The numpy formulas used for the tail-class test reproduce the references."""
    check_reference_matches_numpy_formula(reference, key)


@pytest.mark.parametrize("key", REFERENCE_KEYS)
def test_tail_labels_against_numpy(reference, key):
    check_tail_labels_against_numpy(reference, key)


@pytest.mark.parametrize("loss_factory", [
    lambda counts: km.losses.ClassBalancedLoss(counts, beta=0.0, loss_type="softmax"),
], ids=["class_balanced_beta0"])
def test_reduces_to_cross_entropy(reference, loss_factory):
    check_reduces_to_cross_entropy(reference, loss_factory)


def test_class_balanced_focal_gamma0_is_sigmoid(reference):
    counts = reference["inputs"]["cls_num_list"]
    logits = reference["inputs"]["logits"]
    sigmoid = km.losses.ClassBalancedLoss(counts, loss_type="sigmoid")
    focal = km.losses.ClassBalancedLoss(counts, loss_type="focal", gamma=0.0)
    np.testing.assert_allclose(loss_value_and_grad(focal, TAIL_LABELS, logits)[0],
                               loss_value_and_grad(sigmoid, TAIL_LABELS, logits)[0],
                               rtol=1e-6)


@pytest.mark.parametrize("name", ["cb_focal"])
def test_fit_logit_losses(fashion_mnist_lt_small, tmp_path, name):
    check_fit_logit_losses(fashion_mnist_lt_small, tmp_path, name)
