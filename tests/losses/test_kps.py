"""KPSLoss: the authors' per-class lists, numpy formulas, class order, max_scale,
and gradient adjustment switching inside the compiled train step.
"""

import keras
import numpy as np
import pytest

import keras_margins as km
from backend_utils import BACKEND, float64_enabled, to_numpy, value_and_grad
from keras_margins.layers import l2_normalize
from .helpers import COUNTS, check_fit_and_roundtrip, check_matches_numpy_formula, inputs


def test_kps_formula_priors_are_close_to_authors_lists(reference):
    """SPEC's formula (any count order) vs the authors' reversed radius list."""
    lists = reference["class_lists"]
    loss = km.losses.KPSLoss(COUNTS, max_margin=0.2, scale=15.0)
    np.testing.assert_allclose(loss.radii, lists["kps_s_list_radius"], rtol=1e-12)
    np.testing.assert_allclose(loss.margins, lists["kps_m_list_max_m_0.2"], rtol=2e-3)
    np.testing.assert_allclose(loss.kps_scales, lists["kps_ga_scale_per_class_s15"], rtol=2e-3)
    c, labels = inputs(reference, dtype="float64")
    with float64_enabled():
        for ga, name in ((False, "kps_stage1"), (True, "kps_ga_stage")):
            loss.gradient_adjustment = ga
            value = float(loss(labels, c))
            assert value == pytest.approx(reference["losses"][name]["mean"], rel=5e-4)


@pytest.mark.parametrize("name", ["kps", "kps_ga", "kps_ga_drw"])
def test_matches_numpy_formula(reference, name):
    check_matches_numpy_formula(reference, name)


def test_kps_counts_in_any_order(reference):
    """Permuting the classes (counts, columns, labels) permutes nothing in the loss."""
    c, labels = inputs(reference)
    perm = np.array([3, 9, 0, 7, 5, 1, 8, 2, 6, 4])
    counts = np.asarray(COUNTS)[perm]
    inverse = np.argsort(perm)
    for ga in (False, True):
        ordered = km.losses.KPSLoss(COUNTS, gradient_adjustment=ga)
        shuffled = km.losses.KPSLoss(counts, gradient_adjustment=ga)
        assert float(shuffled(inverse[labels], c[:, perm])) == pytest.approx(
            float(ordered(labels, c)), rel=1e-6)
        # Rarest class (count 50) gets the largest margin and the GA scale.
        assert np.argmax(shuffled.margins) == int(np.argmin(counts))
        assert np.argmax(shuffled.kps_scales) == int(np.argmin(counts))


@pytest.mark.parametrize("scale", [15.0, 64.0])
def test_kps_max_scale_follows_a_large_scale(scale):
    """Without ``max_scale`` the clip is ``max(50, scale)``: the authors' 50 at
    scale 15, and a scale above 50 needs no second argument."""
    loss = km.losses.KPSLoss(COUNTS, scale=scale)
    assert loss.max_scale == max(50.0, scale)
    expected = km.priors.kps_scales(COUNTS, scale, max(50.0, scale))
    np.testing.assert_allclose(loss.kps_scales, expected)
    if scale > 50:   # nothing above the base scale is left to adjust to
        np.testing.assert_allclose(loss.kps_scales, scale)
    reloaded = km.losses.KPSLoss.from_config(loss.get_config())
    np.testing.assert_allclose(reloaded.kps_scales, loss.kps_scales)


# ------------------------------------------- gradient adjustment: compiled step switches

class KernelSteps(keras.callbacks.Callback):
    """Records the kernel before every epoch, the loss, and the GA flag in use."""

    def __init__(self, loss):
        super().__init__()
        self.loss = loss
        self.before, self.after, self.stage = [], [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.before.append(to_numpy(self.model.layers[-1].kernel).copy())
        self.stage.append(self.loss.gradient_adjustment)

    def on_epoch_end(self, epoch, logs=None):
        self.after.append(to_numpy(self.model.layers[-1].kernel).copy())


def _head_model(features):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((features,))
    return keras.Model(inputs, km.layers.CosineDense(10)(inputs))


def _expected_gradient(x, labels, kernel, gradient_adjustment):
    """d(mean KPS loss)/d(kernel), computed eagerly outside ``fit``."""
    loss = km.losses.KPSLoss(COUNTS, gradient_adjustment=gradient_adjustment)
    features = l2_normalize(keras.ops.convert_to_tensor(x), axis=-1)

    def function(k):
        return loss(labels, keras.ops.matmul(features, l2_normalize(k, axis=0)))

    return value_and_grad(function, kernel)[1]


def _fit_steps(x, labels, loss, start_epoch, initial_epoch, epochs):
    model = _head_model(x.shape[-1])
    # SGD without momentum and learning rate 1: kernel_before - kernel_after = gradient.
    # XLA on TensorFlow and JAX. Under torch, Keras' default train step is eager:
    # torch.compile takes minutes on a CPU, and the rebuild the switch relies on
    # (make_train_function(force=True)) is the same code path on every backend.
    jit_compile = BACKEND != "torch"
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss=loss, jit_compile=jit_compile)
    record = KernelSteps(loss)
    model.fit(x, labels, batch_size=len(labels), epochs=epochs, initial_epoch=initial_epoch,
              shuffle=False, verbose=0,
              callbacks=[km.callbacks.GradientAdjustment(start_epoch), record])
    return record


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 12)).astype("float32")
    # Mostly tail labels: their GA scales differ most from the base scale.
    labels = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0] * 3 + [9, 8], "int32")
    return x, labels


def _check_steps(record, x, labels, expected_stages):
    assert record.stage == expected_stages
    for before, after, stage in zip(record.before, record.after, record.stage):
        fitted = before - after
        expected = _expected_gradient(x, labels, before, stage)
        other = _expected_gradient(x, labels, before, not stage)
        scale = np.abs(expected).max()
        # The two stages' gradients differ clearly, so the check below can fail.
        assert np.abs(expected - other).max() > 0.1 * scale
        np.testing.assert_allclose(fitted, expected, rtol=1e-3, atol=1e-4 * scale)


def test_gradient_adjustment_changes_compiled_gradient(batch):
    x, labels = batch
    loss = km.losses.KPSLoss(COUNTS)
    record = _fit_steps(x, labels, loss, start_epoch=1, initial_epoch=0, epochs=2)
    _check_steps(record, x, labels, [False, True])


def test_resuming_past_the_switch_starts_in_ga_stage(batch):
    x, labels = batch
    loss = km.losses.KPSLoss(COUNTS)
    record = _fit_steps(x, labels, loss, start_epoch=1, initial_epoch=2, epochs=3)
    _check_steps(record, x, labels, [True])
    # A loss saved in the GA stage, resumed before the switch, goes back to stage 1.
    loss = km.losses.KPSLoss(COUNTS, gradient_adjustment=True)
    record = _fit_steps(x, labels, loss, start_epoch=5, initial_epoch=3, epochs=4)
    _check_steps(record, x, labels, [False])


def test_gradient_adjustment_finds_wrapped_kps_loss():
    kps = km.losses.KPSLoss(COUNTS)
    model = _head_model(4)
    model.compile(loss=km.losses.SampleMarginLoss(kps, weight=0.5))
    callback = km.callbacks.GradientAdjustment(2)
    callback.set_model(model)
    assert callback.targets() == [kps]


# ------------------------------------------------------------- short fit, save / load

@pytest.mark.parametrize("name", ["kps_ga"])
def test_fit_and_roundtrip(fashion_mnist_lt_small, tmp_path, name):
    check_fit_and_roundtrip(fashion_mnist_lt_small, tmp_path, name)
