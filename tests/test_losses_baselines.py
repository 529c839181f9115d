"""Baselines: focal, class-balanced, logit-adjusted, influence-balanced, EQLv2.

Reference values come from the authors' code (../shared/reference); the
tail-class checks use the numpy implementations of SPEC.md's formulas below.
"""

import keras
import numpy as np
import pytest

import keras_margins as km
from backend_utils import (BACKEND, fit_and_roundtrip, float64_enabled,
                           loss_value_and_grad, to_numpy, value_and_grad)

TAIL_LABELS = np.array([8, 9, 1, 9, 3, 8, 5, 9])


# --------------------------------------------------------------------------
# Independent numpy implementations of SPEC.md "Baselines the seeds compare against".
def _lse(z):
    m = z.max(-1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(-1, keepdims=True)))[:, 0]


def _ce(x, y):
    return _lse(x) - x[np.arange(len(y)), y]


def _onehot(y, c):
    return np.eye(c)[y]


def np_focal(x, y, gamma, weights=None):
    ce = _ce(x, y) * (1.0 if weights is None else np.asarray(weights)[y])
    return np.mean((1.0 - np.exp(-ce)) ** gamma * ce)


def np_class_balanced(x, y, counts, beta, loss_type, gamma):
    counts = np.asarray(counts, float)
    w = (1.0 - beta) / (1.0 - beta ** counts)
    w = w * len(counts) / w.sum()
    if loss_type == "softmax":
        return np.mean(w[y] * _ce(x, y))
    t = _onehot(y, x.shape[1])
    p = 1.0 / (1.0 + np.exp(-x))
    bce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    if loss_type == "focal":
        bce = bce * (1.0 - np.where(t == 1, p, 1 - p)) ** gamma
    return np.sum(w[y][:, None] * bce) / len(y)


def np_logit_adjusted(x, y, counts, tau):
    pi = np.asarray(counts, float) / np.sum(counts)
    return np.mean(_ce(x + np.log(pi ** tau + 1e-12), y))


def np_influence_balanced(y_pred, y, counts, alpha, gamma):
    x, h = y_pred[:, :-1], y_pred[:, -1]
    w = 1.0 / np.asarray(counts, float)
    w = w * len(counts) / w.sum()
    ce = w[y] * _ce(x, y)
    softmax = np.exp(x - _lse(x)[:, None])
    ib = alpha / (np.abs(softmax - _onehot(y, x.shape[1])).sum(1) * h + 0.001)
    loss = ce * ib
    if gamma is not None:
        loss = loss * (1.0 - np.exp(-ce)) ** gamma
    return np.mean(loss)


def numeric_grad(function, x, step=1e-6):
    grad = np.zeros_like(x)
    for index in np.ndindex(*x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += step
        minus[index] -= step
        grad[index] = (function(plus) - function(minus)) / (2 * step)
    return grad


# --------------------------------------------------------------------------
# Reference entries -> (loss, y_pred, numpy function of (y_pred, labels)).
REFERENCE_KEYS = [
    "focal_ldamrepo_gamma1", "focal_ldamrepo_gamma1_drw_stage2",
    "cb_softmax_beta0.9999", "cb_sigmoid_beta0.9999", "cb_focal_beta0.9999",
    "logit_adjustment_tau1.0", "logit_adjustment_tau0.5",
    "ib_alpha1000_ibreweight", "ib_focal_alpha1000_gamma1_ibreweight",
]


def build_case(reference, key):
    entry = reference["losses"][key]
    inputs = reference["inputs"]
    hp = entry["hyperparams"]
    counts = inputs["cls_num_list"]
    logits = np.asarray(inputs["logits"], dtype="float64")
    if key.startswith("focal"):
        loss = km.losses.FocalLoss(gamma=hp["gamma"], class_weights=hp["weight"])
        return loss, logits, lambda z, y: np_focal(z, y, hp["gamma"], hp["weight"])
    if key.startswith("cb_"):
        loss_type = key.split("_")[1]
        gamma = hp["gamma"] if hp["gamma"] is not None else 1.0
        loss = km.losses.ClassBalancedLoss(counts, beta=hp["beta"], loss_type=loss_type,
                                           gamma=gamma)
        np.testing.assert_allclose(loss.weights, hp["weights"], rtol=1e-9)
        return loss, logits, lambda z, y: np_class_balanced(
            z, y, counts, hp["beta"], loss_type, gamma)
    if key.startswith("logit_adjustment"):
        np.testing.assert_allclose(km.priors.priors(counts), hp["base_probs"], rtol=1e-9)
        loss = km.losses.LogitAdjustedLoss(counts, tau=hp["tau"])
        return loss, logits, lambda z, y: np_logit_adjusted(z, y, counts, hp["tau"])
    assert key.startswith("ib_")
    gamma = hp.get("gamma")
    loss = km.losses.InfluenceBalancedLoss(counts, alpha=hp["alpha"], gamma=gamma,
                                           epsilon=hp["epsilon"])
    np.testing.assert_allclose(loss.weights, hp["weight"], rtol=1e-9)
    y_pred = np.concatenate([logits, np.asarray(inputs["ib_features_l1"])[:, None]], -1)
    return loss, y_pred, lambda z, y: np_influence_balanced(z, y, counts, hp["alpha"], gamma)


def _grad_columns(grad, key):
    return grad[:, :-1] if key.startswith("ib_") else grad


@pytest.mark.parametrize("key", REFERENCE_KEYS)
def test_reference_float32(reference, key):
    entry = reference["losses"][key]
    loss, y_pred, _ = build_case(reference, key)
    labels = np.asarray(reference["inputs"]["labels"])
    value, grad = loss_value_and_grad(loss, labels, y_pred, "float32")
    # The LA / CB references were computed in float32 by TensorFlow: allow
    # float32 round-off on near-zero gradient entries.
    atol = 1e-5 if entry["dtype"] == "float32" else 1e-6
    np.testing.assert_allclose(value, float(entry["mean"]), rtol=1e-4)
    np.testing.assert_allclose(_grad_columns(grad, key), np.asarray(entry["grad"]),
                               rtol=1e-4, atol=atol)


@pytest.mark.parametrize("key", [k for k in REFERENCE_KEYS
                                 if not k.startswith(("cb_", "logit_adjustment"))])
def test_reference_float64(reference, key):
    entry = reference["losses"][key]
    assert entry["dtype"] == "float64"
    with float64_enabled():
        loss, y_pred, _ = build_case(reference, key)
        loss = type(loss).from_config({**loss.get_config(), "dtype": "float64"})
        labels = np.asarray(reference["inputs"]["labels"])
        value, grad = loss_value_and_grad(loss, labels, y_pred, "float64")
        assert grad.dtype == np.float64
    np.testing.assert_allclose(value, float(entry["mean"]), rtol=1e-6)
    np.testing.assert_allclose(_grad_columns(grad, key), np.asarray(entry["grad"]),
                               rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("key", REFERENCE_KEYS)
def test_reference_matches_numpy_formula(reference, key):
    """The numpy formulas used for the tail-class test reproduce the references."""
    entry = reference["losses"][key]
    _, y_pred, formula = build_case(reference, key)
    labels = np.asarray(reference["inputs"]["labels"])
    rtol = 1e-6 if entry["dtype"] == "float32" else 1e-12
    np.testing.assert_allclose(formula(y_pred, labels), float(entry["mean"]), rtol=rtol)


@pytest.mark.parametrize("key", REFERENCE_KEYS)
def test_tail_labels_against_numpy(reference, key):
    loss, y_pred, formula = build_case(reference, key)
    labels = TAIL_LABELS
    expected = formula(y_pred, labels)
    expected_grad = numeric_grad(lambda z: formula(z, labels), y_pred)
    with float64_enabled():
        loss64 = type(loss).from_config({**loss.get_config(), "dtype": "float64"})
        value, grad = loss_value_and_grad(loss64, labels, y_pred, "float64")
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-8)
    value32, grad32 = loss_value_and_grad(loss, labels, y_pred, "float32")
    np.testing.assert_allclose(value32, expected, rtol=1e-4)
    np.testing.assert_allclose(grad32, expected_grad, rtol=1e-3, atol=1e-5)


# --------------------------------------------------------------------------
# Identities.
def _ce_value_and_grad(reference, labels):
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return loss_value_and_grad(cross_entropy, labels, reference["inputs"]["logits"])


@pytest.mark.parametrize("labels", [None, TAIL_LABELS])
def test_logit_adjusted_tau0_is_cross_entropy(reference, labels):
    labels = np.asarray(reference["inputs"]["labels"]) if labels is None else labels
    counts = reference["inputs"]["cls_num_list"]
    ce_value, ce_grad = _ce_value_and_grad(reference, labels)
    value, grad = loss_value_and_grad(km.losses.LogitAdjustedLoss(counts, tau=0.0),
                                      labels, reference["inputs"]["logits"])
    np.testing.assert_allclose(value, ce_value, rtol=1e-6)
    np.testing.assert_allclose(grad, ce_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("loss_factory", [
    lambda counts: km.losses.ClassBalancedLoss(counts, beta=0.0, loss_type="softmax"),
    lambda counts: km.losses.FocalLoss(gamma=0.0),
], ids=["class_balanced_beta0", "focal_gamma0"])
def test_reduces_to_cross_entropy(reference, loss_factory):
    labels = TAIL_LABELS
    ce_value, ce_grad = _ce_value_and_grad(reference, labels)
    loss = loss_factory(reference["inputs"]["cls_num_list"])
    value, grad = loss_value_and_grad(loss, labels, reference["inputs"]["logits"])
    np.testing.assert_allclose(value, ce_value, rtol=1e-6)
    np.testing.assert_allclose(grad, ce_grad, rtol=1e-5, atol=1e-7)


def test_class_balanced_focal_gamma0_is_sigmoid(reference):
    counts = reference["inputs"]["cls_num_list"]
    logits = reference["inputs"]["logits"]
    sigmoid = km.losses.ClassBalancedLoss(counts, loss_type="sigmoid")
    focal = km.losses.ClassBalancedLoss(counts, loss_type="focal", gamma=0.0)
    np.testing.assert_allclose(loss_value_and_grad(focal, TAIL_LABELS, logits)[0],
                               loss_value_and_grad(sigmoid, TAIL_LABELS, logits)[0],
                               rtol=1e-6)


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


# --------------------------------------------------------------------------
# Equalization loss v2.
def np_eqlv2_step(x, y, positive, negative, gamma=12.0, mu=0.8, alpha=4.0):
    """One EQLv2 step: (mean loss, new G+, new G-)."""
    t = _onehot(y, x.shape[1])
    ratio = positive / np.maximum(negative, 1e-30)
    w_neg = np.where(negative > 0, 1.0 / (1.0 + np.exp(-gamma * (ratio - mu))), 1.0)
    w_pos = 1.0 + alpha * (1.0 - w_neg)
    weight = t * w_pos + (1 - t) * w_neg
    p = 1.0 / (1.0 + np.exp(-x))
    bce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    magnitude = np.abs(p - t) * weight
    return (np.sum(weight * bce) / len(y), positive + (magnitude * t).sum(0),
            negative + (magnitude * (1 - t)).sum(0))


def _statistics(loss):
    return (to_numpy(loss.statistics_layer().positive_gradients).astype("float64"),
            to_numpy(loss.statistics_layer().negative_gradients).astype("float64"))


def test_eqlv2_matches_numpy_over_steps(reference):
    logits = np.asarray(reference["inputs"]["logits"])
    loss = km.losses.EqualizationLossV2(num_classes=10)
    positive, negative = np.zeros(10), np.zeros(10)
    for labels in (np.asarray(reference["inputs"]["labels"]), TAIL_LABELS, TAIL_LABELS):
        expected, positive, negative = np_eqlv2_step(logits, labels, positive, negative)
        value = to_numpy(loss(labels, logits.astype("float32")))
        np.testing.assert_allclose(value, expected, rtol=1e-5)
        got_positive, got_negative = _statistics(loss)
        np.testing.assert_allclose(got_positive, positive, rtol=1e-5)
        np.testing.assert_allclose(got_negative, negative, rtol=1e-5)
    # After the first step the weights are no longer all ones.
    w_pos, w_neg = (to_numpy(w) for w in loss.class_weights_from_statistics())
    assert np.all(w_neg < 1.0) and np.all(w_pos > 1.0)
    loss.statistics_layer().reset_statistics()
    assert not np.any(_statistics(loss)[0])


def _eqlv2_model(loss, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(32, activation="relu")(x)
    logits = keras.layers.Dense(10)(x)
    return keras.Model(inputs, loss.statistics_layer()(logits))


def test_eqlv2_statistics_update_during_fit(fashion_mnist_lt_small, tmp_path):
    x, y, _ = fashion_mnist_lt_small
    loss = km.losses.EqualizationLossV2(num_classes=10)
    model = _eqlv2_model(loss)
    assert not np.any(_statistics(loss)[0])
    _, reloaded = fit_and_roundtrip(model, loss, x, y, tmp_path)
    positive, negative = _statistics(loss)
    assert np.all(positive > 0) and np.all(negative > 0), (positive, negative)
    # Rare classes collect less positive gradient than frequent ones.
    assert positive[0] > positive[9]
    # evaluate / predict leave the statistics unchanged.
    model.evaluate(x[::6], y[::6], verbose=0)
    np.testing.assert_array_equal(_statistics(loss)[0], positive)
    # The statistics are saved with the model; attach() relinks the loaded
    # loss, and a further fit keeps accumulating into the loaded layer.
    reloaded.loss.attach(reloaded)
    np.testing.assert_allclose(_statistics(reloaded.loss)[0], positive, rtol=1e-6)
    reloaded.fit(x[::6], y[::6], batch_size=64, epochs=1, verbose=0)
    assert np.all(_statistics(reloaded.loss)[1] > negative)


def test_eqlv2_without_statistics_layer(fashion_mnist_lt_small):
    x, y, _ = fashion_mnist_lt_small
    loss = km.losses.EqualizationLossV2(num_classes=10)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    logits = keras.layers.Dense(10)(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, logits)
    model.compile(optimizer="sgd", loss=loss)
    if BACKEND == "jax":
        with pytest.raises(ValueError, match="statistics layer in the model"):
            model.fit(x[::6], y[::6], batch_size=64, epochs=1, verbose=0)
    else:  # TensorFlow and torch update variables the model does not track.
        model.fit(x[::6], y[::6], batch_size=64, epochs=1, verbose=0)
        assert np.all(_statistics(loss)[1] > 0)


# --------------------------------------------------------------------------
# Short fits on real long-tailed data, with save / load round trips.
def _logits_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(10)(x))


@pytest.mark.parametrize("name", ["focal", "cb_focal", "logit_adjusted"])
def test_fit_logit_losses(fashion_mnist_lt_small, tmp_path, name):
    x, y, counts = fashion_mnist_lt_small
    loss = {
        "focal": lambda: km.losses.FocalLoss(gamma=1.0),
        "cb_focal": lambda: km.losses.ClassBalancedLoss(counts, loss_type="focal",
                                                        gamma=2.0),
        "logit_adjusted": lambda: km.losses.LogitAdjustedLoss(counts, tau=1.0),
    }[name]()
    history, _ = fit_and_roundtrip(_logits_model(), loss, x, y, tmp_path)
    assert history.history["loss"][0] > 0


def test_fit_influence_balanced(fashion_mnist_lt_small, tmp_path):
    x, y, counts = fashion_mnist_lt_small
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    features = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(inputs))
    logits = keras.layers.Dense(10)(features)
    outputs = km.layers.AppendFeatureNorm()([logits, features])
    model = keras.Model(inputs, outputs)
    assert tuple(model.output.shape) == (None, 11)
    loss = km.losses.InfluenceBalancedLoss(counts, gamma=1.0)
    _, reloaded = fit_and_roundtrip(model, loss, x, y, tmp_path)
    # The appended column is the L1 norm of the features.
    feature_model = keras.Model(inputs, features)
    np.testing.assert_allclose(
        to_numpy(model.predict(x[:8], verbose=0))[:, -1],
        np.abs(to_numpy(feature_model.predict(x[:8], verbose=0))).sum(-1), rtol=1e-5)
    assert isinstance(reloaded.layers[-1], km.layers.AppendFeatureNorm)


def test_append_feature_norm_gradient_reaches_features():
    layer = km.layers.AppendFeatureNorm()
    features = np.array([[1.0, -2.0, 3.0], [-0.5, 0.25, 0.5]])
    logits = np.zeros((2, 4))
    _, grad = value_and_grad(
        lambda h: keras.ops.sum(layer([keras.ops.convert_to_tensor(logits, dtype="float32"),
                                       h])), features)
    np.testing.assert_allclose(grad, np.sign(features))


# --------------------------------------------------------------------------
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


def test_influence_balanced_needs_norm_column(reference):
    loss = km.losses.InfluenceBalancedLoss(reference["inputs"]["cls_num_list"])
    logits = np.asarray(reference["inputs"]["logits"], dtype="float32")
    with pytest.raises(ValueError, match=r"y_pred.*\(batch_size, 11\).*\(8, 10\)"):
        loss(reference["inputs"]["labels"], logits)


def test_wrong_number_of_classes(reference):
    logits = np.asarray(reference["inputs"]["logits"], dtype="float32")
    labels = reference["inputs"]["labels"]
    with pytest.raises(ValueError, match=r"`class_counts` has 3 entries"):
        km.losses.LogitAdjustedLoss([3, 2, 1])(labels, logits)
    with pytest.raises(ValueError, match=r"num_classes=4.*\(8, 10\)"):
        km.losses.EqualizationLossV2(num_classes=4)(labels, logits)
    with pytest.raises(ValueError, match=r"label 10"):
        km.losses.FocalLoss()(np.array([10] * 8), logits)


def test_append_feature_norm_needs_two_inputs():
    with pytest.raises(ValueError, match=r"\[logits, features\]"):
        km.layers.AppendFeatureNorm()(np.ones((2, 3), dtype="float32"))


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
