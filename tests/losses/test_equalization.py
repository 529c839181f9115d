"""EqualizationLossV2: numpy over steps, statistics during fit, without the layer."""

import keras
import numpy as np
import pytest

import keras_margins as km
from backend_utils import BACKEND, fit_and_roundtrip, to_numpy
from .helpers import BASELINE_TAIL_LABELS, _onehot


TAIL_LABELS = BASELINE_TAIL_LABELS  # the baselines' tail labels


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
