"""LADELoss: numpy formula (batch loss and per-sample values), identities, gradients,
saving, 16-bit inputs, bad input."""

import numpy as np
import pytest

import keras_margins as km
from backend_utils import loss_value_and_grad, to_numpy
from .helpers import BASELINE_TAIL_LABELS, np_ce, numeric_grad
from .test_vs import check_16_bit_inputs, check_round_trip_and_saving, logit_inputs


def np_lade_terms(x, y, counts, remine_lambda):
    """Hong et al. 2021: LADE-CE per sample and the LADER (+ ReMINE) batch term."""
    n = np.asarray(counts, float)
    prior = n / n.sum()
    batch, classes = x.shape
    ce = np_ce(x + np.log(prior), y)
    regulariser = 0.0
    for j in range(classes):
        members = x[y == j, j]
        first = members.mean() if members.size else 0.0
        shifted = x[:, j] - np.log(prior[j]) + np.log(1.0 / classes)
        second = np.log(np.mean(np.exp(shifted)))
        regulariser -= prior[j] * (first - second - remine_lambda * second ** 2)
    return ce, regulariser


def sum_terms(terms, alpha):
    """Per-sample values CE_i + alpha R."""
    return terms[0] + alpha * terms[1]


def np_lade(x, y, counts, alpha, remine_lambda):
    ce, regulariser = np_lade_terms(x, y, counts, remine_lambda)
    return ce.mean() + alpha * regulariser


@pytest.mark.parametrize("alpha, remine_lambda", [(0.1, 0.1), (1.0, 0.0), (0.5, 1.0)])
@pytest.mark.parametrize("tail", [False, True])
def test_matches_numpy_formula(reference, alpha, remine_lambda, tail):
    x, labels, counts = logit_inputs(reference)
    labels = BASELINE_TAIL_LABELS if tail else labels  # tail: most classes absent
    ce, regulariser = np_lade_terms(x, labels, counts, remine_lambda)
    per_sample = to_numpy(km.losses.lade_loss(labels, x.astype("float32"), counts, alpha,
                                              remine_lambda))
    # documented per-sample values: CE_i + alpha R (their mean is the loss)
    np.testing.assert_allclose(per_sample, ce + alpha * regulariser,
                               rtol=1e-5, atol=1e-5)
    loss = km.losses.LADELoss(counts, alpha=alpha, remine_lambda=remine_lambda)
    expected = np_lade(x, labels, counts, alpha, remine_lambda)
    value, grad = loss_value_and_grad(loss, labels, x)
    assert float(value) == pytest.approx(expected, rel=1e-5)
    expected_grad = numeric_grad(lambda z: np_lade(z, labels, counts, alpha, remine_lambda), x)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-3, atol=1e-5)


def test_regulariser_couples_the_batch(reference):
    """The batch term moves every sample's value: it is not a per-sample loss."""
    x, labels, counts = logit_inputs(reference)
    full = to_numpy(km.losses.lade_loss(labels, x, counts, alpha=1.0))
    half = to_numpy(km.losses.lade_loss(labels[:4], x[:4], counts, alpha=1.0))
    assert np.max(np.abs(full[:4] - half)) > 1e-4


@pytest.mark.parametrize("labels", [None, BASELINE_TAIL_LABELS])
def test_alpha0_is_logit_adjusted_tau1(reference, labels):
    x, reference_labels, counts = logit_inputs(reference)
    labels = reference_labels if labels is None else labels
    lade = loss_value_and_grad(km.losses.LADELoss(counts, alpha=0.0), labels, x)
    la = loss_value_and_grad(km.losses.LogitAdjustedLoss(counts, tau=1.0), labels, x)
    np.testing.assert_allclose(lade[0], la[0], rtol=1e-6)
    np.testing.assert_allclose(lade[1], la[1], rtol=1e-5, atol=1e-7)


def test_defaults():
    loss = km.losses.LADELoss([50, 10, 2])
    assert (loss.alpha, loss.remine_lambda) == (0.1, 0.1)
    assert loss.reduction == "sum_over_batch_size"


def test_config_round_trip_and_saving(tmp_path, reference):
    counts = reference["inputs"]["cls_num_list"]
    check_round_trip_and_saving(km.losses.LADELoss(counts, alpha=0.3, remine_lambda=0.2),
                                km.losses.LADELoss([40, 20, 9, 5]), reference, tmp_path)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16_bit_inputs_compute_in_float32(reference, dtype):
    check_16_bit_inputs(km.losses.lade_loss, lambda x, y, n: sum_terms(np_lade_terms(x, y, n, 0.1), 0.1),
                        reference, dtype)


@pytest.mark.parametrize("make, pattern", [
    (lambda: km.losses.LADELoss([10, 5, 2], alpha=-0.1), r"`alpha` must be >= 0, received -0\.1"),
    (lambda: km.losses.LADELoss([10, 5, 2], remine_lambda=-1),
     r"`remine_lambda` must be >= 0, received -1"),
    (lambda: km.losses.lade_loss([0, 1], np.zeros((2, 3), "float32"), [10, 5, 2],
                                 alpha=float("nan")), r"`alpha` must be finite"),
    (lambda: km.losses.lade_loss([0, 1], np.zeros((2, 4), "float32"), [10, 5, 2]),
     r"`offsets` has 3 entries but y_pred has 4 classes"),
    (lambda: km.losses.LADELoss([10, 5, 2])(np.array([0, 1]), np.zeros((2, 4), "float32")),
     r"`class_counts` has 3 entries but y_pred has 4 classes"),
])
def test_bad_input(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()
