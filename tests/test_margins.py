"""Class and sample margins: known answers, column convention, bad input."""

import math

import keras
import numpy as np
import pytest

import keras_margins as km
from backend_utils import small_model, to_numpy
from keras_margins.margins import (class_margin, find_cosine_head, sample_margins,
                                   simplex_class_margin)


def simplex(num_classes, features=None):
    """Regular-simplex prototypes as the columns of a (features, classes) kernel."""
    vertices = np.eye(num_classes) - 1.0 / num_classes  # rows sum to 0
    features = features or num_classes
    kernel = np.zeros((features, num_classes))
    kernel[:num_classes] = vertices.T
    rotation, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(features, features)))
    return rotation @ kernel


@pytest.mark.parametrize("num_classes", [2, 3, 10])
def test_class_margin_regular_simplex(num_classes):
    kernel = simplex(num_classes, features=num_classes + 2)
    kernel = kernel * np.arange(1, num_classes + 1)  # column norms do not matter
    expected = math.degrees(math.acos(-1.0 / (num_classes - 1)))
    np.testing.assert_allclose(class_margin(kernel), expected, atol=1e-6)
    np.testing.assert_allclose(class_margin(keras.ops.convert_to_tensor(kernel, "float32")),
                               expected, atol=1e-3)
    np.testing.assert_allclose(simplex_class_margin(num_classes), expected)
    if num_classes == 3:
        np.testing.assert_allclose(class_margin(kernel), 120.0, atol=1e-9)


def test_class_margin_is_the_minimum_pair_and_uses_columns():
    # Prototypes at 0, 30 and 100 degrees in the plane: the closest pair is 30 apart.
    angles = np.radians([0.0, 30.0, 100.0])
    kernel = np.stack([np.cos(angles), np.sin(angles)])  # (2 features, 3 classes)
    np.testing.assert_allclose(class_margin(kernel), 30.0, atol=1e-9)
    np.testing.assert_allclose(class_margin(np.eye(4)), 90.0, atol=1e-9)
    with pytest.raises(ValueError, match="all zeros"):
        class_margin(np.array([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="features, classes"):
        class_margin(np.ones((4, 1)))


def test_class_margin_of_a_cosine_dense_layer():
    layer = km.layers.CosineDense(5)
    layer.build((None, 8))
    kernel = to_numpy(layer.kernel).astype("float64")
    unit = kernel / np.linalg.norm(kernel, axis=0)
    gram = unit.T @ unit
    expected = np.degrees(np.arccos(np.max(gram[~np.eye(5, dtype=bool)])))
    np.testing.assert_allclose(class_margin(layer), expected, atol=1e-3)


def test_sample_margins_hand_built():
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.5, 0.4], [0.3, 0.6, 0.1], [0.1, 0.1, 0.8]])
    for labels in ([0, 1, 0, 2], np.eye(3)[[0, 1, 0, 2]]):
        result = sample_margins(keras.ops.convert_to_tensor(scores, "float32"), labels)
        np.testing.assert_allclose(result["per_sample"], [0.8, 0.1, -0.3, 0.7], atol=1e-6)
        np.testing.assert_allclose(result["per_class_min"], [-0.3, 0.1, 0.7], atol=1e-6)
        np.testing.assert_allclose(result["per_class_mean"], [0.25, 0.1, 0.7], atol=1e-6)
        np.testing.assert_array_equal(result["per_class_count"], [2, 1, 1])
    absent = sample_margins(scores, [0, 0, 0, 2])
    assert np.isnan(absent["per_class_min"][1]) and np.isnan(absent["per_class_mean"][1])
    with pytest.raises(ValueError, match="outside"):
        sample_margins(scores, [0, 1, 3, 2])
    with pytest.raises(ValueError, match="samples"):
        sample_margins(scores, [0, 1, 2])


def test_find_cosine_head_searches_nested_models():
    assert find_cosine_head(small_model(num_classes=4, cosine=False)) is None
    inner = small_model(num_classes=4)
    head = [layer for layer in inner.layers if isinstance(layer, km.layers.CosineDense)][-1]
    assert find_cosine_head(inner) is head
    outer = keras.Sequential([keras.Input((28, 28, 1)), inner])
    assert find_cosine_head(outer) is head
