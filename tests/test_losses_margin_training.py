"""Training with the margin losses: GA switching under jit, resuming, short fits.

Needs ../shared/datasets for the `fit` tests (real long-tailed Fashion-MNIST).
"""

import keras
import numpy as np
import pytest

import keras_margins as km
from backend_utils import BACKEND, fit_and_roundtrip, small_model, to_numpy, value_and_grad
from keras_margins.layers import l2_normalize

COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


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


# ------------------------------------------------------------- short fits, save / load

def _fit_cases(counts):
    return {
        "mm_ldam_drw": (lambda: km.losses.MaxMarginLoss(1.29, 1.528, 26.0, class_counts=counts),
                        True, None, lambda: [km.callbacks.DeferredReweighting(counts, 0)]),
        "kps_ga": (lambda: km.losses.KPSLoss(counts), True, None,
                   lambda: [km.callbacks.GradientAdjustment(0)]),
        "lmsce": (lambda: km.losses.LMSCELoss(0.3), False, None, None),
        "lm_softmax_zero_centroid": (lambda: km.losses.LMSoftmaxLoss(5.0), True,
                                     km.regularizers.ZeroCentroid(1.0), None),
        "gm_softmax": (lambda: km.losses.GMSoftmaxLoss(1.0, 0.8, 0.0, 0.5, 16.0), True,
                       None, None),
        "sample_margin": (lambda: km.losses.SampleMarginLoss(
            km.losses.LDAMLoss(counts), weight=0.5), True, None,
            lambda: [km.callbacks.DeferredReweighting(counts, 0)]),
    }


FIT_NAMES = sorted(_fit_cases(COUNTS))


@pytest.mark.parametrize("name", FIT_NAMES)
def test_fit_and_roundtrip(fashion_mnist_lt_small, tmp_path, name):
    x, y, counts = fashion_mnist_lt_small
    make, cosine, regularizer, callbacks = _fit_cases(counts)[name]
    model = small_model(cosine=cosine, head_regularizer=regularizer)
    loss = make()
    history, reloaded = fit_and_roundtrip(model, loss, x, y, tmp_path, epochs=1,
                                          callbacks=callbacks() if callbacks else None,
                                          batch_size=128)
    assert np.isfinite(history.history["loss"][-1])
    if regularizer is not None:
        head = reloaded.layers[-1]
        assert isinstance(head.kernel_regularizer, km.regularizers.ZeroCentroid)
        assert head.kernel_regularizer.weight == regularizer.weight
    if name == "kps_ga":
        assert reloaded.loss.gradient_adjustment is True
    if name in ("mm_ldam_drw", "sample_margin"):
        switched = reloaded.loss if name == "mm_ldam_drw" else reloaded.loss.base_loss
        np.testing.assert_allclose(switched.class_weights,
                                   km.priors.class_balanced_weights(counts, 0.9999))


def test_fit_normalized_family_multi_head(fashion_mnist_lt_small, tmp_path):
    """One model, one cosine head per loss of the family: one compile for five losses."""
    x, y, _ = fashion_mnist_lt_small
    losses = [km.losses.NormFaceLoss(16.0), km.losses.CosFaceLoss(0.35, 30.0),
              km.losses.ArcFaceLoss(0.5, 30.0), km.losses.SphereFaceLoss(1.35, 30.0),
              km.losses.CombinedMarginLoss(1.2, 0.2, 0.1, 30.0)]
    keras.utils.set_random_seed(0)
    inputs = keras.Input(x.shape[1:])
    h = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(inputs))
    outputs = [km.layers.CosineDense(10, name=f"head_{i}")(h) for i in range(len(losses))]
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=losses)
    history = model.fit(x, [y] * len(losses), epochs=1, batch_size=128, verbose=0)
    for key, values in history.history.items():
        assert np.all(np.isfinite(values)), (key, values)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    for before, after in zip(model.predict(x[:32], verbose=0),
                             reloaded.predict(x[:32], verbose=0)):
        np.testing.assert_allclose(to_numpy(after), to_numpy(before), rtol=1e-5, atol=1e-6)
    assert [type(loss) for loss in reloaded.loss] == [type(loss) for loss in losses]
    assert [loss.get_config() for loss in reloaded.loss] == [
        loss.get_config() for loss in losses]
