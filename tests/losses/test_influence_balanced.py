"""InfluenceBalancedLoss: numpy formula on the reference and tail labels, the
feature-norm column, a short fit.
"""

import keras
import numpy as np
import pytest

import keras_margins as km
from backend_utils import fit_and_roundtrip, to_numpy
from .helpers import check_reference_matches_numpy_formula, check_tail_labels_against_numpy


@pytest.mark.parametrize("key", [
    "ib_alpha1000_ibreweight",
    "ib_focal_alpha1000_gamma1_ibreweight",
])
def test_reference_matches_numpy_formula(reference, key):
    """The numpy formulas used for the tail-class test reproduce the references."""
    check_reference_matches_numpy_formula(reference, key)


@pytest.mark.parametrize("key", [
    "ib_alpha1000_ibreweight",
    "ib_focal_alpha1000_gamma1_ibreweight",
])
def test_tail_labels_against_numpy(reference, key):
    check_tail_labels_against_numpy(reference, key)


def test_influence_balanced_needs_norm_column(reference):
    loss = km.losses.InfluenceBalancedLoss(reference["inputs"]["cls_num_list"])
    logits = np.asarray(reference["inputs"]["logits"], dtype="float32")
    with pytest.raises(ValueError, match=r"y_pred.*\(batch_size, 11\).*\(8, 10\)"):
        loss(reference["inputs"]["labels"], logits)


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
