"""SAMModel / ASAM: one step against the two-pass formula in NumPy, rho = 0 is the
base optimizer, the DRW stage switch under jit, batch-norm statistics, config."""

import os

import keras
import numpy as np
import pytest

import keras_margins as km
from backend_utils import BACKEND, to_numpy

# TensorFlow and JAX: XLA jit; torch: eager (Keras' default for torch).
JIT = BACKEND != "torch"

RNG = np.random.default_rng(0)
X = RNG.normal(size=(6, 3)).astype("float32")
Y = RNG.normal(size=(6, 2)).astype("float32")
W0 = RNG.normal(size=(3, 2)).astype("float32")
B0 = RNG.normal(size=(2,)).astype("float32")


def linear_model(model_class=keras.Model, **kwargs):
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(2, name="dense")(inputs)
    model = model_class(inputs, outputs, **kwargs)
    model.get_layer("dense").set_weights([W0, B0])
    return model


SAMPLE_WEIGHT = np.array([1.0, 0.5, 2.0, 0.0, 1.0, 3.0], "float32")


def mse_and_grad(w, b, sample_weight=None):
    """Keras' MSE of x w + b - y (per-sample mean, weighted sum / batch size) and
    its gradient, in float64."""
    x, y = X.astype("float64"), Y.astype("float64")
    sw = np.ones(len(x)) if sample_weight is None else sample_weight.astype("float64")
    residual = x @ w + b - y
    loss = np.sum(sw * np.mean(residual ** 2, axis=1)) / len(x)
    weighted = 2.0 * sw[:, None] * residual / residual.size
    return loss, x.T @ weighted, weighted.sum(0)


def numpy_sam_step(rho, lr, adaptive=False, eta=0.01, sample_weight=None):
    w, b = W0.astype("float64"), B0.astype("float64")
    loss, gw, gb = mse_and_grad(w, b, sample_weight)
    if adaptive:
        tw, tb = np.abs(w) + eta, np.abs(b) + eta
        norm = np.sqrt(np.sum((tw * gw) ** 2) + np.sum((tb * gb) ** 2))
        ew, eb = rho * tw ** 2 * gw / norm, rho * tb ** 2 * gb / norm
    else:
        norm = np.sqrt(np.sum(gw ** 2) + np.sum(gb ** 2))
        ew, eb = rho * gw / norm, rho * gb / norm
    _, gw2, gb2 = mse_and_grad(w + ew, b + eb, sample_weight)
    return loss, w - lr * gw2, b - lr * gb2


def one_step(model, lr=0.1, sample_weight=None):
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse", jit_compile=JIT)
    logs = model.train_on_batch(X, Y, sample_weight=sample_weight, return_dict=True)
    w, b = model.get_layer("dense").get_weights()
    return float(logs["loss"]), w, b


@pytest.mark.parametrize("adaptive,rho,sample_weight", [
    (False, 0.05, None), (False, 0.5, None), (True, 0.5, None),
    (False, 0.5, SAMPLE_WEIGHT), (True, 0.5, SAMPLE_WEIGHT)])
def test_one_step_matches_the_two_pass_formula(adaptive, rho, sample_weight):
    model = linear_model(km.sam.SAMModel, rho=rho, adaptive=adaptive)
    loss, w, b = one_step(model, lr=0.1, sample_weight=sample_weight)
    expected_loss, expected_w, expected_b = numpy_sam_step(
        rho, 0.1, adaptive=adaptive, sample_weight=sample_weight)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    np.testing.assert_allclose(w, expected_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b, expected_b, rtol=1e-5, atol=1e-6)
    # The step really differs from plain SGD.
    _, plain_w, _ = numpy_sam_step(0.0, 0.1, sample_weight=sample_weight)
    assert not np.allclose(w, plain_w, rtol=1e-4, atol=0)


def test_rho_zero_is_the_base_optimizer():
    results = []
    for model in (linear_model(km.sam.SAMModel, rho=0.0), linear_model()):
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse",
                      jit_compile=JIT)
        losses = [float(model.train_on_batch(X, Y, return_dict=True)["loss"])
                  for _ in range(2)]
        results.append((losses, model.get_layer("dense").get_weights()))
    (sam_losses, sam_weights), (plain_losses, plain_weights) = results
    assert sam_losses == plain_losses
    for got, expected in zip(sam_weights, plain_weights):
        np.testing.assert_array_equal(got, expected)


def test_batch_norm_statistics_come_from_the_first_pass():
    def build(model_class, **kwargs):
        keras.utils.set_random_seed(1)
        inputs = keras.Input((3,))
        hidden = keras.layers.Dense(4, name="dense")(inputs)
        hidden = keras.layers.BatchNormalization(name="bn")(hidden)
        outputs = keras.layers.Dense(2, name="head")(
            keras.layers.Dropout(0.5, name="dropout")(hidden))
        model = model_class(inputs, outputs, **kwargs)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", jit_compile=JIT)
        return model

    plain, sam = build(keras.Model), build(km.sam.SAMModel, rho=0.05)
    sam.set_weights(plain.get_weights())
    plain.train_on_batch(X, Y)
    logs = sam.train_on_batch(X, Y, return_dict=True)
    assert np.isfinite(logs["loss"])
    # Moving statistics are updated once, at w (the first pass), as in plain training.
    for got, expected in zip(sam.get_layer("bn").non_trainable_weights,
                             plain.get_layer("bn").non_trainable_weights):
        np.testing.assert_allclose(to_numpy(got), to_numpy(expected), rtol=1e-6)


def test_drw_switch_reweights_the_sam_loss():
    counts = [8, 4, 2]
    rng = np.random.default_rng(3)
    x = rng.normal(size=(14, 5)).astype("float32")
    y = np.repeat(np.arange(3), counts).astype("int32")
    inputs = keras.Input((5,))
    model = km.sam.SAMModel(inputs, keras.layers.Dense(3, name="dense")(inputs), rho=0.05)
    loss = km.losses.LDAMLoss(counts, scale=5.0)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=loss, jit_compile=JIT)
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: seen.append(
            [np.array(w) for w in model.get_layer("dense").get_weights()]))
    drw = km.callbacks.DeferredReweighting(start_epoch=1, beta=0.9)
    history = model.fit(x, y, batch_size=len(x), epochs=2, shuffle=False, verbose=0,
                        callbacks=[drw, record]).history["loss"]
    assert model.jit_compile == JIT
    assert drw.second_stage and loss.class_weights is not None
    weights = km.priors.class_balanced_weights(counts, 0.9)
    for epoch, class_weights in ((0, None), (1, weights)):
        kernel, bias = seen[epoch]
        logits = x @ kernel + bias
        weighted = float(km.losses.LDAMLoss(counts, scale=5.0,
                                            class_weights=class_weights)(y, logits))
        plain = float(km.losses.LDAMLoss(counts, scale=5.0)(y, logits))
        np.testing.assert_allclose(history[epoch], weighted, rtol=1e-5)
        if class_weights is not None:
            assert abs(weighted - plain) > 1e-3


@pytest.mark.parametrize("rho", [-0.1, float("nan"), float("inf"), "0.05", None, True])
def test_bad_rho_raises(rho):
    with pytest.raises(ValueError, match="rho.*received"):
        linear_model(km.sam.SAMModel, rho=rho)


def test_bad_adaptive_and_eta_raise():
    with pytest.raises(ValueError, match="adaptive.*received"):
        linear_model(km.sam.SAMModel, adaptive="yes")
    with pytest.raises(ValueError, match="eta.*received"):
        linear_model(km.sam.SAMModel, adaptive=True, eta=-1.0)


def test_config_and_saving_keep_rho_and_adaptive(tmp_path):
    model = linear_model(km.sam.SAMModel, rho=0.3, adaptive=True, eta=0.02)
    config = model.get_config()
    assert (config["rho"], config["adaptive"], config["eta"]) == (0.3, True, 0.02)
    revived = km.sam.SAMModel.from_config(config)
    assert isinstance(revived, km.sam.SAMModel)
    assert (revived.rho, revived.adaptive, revived.eta) == (0.3, True, 0.02)
    path = os.path.join(tmp_path, "sam.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, km.sam.SAMModel)
    assert (loaded.rho, loaded.adaptive, loaded.eta) == (0.3, True, 0.02)
    np.testing.assert_array_equal(loaded.get_layer("dense").get_weights()[0], W0)


def test_sam_model_wraps_an_existing_model():
    base = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    base.get_layer("dense").set_weights([W0, B0])
    model = km.sam.sam_model(base, rho=0.05)
    assert isinstance(model, km.sam.SAMModel) and model.rho == 0.05
    loss, w, b = one_step(model, lr=0.1)
    expected_loss, expected_w, expected_b = numpy_sam_step(0.05, 0.1)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    np.testing.assert_allclose(w, expected_w, rtol=1e-5, atol=1e-6)
    # The wrapper shares the wrapped model's weights.
    np.testing.assert_array_equal(base.get_layer("dense").get_weights()[0], w)


def test_sam_model_rejects_a_model_without_a_graph():
    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="sam_model needs a functional"):
        km.sam.sam_model(Subclassed(), rho=0.05)


def test_mixed_precision_step_is_finite():
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16" if BACKEND != "jax" else "mixed_bfloat16")
    try:
        model = linear_model(km.sam.SAMModel, rho=0.05)
        loss, w, b = one_step(model)
    finally:
        keras.config.set_dtype_policy(policy)
    assert np.isfinite(loss) and np.isfinite(w).all() and np.isfinite(b).all()
    assert not np.array_equal(w, W0)


class _MaskRecorder(keras.layers.Layer):
    """Identity that records which inputs are nonzero on concrete training calls."""

    def __init__(self, masks, **kwargs):
        super().__init__(**kwargs)
        self.record = masks.append  # (a list attribute would be copied by tracking)

    def call(self, x, training=None):
        if training and not isinstance(x, keras.KerasTensor):
            nonzero = keras.ops.not_equal(x, 0)
            if BACKEND == "jax":
                import jax
                jax.debug.callback(lambda m: self.record(np.asarray(m)), nonzero)
            else:
                self.record(to_numpy(nonzero))
        return x

    def compute_output_shape(self, shape):
        return shape


def test_both_passes_use_the_same_dropout_mask():
    masks = []
    keras.utils.set_random_seed(2)
    inputs = keras.Input((16,))
    hidden = keras.layers.Dense(16, kernel_initializer="ones", bias_initializer="ones")(inputs)
    hidden = _MaskRecorder(masks)(keras.layers.Dropout(0.5)(hidden))
    model = km.sam.SAMModel(inputs, keras.layers.Dense(1)(hidden), rho=0.1)
    # TensorFlow records only eagerly; JAX records under jit through a debug callback.
    model.compile(optimizer="sgd", loss="mse", run_eagerly=BACKEND != "jax",
                  jit_compile=BACKEND == "jax")
    x, y = np.ones((4, 16), "float32"), np.ones((4, 1), "float32")
    for _ in range(2):
        model.train_on_batch(x, y)
    if BACKEND == "jax":
        import jax
        jax.effects_barrier()
    assert len(masks) == 4
    np.testing.assert_array_equal(masks[0], masks[1])
    np.testing.assert_array_equal(masks[2], masks[3])
    assert not np.array_equal(masks[0], masks[2])  # a new mask at each step


def test_exported_lazily():
    assert "sam" in km.__all__ and km.sam.SAMModel is km.sam.SAMModel
