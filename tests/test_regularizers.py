"""keras_margins.regularizers: the zero-centroid regulariser of the class prototypes."""

import keras
import numpy as np
import pytest

import keras_margins as km
from backend_utils import value_and_grad


def test_zero_centroid_matches_numpy_and_serializes():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(16, 10)).astype("float32")
    columns = kernel / np.linalg.norm(kernel, axis=0, keepdims=True)
    expected = 0.7 * np.sum(np.mean(columns, axis=1) ** 2)
    reg = km.regularizers.ZeroCentroid(0.7)
    assert float(reg(kernel)) == pytest.approx(expected, rel=1e-5)
    # Column scaling does not change it (prototypes are unit-normalised columns).
    assert float(reg(kernel * np.linspace(0.1, 5, 10, dtype="float32"))) == pytest.approx(
        expected, rel=1e-5)
    # Prototypes symmetric around zero: centroid zero.
    assert float(reg(np.concatenate([kernel[:, :5], -kernel[:, :5]], axis=1))) == \
        pytest.approx(0.0, abs=1e-7)
    value, grad = value_and_grad(lambda k: reg(k), kernel)
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
    restored = keras.regularizers.deserialize(keras.regularizers.serialize(reg))
    assert isinstance(restored, km.regularizers.ZeroCentroid) and restored.weight == 0.7
    with pytest.raises(ValueError, match="weight.*-1"):
        km.regularizers.ZeroCentroid(-1.0)
