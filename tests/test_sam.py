"""SAMModel / ASAM: one step against the two-pass formula in NumPy, rho = 0 is the
base optimizer, the DRW stage switch under jit, batch-norm statistics, config.
ImbSAMModel: one step against its head/tail formula in NumPy, no tail classes is
the base optimizer, every class a tail class is SAM, config."""

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


@pytest.mark.parametrize("tail_classes, sharp", [([0, 1], True), ([], False)])
def test_sam_model_with_tail_classes_is_imbsam(tail_classes, sharp):
    """Every class a tail class: the SAM step; none: the base optimizer's step."""
    base = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    base.get_layer("dense").set_weights([W0, B0])
    model = km.sam.sam_model(base, rho=0.05, tail_classes=tail_classes)
    assert isinstance(model, km.sam.ImbSAMModel) and model.rho == 0.05
    _, w, b = one_step(model, lr=0.1)
    _, expected_w, expected_b = numpy_sam_step(0.05 if sharp else 0.0, 0.1)
    np.testing.assert_allclose(w, expected_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b, expected_b, rtol=1e-5, atol=1e-6)


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


# -- ImbSAM ----------------------------------------------------------------------

LABELS = np.array([0, 1, 2, 0, 2, 1], "int32")
WC = RNG.normal(size=(3, 3)).astype("float32")
BC = RNG.normal(size=(3,)).astype("float32")


def classifier(model_class=keras.Model, **kwargs):
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(3, name="dense")(inputs)
    model = model_class(inputs, outputs, **kwargs)
    model.get_layer("dense").set_weights([WC, BC])
    return model


def cross_entropy_and_grad(w, b, part=None, sample_weight=None):
    """Keras' sparse softmax cross-entropy of x w + b (weighted sum / batch size),
    and the gradient of the samples in ``part`` (all when None), in float64."""
    x = X.astype("float64")
    sw = np.ones(len(x)) if sample_weight is None else sample_weight.astype("float64")
    logits = x @ w + b
    logits = logits - logits.max(1, keepdims=True)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    onehot = np.eye(3)[LABELS]
    loss = np.sum(sw * -np.log(np.sum(probs * onehot, 1))) / len(x)
    keep = np.ones(len(x)) if part is None else part.astype("float64")
    dz = (sw * keep)[:, None] * (probs - onehot) / len(x)
    return loss, x.T @ dz, dz.sum(0)


def numpy_imbsam_step(tail, rho, lr, sample_weight=None):
    """g = grad L_head(w) + grad L_tail(w + e), e = rho grad L_tail(w) / ||.||."""
    w, b = WC.astype("float64"), BC.astype("float64")
    in_tail = np.isin(LABELS, tail)
    loss, head_w, head_b = cross_entropy_and_grad(w, b, ~in_tail, sample_weight)
    _, tail_w, tail_b = cross_entropy_and_grad(w, b, in_tail, sample_weight)
    norm = np.sqrt(np.sum(tail_w ** 2) + np.sum(tail_b ** 2))
    scale = rho / norm if norm > 0 else 0.0
    _, sharp_w, sharp_b = cross_entropy_and_grad(
        w + scale * tail_w, b + scale * tail_b, in_tail, sample_weight)
    return loss, w - lr * (head_w + sharp_w), b - lr * (head_b + sharp_b)


def classifier_step(model, labels, sample_weight=None, lr=0.5):
    model.compile(optimizer=keras.optimizers.SGD(lr), jit_compile=JIT,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
                  if labels.ndim == 1 or labels.shape[-1] == 1 else
                  keras.losses.CategoricalCrossentropy(from_logits=True))
    logs = model.train_on_batch(X, labels, sample_weight=sample_weight, return_dict=True)
    w, b = model.get_layer("dense").get_weights()
    return float(logs["loss"]), w, b


@pytest.mark.parametrize("tail_classes,labels,sample_weight", [
    ([2], LABELS, None),                                       # sparse (batch,)
    ([False, True, True], np.eye(3, dtype="float32")[LABELS], SAMPLE_WEIGHT),  # one-hot
    ([1], LABELS[:, None], SAMPLE_WEIGHT)])                    # sparse (batch, 1)
def test_imbsam_step_matches_the_formula(tail_classes, labels, sample_weight):
    model = classifier(km.sam.ImbSAMModel, rho=0.5, tail_classes=tail_classes)
    loss, w, b = classifier_step(model, labels, sample_weight)
    tail = np.flatnonzero(tail_classes) if isinstance(tail_classes[0], bool) else tail_classes
    expected_loss, expected_w, expected_b = numpy_imbsam_step(tail, 0.5, 0.5, sample_weight)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    np.testing.assert_allclose(w, expected_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b, expected_b, rtol=1e-5, atol=1e-6)
    # Neither plain SGD nor SAM on the whole loss.
    _, plain_w, _ = numpy_imbsam_step([], 0.0, 0.5, sample_weight)
    _, sam_w, _ = numpy_imbsam_step([0, 1, 2], 0.5, 0.5, sample_weight)
    assert not np.allclose(w, plain_w, rtol=1e-4, atol=0)
    assert not np.allclose(w, sam_w, rtol=1e-4, atol=0)


def test_imbsam_without_tail_is_plain_and_all_tail_is_sam():
    _, none_w, none_b = classifier_step(
        classifier(km.sam.ImbSAMModel, rho=0.5, tail_classes=[]), LABELS)
    _, plain_w, plain_b = numpy_imbsam_step([], 0.0, 0.5)  # plain SGD
    np.testing.assert_allclose(none_w, plain_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(none_b, plain_b, rtol=1e-5, atol=1e-6)
    _, sam_w, sam_b = classifier_step(classifier(km.sam.SAMModel, rho=0.5), LABELS)
    _, all_w, all_b = classifier_step(
        classifier(km.sam.ImbSAMModel, rho=0.5, tail_classes=[True] * 3), LABELS)
    np.testing.assert_allclose(all_w, sam_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(all_b, sam_b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(sam_w, plain_w, rtol=1e-4, atol=0)


def test_imbsam_config_saving_and_bad_tail_classes(tmp_path):
    model = classifier(km.sam.ImbSAMModel, rho=0.2, adaptive=True,
                       tail_classes=[False, True, True])
    config = model.get_config()
    assert (config["rho"], config["adaptive"], config["tail_classes"]) == (0.2, True, [1, 2])
    revived = km.sam.ImbSAMModel.from_config(config)
    assert isinstance(revived, km.sam.ImbSAMModel) and revived.tail_classes == [1, 2]
    path = os.path.join(tmp_path, "imbsam.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, km.sam.ImbSAMModel)
    assert (loaded.rho, loaded.adaptive, loaded.eta, loaded.tail_classes) == (
        0.2, True, 0.01, [1, 2])
    np.testing.assert_array_equal(loaded.get_layer("dense").get_weights()[0], WC)
    for bad in (None, "2", [-1], [0.5], [[1, 2]]):
        with pytest.raises(ValueError, match="tail_classes"):
            classifier(km.sam.ImbSAMModel, tail_classes=bad)
    with pytest.raises(ValueError, match="rho.*received"):
        classifier(km.sam.ImbSAMModel, rho=-1.0, tail_classes=[1])
    assert km.sam.tail_classes_below([500, 120, 99, 10], 100) == [2, 3]
