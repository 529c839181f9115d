"""CCSAMModel: one training step (loss and every weight after it) against CC-SAM's
per-class two-pass formula written out in NumPy (a loop over the classes, each
with its own perturbed head), for both perturbations, with sample weights and
soft labels; flat_ratio = 0 is plain training; the ramp callback; serialisation;
mixed precision; bad input."""

import os

import keras
import numpy as np
import pytest

import keras_margins as km
from backend_utils import BACKEND
from keras_margins.class_conditional_sam import CCSAMModel, FlatRatioRamp, cc_sam_model
from keras_margins.priors import cc_sam_feature_weights, cc_sam_weight_radii

RNG = np.random.default_rng(3)
X = RNG.normal(size=(8, 3)).astype("float32")
LABELS = np.array([0, 0, 1, 2, 0, 1, 1, 0])
COUNTS = [50, 12, 3]
A0 = RNG.normal(size=(3, 4)).astype("float32") * 0.7
a0 = RNG.normal(size=(4,)).astype("float32") * 0.3
W0 = RNG.normal(size=(4, 3)).astype("float32") * 0.8
B0 = RNG.normal(size=(3,)).astype("float32") * 0.3
LR = 0.5


def build(perturb="weights", radius=0.3, flat_ratio=0.4, counts=COUNTS):
    backbone = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="features")])
    head = keras.layers.Dense(3, name="logits")
    model = CCSAMModel(backbone, head, counts, perturb=perturb, radius=radius,
                       flat_ratio=flat_ratio)
    model(X[:1])
    backbone.layers[0].set_weights([A0, a0])
    head.set_weights([W0, B0])
    return model


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def cross_entropy(z, onehot):
    return -np.sum(onehot * np.log(softmax(z)), axis=1)


def numpy_step(perturb, radius, beta, targets, sample_weight=None):
    """Loss and weights after one SGD step of CC-SAM, by the per-class loop."""
    x = X.astype("float64")
    A, a, W, b = (v.astype("float64") for v in (A0, a0, W0, B0))
    classes = targets.argmax(axis=1)
    n = len(x)
    sw = np.ones(n) if sample_weight is None else sample_weight.astype("float64")
    f = x @ A + a
    z = f @ W + b
    delta = softmax(z) - targets                       # d loss_i / d z_i
    shifted_f = f.copy()
    z_flat = np.zeros_like(z)
    kernel_shift = np.zeros((n,) + W.shape)            # E_{y_i} for the feature gradient
    flat_sw = sw.copy()
    num_parameters = W.size + b.size
    for c in np.unique(classes):
        idx = np.flatnonzero(classes == c)
        if perturb == "weights":
            g_w = f[idx].T @ delta[idx] / len(idx)
            g_b = delta[idx].mean(axis=0)
            scale = radius * num_parameters ** 0.25 / (np.sqrt(2) * (COUNTS[c] - 1) ** 0.25)
            n_w, n_b = np.linalg.norm(g_w), np.linalg.norm(g_b)
            e_w = scale * np.sqrt(np.linalg.norm(W) / n_w) * g_w / n_w
            e_b = scale * np.sqrt(np.linalg.norm(b) / n_b) * g_b / n_b
            z_flat[idx] = f[idx] @ (W + e_w) + b + e_b
            kernel_shift[idx] = e_w
        else:
            u = delta[idx] @ W.T                             # d loss_i / d f_i
            w_c = np.log(max(COUNTS) / COUNTS[c] + 0.01) / 2
            shifted_f[idx] = f[idx] + radius * w_c * u / np.linalg.norm(u)
            z_flat[idx] = shifted_f[idx] @ W + b
            flat_sw[idx] = sw[idx] * w_c
    data = np.sum(sw * cross_entropy(z, targets)) / n
    flat = np.sum(flat_sw * cross_entropy(z_flat, targets)) / n
    loss = (1 - beta) * data + beta * flat
    dz = (1 - beta) * sw[:, None] * delta / n
    dz_flat = beta * flat_sw[:, None] * (softmax(z_flat) - targets) / n
    g_W = f.T @ dz + shifted_f.T @ dz_flat
    g_b = dz.sum(0) + dz_flat.sum(0)
    g_f = dz @ W.T + np.einsum("ndc,nc->nd", W + kernel_shift, dz_flat)
    g_A, g_a = x.T @ g_f, g_f.sum(0)
    return loss, [A - LR * g_A, a - LR * g_a, W - LR * g_W, b - LR * g_b]


def fit_one_step(model, y, loss, sample_weight=None):
    model.compile(optimizer=keras.optimizers.SGD(LR), loss=loss)
    history = model.fit(X, y, sample_weight=sample_weight, batch_size=len(X), epochs=1,
                        shuffle=False, verbose=0)
    weights = model.backbone.layers[0].get_weights() + model.head.get_weights()
    return history.history["loss"][0], weights


ONEHOT = np.eye(3)[LABELS]
SPARSE_CE = "sparse_ce"


def _loss(name):
    if name == SPARSE_CE:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return keras.losses.CategoricalCrossentropy(from_logits=True)


@pytest.mark.parametrize("perturb", ["weights", "features"])
@pytest.mark.parametrize("labels", ["sparse", "soft"])
@pytest.mark.parametrize("weighted", [False, True])
def test_step_matches_the_per_class_formula(perturb, labels, weighted):
    if labels == "sparse":
        y, targets, loss = LABELS, ONEHOT, SPARSE_CE
    else:  # mixed labels: grouped by their largest entry
        targets = 0.7 * ONEHOT + 0.3 * ONEHOT[::-1]
        y, loss = targets.astype("float32"), "ce"
    sample_weight = np.linspace(0.5, 2.0, len(X)).astype("float32") if weighted else None
    expected_loss, expected = numpy_step(perturb, 0.3, 0.4, targets, sample_weight)
    got_loss, got = fit_one_step(build(perturb), y, _loss(loss), sample_weight)
    np.testing.assert_allclose(got_loss, expected_loss, rtol=2e-5, atol=1e-6)
    for value, reference in zip(got, expected):
        np.testing.assert_allclose(value, reference, rtol=2e-4, atol=2e-5)
    # The perturbation matters at this radius: plain training lands elsewhere.
    _, plain = numpy_step(perturb, 0.0, 0.0, targets, sample_weight)
    assert max(np.abs(g - p).max() for g, p in zip(got, plain)) > 1e-3


@pytest.mark.parametrize("perturb", ["weights", "features"])
def test_flat_ratio_zero_is_plain_training(perturb):
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(3)])
    plain.set_weights([A0, a0, W0, B0])
    plain.compile(optimizer=keras.optimizers.SGD(LR), loss=_loss(SPARSE_CE))
    plain.fit(X, LABELS, batch_size=len(X), epochs=1, shuffle=False, verbose=0)
    _, got = fit_one_step(build(perturb, flat_ratio=0.0), LABELS, _loss(SPARSE_CE))
    for value, reference in zip(got, plain.get_weights()):
        np.testing.assert_allclose(value, reference, rtol=1e-6, atol=1e-7)


def test_predict_and_evaluate_use_the_unperturbed_model():
    model = build()
    model.compile(loss=_loss(SPARSE_CE))
    f = X @ A0 + a0
    np.testing.assert_allclose(model.predict(X, verbose=0), f @ W0 + B0, rtol=1e-5, atol=1e-5)
    expected = cross_entropy((f @ W0 + B0).astype("float64"), ONEHOT).mean()
    np.testing.assert_allclose(model.evaluate(X, LABELS, verbose=0), expected, rtol=1e-5)


def test_radius_constants():
    scales = cc_sam_weight_radii([5, 17], 81, 2.0)
    # kappa P^(1/4) / (sqrt(2) (n - 1)^(1/4)): (5 - 1)^(1/4) = sqrt(2), (17 - 1)^(1/4) = 2.
    np.testing.assert_allclose(scales, 2.0 * 3.0 / (np.sqrt(2) * np.array([np.sqrt(2), 2.0])))
    np.testing.assert_allclose(cc_sam_feature_weights([100, 10]),
                               [np.log(1.01) / 2, np.log(10.01) / 2])
    with pytest.raises(ValueError, match="at least 2 training samples per class"):
        cc_sam_weight_radii([10, 1, 4], 81)


def test_unsupported_backend_is_refused(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "numpy")
    backbone = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    with pytest.raises(ValueError, match="trains on the tensorflow, jax, torch backends; "
                                         "the current Keras backend is 'numpy'"):
        CCSAMModel(backbone, keras.layers.Dense(3), COUNTS)


def test_flat_ratio_ramp():
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: seen.append(model.flat_ratio))
    model = build("features", flat_ratio=0.0)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=_loss(SPARSE_CE))
    model.fit(X, LABELS, batch_size=4, epochs=3, verbose=0,
              callbacks=[FlatRatioRamp(4, limit=0.6), record])
    np.testing.assert_allclose(seen, [0.25, 0.5, 0.6])
    with pytest.raises(ValueError, match="`epochs` must be an integer >= 1"):
        FlatRatioRamp(0)
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3)])
    plain.compile(optimizer="sgd", loss=_loss(SPARSE_CE))
    with pytest.raises(ValueError, match="FlatRatioRamp needs a CCSAMModel"):
        plain.fit(X, LABELS, epochs=1, verbose=0, callbacks=[FlatRatioRamp(2)])


def test_cc_sam_model_shares_the_layers():
    inputs = keras.Input((3,))
    features = keras.layers.Dense(4, name="features")(inputs)
    outputs = keras.layers.Dense(3, name="logits")(features)
    network = keras.Model(inputs, outputs)
    network.set_weights([A0, a0, W0, B0])
    model = cc_sam_model(network, COUNTS, radius=0.3, flat_ratio=0.4)
    assert model.head is network.get_layer("logits")
    _, got = fit_one_step(model, LABELS, _loss(SPARSE_CE))
    _, expected = numpy_step("weights", 0.3, 0.4, ONEHOT)
    for value, reference in zip(network.get_weights(), expected):
        np.testing.assert_allclose(value, reference, rtol=2e-4, atol=2e-5)


def test_save_and_load(tmp_path):
    model = build("features", radius=0.7, flat_ratio=0.2)
    path = os.path.join(tmp_path, "cc_sam.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, CCSAMModel)
    assert (loaded.perturb, loaded.radius, loaded.flat_ratio) == ("features", 0.7, 0.2)
    assert loaded.class_counts == COUNTS
    np.testing.assert_allclose(loaded.predict(X, verbose=0), model.predict(X, verbose=0),
                               rtol=1e-6)
    # Training continues with the same CC-SAM step.
    _, expected = numpy_step("features", 0.7, 0.2, ONEHOT)
    loaded.backbone.layers[0].set_weights([A0, a0])
    loaded.head.set_weights([W0, B0])
    _, got = fit_one_step(loaded, LABELS, _loss(SPARSE_CE))
    for value, reference in zip(got, expected):
        np.testing.assert_allclose(value, reference, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("perturb", ["weights", "features"])
def test_mixed_precision_step(perturb):
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16" if BACKEND != "jax" else "mixed_bfloat16")
    try:
        loss, got = fit_one_step(build(perturb), LABELS, _loss(SPARSE_CE))
    finally:
        keras.config.set_dtype_policy(policy)
    expected_loss, expected = numpy_step(perturb, 0.3, 0.4, ONEHOT)
    np.testing.assert_allclose(loss, expected_loss, rtol=3e-2)
    for value, reference in zip(got, expected):
        np.testing.assert_allclose(value, reference, rtol=5e-2, atol=5e-2)


def test_bad_input():
    backbone = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    head = keras.layers.Dense(3)
    with pytest.raises(ValueError, match="`perturb` must be one of"):
        CCSAMModel(backbone, head, COUNTS, perturb="both")
    with pytest.raises(ValueError, match="at least 2 training samples per class"):
        CCSAMModel(backbone, head, [10, 1, 4])
    CCSAMModel(backbone, head, [10, 1, 4], perturb="features")  # no (n_c - 1) there
    with pytest.raises(ValueError, match="`radius` must be >= 0"):
        CCSAMModel(backbone, head, COUNTS, radius=-1.0)
    with pytest.raises(ValueError, match=r"`flat_ratio` must be in \[0, 1\]"):
        CCSAMModel(backbone, head, COUNTS, flat_ratio=1.5)
    with pytest.raises(ValueError, match="must be a keras.layers.Dense layer, received "
                                         "CosineDense"):
        CCSAMModel(backbone, km.layers.CosineDense(3), COUNTS)
    with pytest.raises(ValueError, match="no activation"):
        CCSAMModel(backbone, keras.layers.Dense(3, activation="softmax"), COUNTS)
    with pytest.raises(ValueError, match="class_counts"):
        CCSAMModel(backbone, head, [5, 0, 3])
    with pytest.raises(ValueError, match="has 4 classes but the head"):
        CCSAMModel(backbone, head, [5, 4, 3, 2])
    # Features of rank 3 at the head.
    deep = keras.Sequential([keras.Input((2, 3)), keras.layers.Dense(4)])
    model = CCSAMModel(deep, keras.layers.Dense(3), COUNTS, radius=0.3)
    model.compile(optimizer="sgd", loss=_loss(SPARSE_CE))
    with pytest.raises(ValueError, match=r"features of shape \(batch, dim\)"):
        model.fit(np.zeros((4, 2, 3), "float32"), np.zeros((4, 2)), verbose=0)
