"""VSLoss: numpy formula (per sample and mean), identities, gradients, saving, bad input."""

import keras
import numpy as np
import pytest

import keras_margins as km
from backend_utils import fit_and_roundtrip, loss_value_and_grad, small_model, to_numpy
from .helpers import BASELINE_TAIL_LABELS, np_ce


def np_vs(x, y, counts, gamma, tau):
    """Kini et al. 2021: CE of z_j = (n_j / n_max)^gamma x_j + tau log(n_j / n)."""
    n = np.asarray(counts, float)
    return np_ce(x * (n / n.max()) ** gamma + tau * np.log(n / n.sum()), y)


def logit_inputs(reference):
    """(float64 logits, labels, counts) of the reference inputs (shared by the
    VS, LADE and label-aware smoothing tests)."""
    inputs = reference["inputs"]
    return (np.asarray(inputs["logits"], "float64"), np.asarray(inputs["labels"]),
            inputs["cls_num_list"])


def check_round_trip_and_saving(loss, small_loss, reference, tmp_path):
    """get_config / from_config, keras serialize, and a fitted 4-class model saved
    with ``small_loss`` compiled in."""
    x, labels, _ = logit_inputs(reference)
    clone = type(loss).from_config(loss.get_config())
    assert clone.get_config() == loss.get_config()
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert float(to_numpy(restored(labels, x))) == pytest.approx(float(to_numpy(loss(labels, x))))
    model = small_model(num_classes=4, cosine=False, input_shape=(6,))
    data = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    fit_and_roundtrip(model, small_loss, data, np.arange(16) % 4, tmp_path)


def check_16_bit_inputs(functional, formula, reference, dtype):
    """16-bit logits: float32 values equal to the formula on the rounded logits."""
    x, labels, counts = logit_inputs(reference)
    x16 = keras.ops.cast(x, dtype)
    values = functional(labels, x16, counts)
    assert keras.backend.standardize_dtype(values.dtype) == "float32"
    rounded = to_numpy(keras.ops.cast(x16, "float32")).astype("float64")
    np.testing.assert_allclose(to_numpy(values), formula(rounded, labels, counts),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gamma, tau", [(0.2, 1.2), (0.3, 1.0), (0.5, 0.0)])
@pytest.mark.parametrize("tail", [False, True])
def test_matches_numpy_formula(reference, gamma, tau, tail):
    x, labels, counts = logit_inputs(reference)
    labels = BASELINE_TAIL_LABELS if tail else labels
    expected = np_vs(x, labels, counts, gamma, tau)
    per_sample = to_numpy(km.losses.vs_loss(labels, x.astype("float32"), counts, gamma, tau))
    np.testing.assert_allclose(per_sample, expected, rtol=1e-5, atol=1e-6)
    loss = km.losses.VSLoss(counts, gamma=gamma, tau=tau)
    value, grad = loss_value_and_grad(loss, labels, x)
    assert float(value) == pytest.approx(expected.mean(), rel=1e-5)
    assert np.all(np.isfinite(grad))


def test_fixed_numbers():
    """Hand-checkable numbers: C = 2, counts (4, 1), gamma 1, tau 1."""
    # z = (x_0, x_1 / 4) + log(0.8, 0.2); x = (1, 2), y = 1: z = (1 + log .8, .5 + log .2)
    value = to_numpy(km.losses.vs_loss(np.array([1]), np.array([[1.0, 2.0]], "float32"),
                                       [4, 1], gamma=1.0, tau=1.0))
    z = np.array([1 + np.log(0.8), 0.5 + np.log(0.2)])
    assert float(value[0]) == pytest.approx(np.log(np.exp(z).sum()) - z[1], rel=1e-6)


@pytest.mark.parametrize("labels", [None, BASELINE_TAIL_LABELS])
def test_identities(reference, labels):
    x, reference_labels, counts = logit_inputs(reference)
    labels = reference_labels if labels is None else labels
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    plain = loss_value_and_grad(km.losses.VSLoss(counts, gamma=0.0, tau=0.0), labels, x)
    np.testing.assert_allclose(plain[0], loss_value_and_grad(ce, labels, x)[0], rtol=1e-6)
    for tau in (0.5, 1.0, 1.5):  # LA is VS with gamma = 0
        vs = loss_value_and_grad(km.losses.VSLoss(counts, gamma=0.0, tau=tau), labels, x)
        la = loss_value_and_grad(km.losses.LogitAdjustedLoss(counts, tau=tau), labels, x)
        np.testing.assert_allclose(vs[0], la[0], rtol=1e-6)
        np.testing.assert_allclose(vs[1], la[1], rtol=1e-5, atol=1e-7)


def test_scales_and_defaults():
    counts = [5000, 500, 50]
    np.testing.assert_allclose(km.losses.vs.vs_scales(counts, 0.2), [1.0, 0.1 ** 0.2, 0.01 ** 0.2])
    loss = km.losses.VSLoss(counts)
    assert (loss.gamma, loss.tau) == (0.2, 1.2)


def test_class_weights_weighted_mean(reference):
    x, labels, counts = logit_inputs(reference)
    weights = km.priors.class_balanced_weights(counts, 0.9999)
    values = np_vs(x, labels, counts, 0.2, 1.2)
    w = weights[labels]
    loss = km.losses.VSLoss(counts, class_weights=weights)
    assert float(to_numpy(loss(labels, x.astype("float32")))) == pytest.approx(
        np.sum(w * values) / np.sum(w), rel=1e-5)


def test_config_round_trip_and_saving(tmp_path, reference):
    counts = reference["inputs"]["cls_num_list"]
    check_round_trip_and_saving(km.losses.VSLoss(counts, gamma=0.3, tau=1.0),
                                km.losses.VSLoss([40, 20, 9, 5]), reference, tmp_path)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16_bit_inputs_compute_in_float32(reference, dtype):
    check_16_bit_inputs(km.losses.vs_loss, lambda x, y, n: np_vs(x, y, n, 0.2, 1.2),
                        reference, dtype)


@pytest.mark.parametrize("make, pattern", [
    (lambda: km.losses.VSLoss([10, 5, 2], gamma=-0.1), r"`gamma` must be >= 0, received -0\.1"),
    (lambda: km.losses.VSLoss([10, 5, 2], tau=-1.0), r"`tau` must be >= 0, received -1"),
    (lambda: km.losses.VSLoss([10, 0, 2]), r"`class_counts` must be positive"),
    (lambda: km.losses.vs_loss([0, 1], np.zeros((2, 4), "float32"), [10, 5, 2]),
     r"`scales` has 3 entries but y_pred has 4 classes"),
    (lambda: km.losses.VSLoss([10, 5, 2])(np.array([0, 1]), np.zeros((2, 4), "float32")),
     r"`class_counts` has 3 entries but y_pred has 4 classes"),
])
def test_bad_input(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()
