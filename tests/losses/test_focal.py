"""FocalLoss: numpy formula on the reference and tail labels, gamma 0, DRW weights."""

import numpy as np
import pytest

import keras_margins as km
from backend_utils import loss_value_and_grad
from .helpers import (check_fit_logit_losses, check_reduces_to_cross_entropy,
                      check_reference_matches_numpy_formula, check_tail_labels_against_numpy)


@pytest.mark.parametrize("key", ["focal_ldamrepo_gamma1", "focal_ldamrepo_gamma1_drw_stage2"])
def test_reference_matches_numpy_formula(reference, key):
    """The numpy formulas used for the tail-class test reproduce the references."""
    check_reference_matches_numpy_formula(reference, key)


@pytest.mark.parametrize("key", ["focal_ldamrepo_gamma1", "focal_ldamrepo_gamma1_drw_stage2"])
def test_tail_labels_against_numpy(reference, key):
    check_tail_labels_against_numpy(reference, key)


@pytest.mark.parametrize("loss_factory", [
    lambda counts: km.losses.FocalLoss(gamma=0.0),
], ids=["focal_gamma0"])
def test_reduces_to_cross_entropy(reference, loss_factory):
    check_reduces_to_cross_entropy(reference, loss_factory)


def test_focal_class_weights_switch_with_drw(reference):
    """DRW switches FocalLoss's weights; they act inside the focal term."""
    counts = reference["inputs"]["cls_num_list"]
    entry = reference["losses"]["focal_ldamrepo_gamma1_drw_stage2"]
    loss = km.losses.FocalLoss(gamma=1.0)
    callback = km.callbacks.DeferredReweighting(counts, start_epoch=0)
    assert callback.accepts(loss)
    assert callback.set_stage(loss, True)
    value, _ = loss_value_and_grad(loss, reference["inputs"]["labels"],
                                   reference["inputs"]["logits"])
    np.testing.assert_allclose(value, float(entry["mean"]), rtol=1e-4)


@pytest.mark.parametrize("name", ["focal"])
def test_fit_logit_losses(fashion_mnist_lt_small, tmp_path, name):
    check_fit_logit_losses(fashion_mnist_lt_small, tmp_path, name)
