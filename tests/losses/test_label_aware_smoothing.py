"""LabelAwareSmoothingLoss: numpy formula, schedules, identities, gradients, saving, bad input."""

import keras
import numpy as np
import pytest

import keras_margins as km
from backend_utils import loss_value_and_grad, to_numpy
from .helpers import BASELINE_TAIL_LABELS, np_lse
from .test_vs import check_16_bit_inputs, check_round_trip_and_saving, logit_inputs


def np_eps(counts, eps_max, eps_min, shape):
    """Zhong et al. 2021, Eq. 6: eps_y from the count's position between n_K and n_1."""
    n = np.asarray(counts, float)
    angle = (n - n.min()) * np.pi / (2 * (n.max() - n.min()))
    f = {"concave": np.sin(angle), "linear": (n - n.min()) / (n.max() - n.min()),
         "convex": 1 - np.cos(angle)}[shape]
    return eps_min + (eps_max - eps_min) * f


def np_las(x, y, counts, eps_max, eps_min, shape):
    """Cross-entropy against q = (1 - eps_y) e_y + eps_y / C."""
    eps = np_eps(counts, eps_max, eps_min, shape)[y]
    classes = x.shape[1]
    q = (1 - eps)[:, None] * np.eye(classes)[y] + eps[:, None] / classes
    log_softmax = x - np_lse(x)[:, None]
    return -(q * log_softmax).sum(-1)


@pytest.mark.parametrize("shape", ["concave", "linear", "convex"])
@pytest.mark.parametrize("tail", [False, True])
def test_matches_numpy_formula(reference, shape, tail):
    x, labels, counts = logit_inputs(reference)
    labels = BASELINE_TAIL_LABELS if tail else labels
    expected = np_las(x, labels, counts, 0.4, 0.1, shape)
    per_sample = to_numpy(km.losses.label_aware_smoothing_loss(
        labels, x.astype("float32"), counts, 0.4, 0.1, shape))
    np.testing.assert_allclose(per_sample, expected, rtol=1e-5, atol=1e-6)
    loss = km.losses.LabelAwareSmoothingLoss(counts, eps_max=0.4, eps_min=0.1, shape=shape)
    value, grad = loss_value_and_grad(loss, labels, x)
    assert float(value) == pytest.approx(expected.mean(), rel=1e-5)
    assert np.all(np.isfinite(grad))


def test_schedule_values():
    counts = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    for shape in ("concave", "linear", "convex"):
        eps = km.losses.label_aware_smoothing.label_aware_smoothing(counts, 0.3, 0.0, shape)
        np.testing.assert_allclose(eps, np_eps(counts, 0.3, 0.0, shape), rtol=1e-12)
        assert eps[0] == pytest.approx(0.3) and eps[-1] == pytest.approx(0.0)
        assert np.all(np.diff(eps) <= 0)  # head classes smoothed most
    # concave above linear above convex in between
    concave, linear, convex = (km.losses.label_aware_smoothing.label_aware_smoothing(
        counts, 0.3, 0.0, s) for s in ("concave", "linear", "convex"))
    assert np.all(concave[1:-1] > linear[1:-1]) and np.all(linear[1:-1] > convex[1:-1])
    # all counts equal: every class is a head class
    np.testing.assert_allclose(km.losses.label_aware_smoothing.label_aware_smoothing(
        [7, 7, 7], 0.3, 0.1), [0.3] * 3)


@pytest.mark.parametrize("labels", [None, BASELINE_TAIL_LABELS])
def test_identities(reference, labels):
    x, reference_labels, counts = logit_inputs(reference)
    labels = reference_labels if labels is None else labels
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    plain = loss_value_and_grad(km.losses.LabelAwareSmoothingLoss(counts, 0.0, 0.0), labels, x)
    want = loss_value_and_grad(ce, labels, x)
    np.testing.assert_allclose(plain[0], want[0], rtol=1e-6)
    np.testing.assert_allclose(plain[1], want[1], rtol=1e-5, atol=1e-7)
    # equal eps everywhere: Keras' label smoothing (one-hot targets, eps / C on all classes)
    smooth = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2)
    uniform = km.losses.LabelAwareSmoothingLoss(counts, 0.2, 0.2)
    np.testing.assert_allclose(float(to_numpy(uniform(labels, x))),
                               float(to_numpy(smooth(np.eye(10)[labels], x))), rtol=1e-5)


def test_defaults_and_class_weights(reference):
    x, labels, counts = logit_inputs(reference)
    loss = km.losses.LabelAwareSmoothingLoss(counts)
    assert (loss.eps_max, loss.eps_min, loss.shape) == (0.3, 0.0, "concave")
    weights = km.priors.class_balanced_weights(counts, 0.9999)
    values = np_las(x, labels, counts, 0.3, 0.0, "concave")
    w = weights[labels]
    weighted = km.losses.LabelAwareSmoothingLoss(counts, class_weights=weights)
    assert float(to_numpy(weighted(labels, x))) == pytest.approx(
        np.sum(w * values) / np.sum(w), rel=1e-5)


def test_config_round_trip_and_saving(tmp_path, reference):
    counts = reference["inputs"]["cls_num_list"]
    check_round_trip_and_saving(km.losses.LabelAwareSmoothingLoss(counts, 0.4, 0.1, "convex"),
                                km.losses.LabelAwareSmoothingLoss([40, 20, 9, 5]), reference, tmp_path)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16_bit_inputs_compute_in_float32(reference, dtype):
    check_16_bit_inputs(km.losses.label_aware_smoothing_loss, lambda x, y, n: np_las(x, y, n, 0.3, 0.0, "concave"),
                        reference, dtype)


@pytest.mark.parametrize("make, pattern", [
    (lambda: km.losses.LabelAwareSmoothingLoss([10, 5, 2], eps_max=1.5),
     r"`eps_max` must be in \[0, 1\], received 1\.5"),
    (lambda: km.losses.LabelAwareSmoothingLoss([10, 5, 2], eps_min=-0.1),
     r"`eps_min` must be in \[0, 1\], received -0\.1"),
    (lambda: km.losses.LabelAwareSmoothingLoss([10, 5, 2], eps_max=0.1, eps_min=0.2),
     r"`eps_min` \(0\.2\) must be <= `eps_max` \(0\.1\)"),
    (lambda: km.losses.LabelAwareSmoothingLoss([10, 5, 2], shape="concav"),
     r"`shape` must be one of .*concave.*received 'concav'"),
    (lambda: km.losses.label_aware_smoothing_loss([0, 1], np.zeros((2, 4), "float32"),
                                                  [10, 5, 2]),
     r"`smoothing` has 3 entries but y_pred has 4 classes"),
    (lambda: km.losses.LabelAwareSmoothingLoss([10, 5, 2])(np.array([0, 1]),
                                                           np.zeros((2, 4), "float32")),
     r"`class_counts` has 3 entries but y_pred has 4 classes"),
])
def test_bad_input(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()
