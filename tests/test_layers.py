"""CosineDense: the authors' NormedLinear values, init, zero inputs, precision, saving;
AppendFeatureNorm: its gradient and its two inputs."""

import keras
import numpy as np
import pytest

import keras_margins as km
from backend_utils import float64_enabled, to_numpy, value_and_grad


def build_with_kernel(kernel, dtype=None):
    layer = km.layers.CosineDense(kernel.shape[1], dtype=dtype)
    layer.build((None, kernel.shape[0]))
    layer.kernel.assign(kernel)
    return layer


@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-5), ("float64", 1e-10)])
def test_matches_normed_linear(reference, dtype, rtol):
    x = np.asarray(reference["inputs"]["normed_linear_x"], dtype)
    w = np.asarray(reference["inputs"]["normed_linear_w"], dtype)
    expected = reference["layers"]["cosine_dense_forward"]["float64"]["output"]
    if dtype == "float64" and keras.backend.backend() == "torch":
        rtol = 1e-6  # keras-torch's ops.matmul computes float64 inputs in float32
    with float64_enabled():
        layer = build_with_kernel(w, dtype=dtype)
        output = to_numpy(layer(x))
    np.testing.assert_allclose(output, expected, rtol=rtol, atol=rtol)


def test_initial_columns_have_unit_norm():
    layer = km.layers.CosineDense(7)
    layer.build((None, 16))
    norms = np.linalg.norm(to_numpy(layer.kernel), axis=0)
    np.testing.assert_allclose(norms, np.ones(7), rtol=1e-6)
    assert len(set(np.round(to_numpy(layer.kernel)[0], 6))) == 7  # random, not constant


def test_outputs_are_cosines_and_zero_features_are_finite():
    layer = km.layers.CosineDense(5)
    x = np.concatenate([np.random.default_rng(0).normal(size=(4, 8)) * 1e3,
                        np.zeros((2, 8))]).astype("float32")
    y = to_numpy(layer(x))
    assert np.all(np.abs(y) <= 1.0 + 1e-6)
    np.testing.assert_array_equal(y[4:], 0.0)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_is_stable(policy, reference):
    x = np.asarray(reference["inputs"]["normed_linear_x"], "float32")
    w = np.asarray(reference["inputs"]["normed_linear_w"], "float32")
    expected = np.asarray(reference["layers"]["cosine_dense_forward"]["float64"]["output"])
    layer = build_with_kernel(w, dtype=policy)
    y = to_numpy(layer(np.concatenate([x * 1e4, np.zeros((1, 64), "float32")]))).astype("float64")
    assert np.all(np.isfinite(y))
    tolerance = 1e-2 if policy == "mixed_bfloat16" else 1e-3
    np.testing.assert_allclose(y[:-1], expected, atol=tolerance)
    np.testing.assert_array_equal(y[-1], 0.0)


def test_bad_units_raise():
    for units in (0, 1, 2.5, "10", True):
        with pytest.raises(ValueError, match="units"):
            km.layers.CosineDense(units)


def test_serialization_round_trip(tmp_path):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6,))
    outputs = km.layers.CosineDense(4, kernel_regularizer=keras.regularizers.L2(1e-3))(inputs)
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(1).normal(size=(3, 6)).astype("float32")
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(to_numpy(restored(x)), to_numpy(model(x)), rtol=1e-6)
    config = model.layers[-1].get_config()
    assert km.layers.CosineDense.from_config(config).get_config() == config


def test_append_feature_norm_gradient_reaches_features():
    layer = km.layers.AppendFeatureNorm()
    features = np.array([[1.0, -2.0, 3.0], [-0.5, 0.25, 0.5]])
    logits = np.zeros((2, 4))
    _, grad = value_and_grad(
        lambda h: keras.ops.sum(layer([keras.ops.convert_to_tensor(logits, dtype="float32"),
                                       h])), features)
    np.testing.assert_allclose(grad, np.sign(features))


def test_append_feature_norm_needs_two_inputs():
    with pytest.raises(ValueError, match=r"\[logits, features\]"):
        km.layers.AppendFeatureNorm()(np.ones((2, 3), dtype="float32"))
