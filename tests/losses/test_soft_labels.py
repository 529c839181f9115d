"""Soft (mixed) labels: MixUp / CutMix targets give the mixture of per-label losses.

For soft labels ``q`` (rows non-negative, summing to 1) every per-sample loss
is ``l(x, q) = sum_k q_k l(x, k)`` (Zhang et al. 2018) and the class weight is
``w(q) = sum_k q_k w_k``. The reference here evaluates the loss once per class
``k`` with sparse labels and mixes the values in numpy, so it never uses the
top-2 decomposition of the pipeline. Losses defined for hard labels only
(LADE, EQLv2) and rows mixing 3+ classes (label smoothing) raise ``ValueError``
in eager mode and give NaN rows under ``jit``. Run once per backend.
"""

import keras
import numpy as np
import pytest

import keras_margins as km
from backend_utils import BACKEND, to_numpy, value_and_grad

C = 5
B = 8
COUNTS = [50, 20, 10, 5, 2]
WEIGHTS = np.array([0.5, 0.8, 1.1, 1.7, 2.4])
F = km.losses

# Every loss class of keras_margins.losses accepting soft labels -> constructor arguments.
SOFT = {
    "LDAMLoss": dict(class_counts=COUNTS, scale=16.0),
    "ELMLoss": dict(class_counts=COUNTS, lam=0.5, scale=16.0),
    "MaxMarginLoss": dict(delta_neg=0.6, beta=1.5, scale=19.0, class_counts=COUNTS),
    "KPSLoss": dict(class_counts=COUNTS, scale=16.0, gradient_adjustment=True, max_scale=40.0),
    "LMSCELoss": dict(lam=0.4),
    "LMSoftmaxLoss": dict(scale=8.0),
    "GMSoftmaxLoss": dict(alpha1=1.2, alpha2=0.7, beta1=-0.3, beta2=0.4, scale=16.0),
    "SampleMarginLoss": dict(),
    "CombinedMarginLoss": dict(m1=1.35, m2=0.3, m3=0.2, scale=30.0),
    "NormFaceLoss": dict(scale=16.0),
    "CosFaceLoss": dict(margin=0.35, scale=30.0),
    "ArcFaceLoss": dict(margin=0.5, scale=30.0),
    "SphereFaceLoss": dict(margin=1.35, scale=30.0),
    "FocalLoss": dict(gamma=2.0),
    "ClassBalancedLoss": dict(class_counts=COUNTS, beta=0.999, loss_type="focal", gamma=0.5),
    "LogitAdjustedLoss": dict(class_counts=COUNTS, tau=0.7),
    "InfluenceBalancedLoss": dict(class_counts=COUNTS, alpha=100.0, gamma=1.5),
    "VSLoss": dict(class_counts=COUNTS, gamma=0.3, tau=1.0),
    "LabelAwareSmoothingLoss": dict(class_counts=COUNTS, eps_max=0.4, eps_min=0.1,
                                    shape="convex"),
}
# Defined for hard labels only: one-hot rows are accepted, soft rows raise.
HARD = {
    "LADELoss": dict(class_counts=COUNTS, alpha=0.5),
    "EqualizationLossV2": dict(num_classes=C),
}


def _make(name, **extra):
    arguments = {**(SOFT[name] if name in SOFT else HARD[name]), **extra}
    cls = getattr(F, name)
    if cls.accepts_class_weights and "class_weights" not in extra:
        arguments["class_weights"] = WEIGHTS
    return cls(**arguments)


def _inputs(name, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.9, 0.9, size=(B, C)).astype("float32")
    if name == "InfluenceBalancedLoss":  # concat([logits, ||h||_1])
        norms = rng.uniform(0.5, 3.0, size=(B, 1)).astype("float32")
        x = np.concatenate([3.0 * x, norms], axis=1)
    return x


def _mixup(seed=0):
    """MixUp of a batch with a permutation of itself: ``q = lam e_a + (1 - lam) e_b``."""
    rng = np.random.default_rng(seed)
    first = rng.integers(0, C, size=B)
    second = first[rng.permutation(B)]
    second[0], first[0] = 4, 0                     # a tail class for sure
    second[1] = (first[1] + 1) % C
    lam = rng.uniform(0.05, 0.95, size=B)
    lam[2] = 1.0                                   # a one-hot row among soft ones
    lam[3] = 0.5                                   # a tie
    eye = np.eye(C)
    q = lam[:, None] * eye[first] + (1.0 - lam[:, None]) * eye[second]
    return q.astype("float32")


def _components(loss, x):
    """(B, C): the unweighted per-sample values ``l(x, k)`` for every class k."""
    return np.stack([to_numpy(loss.call(np.full(B, k), x)).astype("float64")
                     for k in range(C)], axis=1)


def _class_weights(loss):
    return np.ones(C) if loss.class_weights is None else np.asarray(loss.class_weights)


def test_every_loss_class_is_listed():
    classes = {name for name in F.__all__
               if isinstance(getattr(F, name), type)
               and issubclass(getattr(F, name), F.MarginLoss) and name != "MarginLoss"}
    assert classes == set(SOFT) | set(HARD)
    assert all(getattr(F, name).accepts_soft_labels for name in SOFT)
    assert not any(getattr(F, name).accepts_soft_labels for name in HARD)


@pytest.mark.parametrize("name", sorted(SOFT))
def test_soft_labels_give_the_mixture(name):
    x, q = _inputs(name), _mixup()
    loss = _make(name)
    components = _components(loss, x)
    mixture = np.sum(q * components, axis=1)
    weights = q @ _class_weights(loss)
    # unweighted values (call), weighted per-sample values, reduced value
    np.testing.assert_allclose(to_numpy(loss.call(q, x)), mixture, rtol=1e-5, atol=1e-5)
    per_sample = _make(name, reduction=None) if not loss.accepts_class_weights else \
        _make(name, reduction=None, class_weights=WEIGHTS)
    np.testing.assert_allclose(to_numpy(per_sample(q, x)), weights * mixture,
                               rtol=1e-5, atol=1e-5)
    if loss.reduction == "mean_with_sample_weight":
        expected = np.sum(weights * mixture) / np.sum(weights)
    else:
        expected = np.mean(weights * mixture)
    assert float(to_numpy(loss(q, x))) == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # the rows do mix: the mixture differs from the loss of the larger label
    hard = components[np.arange(B), np.argmax(q, axis=1)]
    assert np.max(np.abs(mixture - hard)) > 1e-3


@pytest.mark.parametrize("name", sorted(SOFT) + sorted(HARD))
def test_one_hot_equals_sparse(name):
    x = _inputs(name)
    labels = np.array([0, 4, 3, 1, 4, 2, 0, 4])
    # fresh losses: EQLv2 updates its statistics on every call
    sparse = to_numpy(_make(name, reduction=None)(labels, x))
    one_hot = to_numpy(_make(name, reduction=None)(np.eye(C, dtype="float32")[labels], x))
    np.testing.assert_allclose(one_hot, sparse, rtol=1e-6, atol=1e-6)
    assert np.all(np.isfinite(sparse))


@pytest.mark.parametrize("name", ["LDAMLoss", "ELMLoss", "ArcFaceLoss", "FocalLoss",
                                  "SampleMarginLoss"])
def test_gradient_is_the_mixture_gradient(name):
    x, q = _inputs(name), _mixup(1)
    loss = _make(name, reduction=None)
    value, grad = value_and_grad(lambda z: keras.ops.sum(loss(q, z)), x)
    weights = q @ _class_weights(loss)

    def reference(z):
        total = 0.0
        for k in range(C):
            per_class = keras.ops.convert_to_tensor((weights * q[:, k]).astype("float32"))
            total = total + keras.ops.sum(per_class * loss.call(np.full(B, k), z))
        return total

    want_value, want_grad = value_and_grad(reference, x)
    assert float(value) == pytest.approx(float(want_value), rel=1e-5)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-5)
    assert np.max(np.abs(grad)) > 0


def test_functional_forms_equal_their_classes_on_soft_labels():
    x, q = _inputs("LDAMLoss"), _mixup(2)
    pairs = [
        (F.LDAMLoss(COUNTS, class_weights=WEIGHTS, reduction=None),
         F.ldam_loss(q, x, COUNTS, class_weights=WEIGHTS)),
        (F.FocalLoss(2.0, class_weights=WEIGHTS, reduction=None),
         F.focal_loss(q, x, 2.0, class_weights=WEIGHTS)),
        (F.VSLoss(COUNTS, class_weights=WEIGHTS, reduction=None),
         F.vs_loss(q, x, COUNTS, class_weights=WEIGHTS)),
        (F.ClassBalancedLoss(COUNTS, beta=0.999, reduction=None),
         F.class_balanced_loss(q, x, COUNTS, beta=0.999)),
    ]
    for loss, functional in pairs:
        np.testing.assert_allclose(to_numpy(functional), to_numpy(loss(q, x)),
                                   rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layer", ["MixUp", "CutMix"])
def test_keras_augmentation_layers(layer):
    rng = np.random.default_rng(3)
    images = rng.uniform(0, 255, size=(B, 8, 8, 3)).astype("float32")
    labels = np.eye(C, dtype="float32")[rng.integers(0, C, size=B)]
    augment = getattr(keras.layers, layer)(alpha=1.0, seed=7) if layer == "MixUp" else \
        keras.layers.CutMix(factor=1.0, seed=7)
    q = to_numpy(augment({"images": images, "labels": labels}, training=True)["labels"])
    assert np.max(np.sort(q, axis=1)[:, -2]) > 0.01        # some rows do mix
    loss = _make("LDAMLoss", reduction=None)
    x = _inputs("LDAMLoss", seed=4)
    mixture = np.sum(q * _components(loss, x), axis=1)
    np.testing.assert_allclose(to_numpy(loss(q, x)), (q @ WEIGHTS) * mixture,
                               rtol=1e-5, atol=1e-5)


SMOOTHED = (0.9 * np.eye(C)[[0, 1, 2, 3]] + 0.1 / C).astype("float32")  # label smoothing


@pytest.mark.parametrize("name", ["LDAMLoss", "FocalLoss", "ArcFaceLoss", "VSLoss"])
def test_rows_mixing_three_classes_raise(name):
    loss = _make(name)
    with pytest.raises(ValueError, match=r"at most two classes.*row 0"):
        loss(SMOOTHED, _inputs(name)[:4])
    not_summing = np.array([[0.5, 0.2, 0, 0, 0]] * 4, "float32")
    with pytest.raises(ValueError, match=r"summing to 1"):
        loss(not_summing, _inputs(name)[:4])


@pytest.mark.parametrize("name", sorted(HARD))
def test_hard_label_losses_reject_soft_labels(name):
    loss = _make(name)
    x, q = _inputs(name), _mixup()
    with pytest.raises(ValueError, match="hard labels only"):
        loss(q, x)
    with pytest.raises(ValueError, match="hard labels only"):
        loss(SMOOTHED, x[:4])
    functional = (lambda y: F.lade_loss(y, x, COUNTS)) if name == "LADELoss" else \
        (lambda y: F.equalization_loss_v2(y, x, np.ones(C), np.ones(C)))
    with pytest.raises(ValueError, match="hard labels only"):
        functional(q)
    assert np.all(np.isfinite(to_numpy(functional(np.eye(C, dtype="float32")[q.argmax(1)]))))


def _jit(function):
    if BACKEND == "jax":
        import jax
        return jax.jit(function)
    if BACKEND == "tensorflow":
        import tensorflow as tf
        return tf.function(function)
    # torch runs the losses eagerly: take the branch a traced tensor takes (its
    # values cannot be read, so no eager check runs and bad rows become NaN).
    from keras_margins import ops as km_ops

    def symbolic(*args):
        saved = km_ops._concrete_numpy
        km_ops._concrete_numpy = lambda x: None
        try:
            return function(*args)
        finally:
            km_ops._concrete_numpy = saved
    return symbolic


def test_under_jit_soft_labels_match_eager_and_bad_rows_give_nan():
    x, q = _inputs("LDAMLoss"), _mixup()
    loss = _make("LDAMLoss", reduction=None)
    eager = to_numpy(loss(q, x))
    jitted = _jit(lambda labels, scores: loss(labels, scores))
    np.testing.assert_allclose(to_numpy(jitted(q, x)), eager, rtol=1e-6, atol=1e-6)
    labels = np.array([0, 4, 3, 1, 4, 2, 0, 4])
    np.testing.assert_allclose(to_numpy(jitted(np.eye(C, dtype="float32")[labels], x)),
                               to_numpy(loss(labels, x)), rtol=1e-6, atol=1e-6)
    mixed = q.copy()
    mixed[:4] = SMOOTHED
    values = to_numpy(jitted(mixed, x))
    assert np.all(np.isnan(values[:4])) and np.all(np.isfinite(values[4:]))
    np.testing.assert_allclose(values[4:], eager[4:], rtol=1e-6)
    # a hard-label-only loss: NaN exactly on the soft rows
    hard = _jit(lambda labels, scores: F.equalization_loss_v2(labels, scores, np.ones(C),
                                                              np.ones(C)))
    onehot = np.eye(C, dtype="float32")[labels]
    onehot[[1, 5]] = q[[1, 5]]
    values = to_numpy(hard(onehot, x))
    assert np.all(np.isnan(values[[1, 5]]))
    assert np.sum(np.isfinite(values)) == B - 2


def test_fit_with_mixup_labels():
    rng = np.random.default_rng(5)
    features = rng.normal(size=(64, 6)).astype("float32")
    labels = np.eye(C, dtype="float32")[rng.integers(0, C, size=64)]
    mixed = to_numpy(keras.layers.MixUp(alpha=1.0, seed=1)(
        {"images": features.reshape(64, 1, 1, 6), "labels": labels}, training=True)["labels"])
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), km.layers.CosineDense(C)])
    loss = F.LDAMLoss(COUNTS, scale=16.0, class_weights=WEIGHTS)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
    history = model.fit(features, mixed, batch_size=32, epochs=1, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    # the compiled evaluation equals the mixture of the eager per-class values
    outputs = to_numpy(model(features))
    components = np.stack([to_numpy(loss.call(np.full(64, k), outputs)) for k in range(C)], 1)
    weights = mixed @ WEIGHTS
    expected = np.sum(weights * np.sum(mixed * components, axis=1)) / np.sum(weights)
    assert model.evaluate(features, mixed, batch_size=64, verbose=0) == \
        pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_mixed_precision_soft_labels_are_finite(dtype):
    q = _mixup()
    for name in ("LDAMLoss", "ArcFaceLoss", "FocalLoss"):
        loss = _make(name, dtype=f"mixed_{dtype}")
        x = keras.ops.cast(_inputs(name), dtype)
        value = to_numpy(loss(keras.ops.cast(q, dtype), x))
        assert np.isfinite(value) and value.dtype == np.float32
        reference = float(to_numpy(_make(name)(q, _inputs(name))))
        assert float(value) == pytest.approx(reference, rel=5e-2)


def test_sample_margin_with_a_base_loss():
    """Fused (sparse CE base) and unfused (categorical CE base) give the same mixture."""
    x, q = _inputs("SampleMarginLoss"), _mixup(4)
    fused = F.SampleMarginLoss(keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                               weight=0.5)
    unfused = F.SampleMarginLoss(keras.losses.CategoricalCrossentropy(from_logits=True),
                                 weight=0.5)
    expected = np.mean(np.sum(q * _components(fused, x), axis=1))
    assert float(to_numpy(fused(q, x))) == pytest.approx(expected, rel=1e-5)
    assert float(to_numpy(unfused(q, x))) == pytest.approx(expected, rel=1e-5)
