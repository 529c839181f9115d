"""Decoupled classifiers: τ-norm, cRT, LWS and the MaxNorm head (every backend)."""

import keras
import numpy as np
import pytest

from keras_margins import decoupling
from keras_margins.layers import CosineDense

FEATURES, CLASSES = 6, 3


def make_model(head="dense", seed=0, activation=None):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((FEATURES,))
    hidden = keras.layers.Dense(8, activation="relu", name="backbone")(inputs)
    hidden = keras.layers.BatchNormalization(name="bn")(hidden)
    if head == "dense":
        outputs = keras.layers.Dense(CLASSES, activation=activation, name="head")(hidden)
    else:
        outputs = CosineDense(CLASSES, name="head")(hidden)
    return keras.Model(inputs, outputs)


def make_data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(CLASSES), [40, 15, 5][:CLASSES])[:n]
    x = rng.normal(size=(len(y), FEATURES)).astype("float32") + y[:, None]
    return x, y


def weights_of(layers):
    return [np.array(keras.ops.convert_to_numpy(w)) for layer in layers for w in layer.weights]


def test_find_head_errors():
    model = make_model()
    assert decoupling.find_head(model).name == "head"
    with pytest.raises(ValueError, match="Dense or CosineDense.*BatchNormalization"):
        decoupling.find_head(model, layer="bn")
    with pytest.raises(ValueError, match="name a top-level layer.*'nope'"):
        decoupling.find_head(model, layer="nope")
    with pytest.raises(ValueError, match="keras.Model, received int"):
        decoupling.find_head(3)
    inputs = keras.Input((FEATURES,))
    no_head = keras.Model(inputs, keras.layers.Activation("relu")(inputs))
    with pytest.raises(ValueError, match="expected a Dense or CosineDense.*Activation"):
        decoupling.tau_normalize(no_head)


def test_tau_zero_is_identity_and_original_untouched():
    model = make_model()
    x, _ = make_data()
    before = weights_of(model.layers)
    expected = model.predict(x, verbose=0)
    same = decoupling.tau_normalize(model, tau=0)
    assert same is not model
    np.testing.assert_array_equal(same.predict(x, verbose=0), expected)
    normed = decoupling.tau_normalize(model, tau=1.0)
    for old, new in zip(before, weights_of(model.layers)):
        np.testing.assert_array_equal(old, new)
    kernel = keras.ops.convert_to_numpy(normed.get_layer("head").kernel)
    np.testing.assert_allclose(np.linalg.norm(kernel, axis=0), 1.0, rtol=1e-5)


def test_tau_half_formula_and_bias():
    model = make_model()
    model.get_layer("head").bias.assign(np.array([0.5, -1.0, 2.0], "float32"))
    kernel = keras.ops.convert_to_numpy(model.get_layer("head").kernel).astype(np.float64)
    normed = decoupling.tau_normalize(model, tau=0.5)
    expected = kernel / np.linalg.norm(kernel, axis=0) ** 0.5
    head = normed.get_layer("head")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(head.kernel), expected, rtol=1e-6)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(head.bias), [0.5, -1.0, 2.0])
    dropped = decoupling.tau_normalize(model, tau=0.5, drop_bias=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(dropped.get_layer("head").bias), 0)


def test_tau_bad_input():
    with pytest.raises(ValueError, match="`tau` must be a finite number >= 0, received -0.5"):
        decoupling.tau_normalize(make_model(), tau=-0.5)
    with pytest.raises(ValueError, match="expects a Dense head, received CosineDense"):
        decoupling.tau_normalize(make_model("cosine"), tau=1.0)


def test_class_balanced_batches_are_balanced():
    x, y = make_data()
    batches = decoupling.class_balanced_batches(x, y, batch_size=16, seed=3, num_samples=3000)
    seen = np.concatenate([batches[i][1] for i in range(len(batches))])
    assert len(seen) == 3000
    frequencies = np.bincount(seen, minlength=CLASSES) / len(seen)
    np.testing.assert_allclose(frequencies, 1 / CLASSES, atol=0.03)
    features = batches[0][0]
    assert features.dtype == np.float32 and features.shape == (16, FEATURES)
    # The same seed draws the same epoch.
    again = decoupling.class_balanced_batches(x, y, batch_size=16, seed=3, num_samples=3000)
    np.testing.assert_array_equal(again[0][1], batches[0][1])


@pytest.mark.parametrize("head,reinitialize", [("dense", False), ("cosine", True)])
def test_crt_trains_only_the_head(head, reinitialize):
    model = make_model(head)
    x, y = make_data()
    backbone = [model.get_layer("backbone"), model.get_layer("bn")]
    before, head_before = weights_of(backbone), weights_of([model.get_layer("head")])
    flags = [layer.trainable for layer in model.layers]
    loss = None if head == "dense" else keras.losses.SparseCategoricalCrossentropy(
        from_logits=True)
    returned = decoupling.classifier_retraining(model, x, y, epochs=2, batch_size=16,
                                                loss=loss, num_samples=48,
                                                reinitialize=reinitialize,
                                                optimizer=keras.optimizers.SGD(0.1))
    assert returned is model
    for old, new in zip(before, weights_of(backbone)):
        assert np.array_equal(old, new)
    head_after = weights_of([model.get_layer("head")])
    assert not np.array_equal(head_before[0], head_after[0])
    assert [layer.trainable for layer in model.layers] == flags
    assert len(model.history.history["loss"]) == 2


def test_crt_bad_input():
    model = make_model()
    x, y = make_data()
    with pytest.raises(ValueError, match="`epochs` must be an integer >= 1, received 0"):
        decoupling.classifier_retraining(model, x, y, epochs=0)
    with pytest.raises(ValueError, match=r"same number of samples, received shapes "
                                         r"\(60, 6\) and \(59,\)"):
        decoupling.classifier_retraining(model, x, y[:-1], epochs=1)
    with pytest.raises(ValueError, match="label 7"):
        decoupling.classifier_retraining(model, x, np.full(len(x), 7), epochs=1)


def test_lws_layer_serialization():
    layer = decoupling.LearnableWeightScaling(name="lws")
    config = layer.get_config()
    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(rebuilt, decoupling.LearnableWeightScaling)
    assert rebuilt.get_config() == config
    logits = np.array([[1.0, -2.0, 3.0]], "float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(logits)), logits)


def test_lws_saves_and_loads(tmp_path):
    inputs = keras.Input((CLASSES,))
    model = keras.Model(inputs, decoupling.LearnableWeightScaling()(inputs))
    model.layers[-1].scales.assign(np.array([1.0, 2.0, 0.5], "float32"))
    path = tmp_path / "lws.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    logits = np.array([[1.0, 1.0, 1.0]], "float32")
    np.testing.assert_allclose(loaded.predict(logits, verbose=0), [[1.0, 2.0, 0.5]])


def test_lws_trains_only_the_scales():
    model = make_model()
    x, y = make_data()
    original = weights_of(model.layers)
    expected = model.predict(x, verbose=0)
    # Scales of 1: the appended model starts with the original's predictions.
    keras.utils.set_random_seed(0)
    scaled = decoupling.learnable_weight_scaling(model, x, y, epochs=1, batch_size=16,
                                                 num_samples=16,
                                                 optimizer=keras.optimizers.SGD(0.0))
    np.testing.assert_array_equal(scaled.predict(x, verbose=0), expected)
    scaled = decoupling.learnable_weight_scaling(model, x, y, epochs=2, batch_size=16,
                                                 num_samples=48,
                                                 optimizer=keras.optimizers.SGD(0.1))
    for old, new in zip(original, weights_of(model.layers)):
        assert np.array_equal(old, new)
    scales = keras.ops.convert_to_numpy(scaled.layers[-1].scales)
    assert scales.shape == (CLASSES,) and not np.array_equal(scales, np.ones(CLASSES))
    assert all(layer.trainable for layer in model.layers)


def test_lws_bad_input():
    x, y = make_data()
    with pytest.raises(ValueError, match="linear activation.*'softmax'"):
        decoupling.learnable_weight_scaling(make_model(activation="softmax"), x, y)
    with pytest.raises(ValueError, match="`epochs` must be an integer >= 1, received 0"):
        decoupling.learnable_weight_scaling(make_model(), x, y, epochs=0)
    with pytest.raises(ValueError, match=r"received shapes \(60, 6\) and \(3,\)"):
        decoupling.learnable_weight_scaling(make_model(), x, y[:3])


def test_max_norm_head_caps_class_norms():
    model = make_model()
    x, y = make_data()
    model.get_layer("head").kernel.assign(
        5.0 * keras.ops.convert_to_numpy(model.get_layer("head").kernel))
    decoupling.max_norm_head(model, 0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=keras.losses.
                  SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=20, epochs=1, verbose=0)
    kernel = keras.ops.convert_to_numpy(model.get_layer("head").kernel)
    assert np.all(np.linalg.norm(kernel, axis=0) <= 0.5 + 1e-5)
    assert model.get_layer("head").get_config()["kernel_constraint"] is not None
    with pytest.raises(ValueError, match="`max_value` must be > 0, received 0"):
        decoupling.max_norm_head(model, 0)


def test_exported_lazily():
    import keras_margins
    assert "decoupling" in keras_margins.__all__
    assert keras_margins.decoupling is decoupling


def test_crt_takes_a_batch_source_and_shift_learning_trains_batch_norm_only():
    """A PyDataset of class-balanced batches is used as given; ``train_batch_norm``
    (MiSLAS's shift learning) also trains every BatchNormalization layer — its
    scale, offset and moving statistics — while the other layers stay bit-identical."""
    model = make_model()
    x, y = make_data()
    batches = decoupling.class_balanced_batches(x, y, batch_size=16, seed=1, num_samples=48)
    backbone, bn = model.get_layer("backbone"), model.get_layer("bn")
    before_backbone, before_bn = weights_of([backbone]), weights_of([bn])
    decoupling.classifier_retraining(model, batches, epochs=1, reinitialize=False,
                                     optimizer=keras.optimizers.SGD(0.1))
    for old, new in zip(before_backbone + before_bn, weights_of([backbone, bn])):
        assert np.array_equal(old, new)          # head only
    decoupling.classifier_retraining(model, batches, epochs=1, reinitialize=False,
                                     train_batch_norm=True,
                                     optimizer=keras.optimizers.SGD(0.1))
    for old, new in zip(before_backbone, weights_of([backbone])):
        assert np.array_equal(old, new)
    changed = [not np.array_equal(old, new) for old, new in zip(before_bn, weights_of([bn]))]
    assert all(changed), changed                 # gamma, beta, moving mean and variance
    assert bn.trainable and backbone.trainable   # flags restored


def test_decoupling_needs_labels_with_array_inputs():
    model = make_model()
    x, _ = make_data()
    with pytest.raises(ValueError, match=r"`y` is required with array inputs `x`.*\(60, 6\)"):
        decoupling.classifier_retraining(model, x, epochs=1)
    with pytest.raises(ValueError, match=r"`y` is required with array inputs"):
        decoupling.learnable_weight_scaling(model, x, epochs=1)
