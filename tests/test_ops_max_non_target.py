"""``max_non_target`` (max + first-index reductions instead of argmax) matches numpy."""

import numpy as np
import pytest
from keras import ops

from keras_margins import ops as km_ops


def _reference(scores, labels):
    masked = scores.copy()
    masked[np.arange(len(labels)), labels] = -np.inf
    return masked.max(-1), masked.argmax(-1)


@pytest.mark.parametrize("num_classes", [2, 7, 1000])
def test_values_and_indices_match_numpy(num_classes):
    rng = np.random.default_rng(num_classes)
    scores = rng.normal(size=(33, num_classes)).astype("float32")
    labels = rng.integers(0, num_classes, 33).astype("int32")
    # the target is the row maximum in some rows: it must still be excluded
    scores[:5, :] = 0.0
    scores[np.arange(5), labels[:5]] = 9.0
    values, indices = km_ops.max_non_target(ops.convert_to_tensor(scores),
                                            ops.convert_to_tensor(labels))
    want_values, want_indices = _reference(scores, labels)
    np.testing.assert_allclose(ops.convert_to_numpy(values), want_values)
    np.testing.assert_array_equal(ops.convert_to_numpy(indices), want_indices)
    assert str(ops.dtype(indices)) == "int32"


def test_ties_give_the_first_index_like_argmax():
    scores = np.array([[1.0, 3.0, 3.0, 3.0], [3.0, 3.0, 0.0, 3.0]], "float32")
    labels = np.array([1, 0], "int32")
    values, indices = km_ops.max_non_target(ops.convert_to_tensor(scores),
                                            ops.convert_to_tensor(labels))
    np.testing.assert_array_equal(ops.convert_to_numpy(indices), [2, 1])
    np.testing.assert_allclose(ops.convert_to_numpy(values), [3.0, 3.0])


def test_float16_scores_stay_finite():
    scores = np.array([[60000.0, -60000.0, 1.0]], "float16")
    values, indices = km_ops.max_non_target(ops.convert_to_tensor(scores),
                                            ops.convert_to_tensor(np.array([0], "int32")))
    np.testing.assert_allclose(ops.convert_to_numpy(values).astype("float32"), [1.0])
    np.testing.assert_array_equal(ops.convert_to_numpy(indices), [2])
