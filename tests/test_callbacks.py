"""DeferredReweighting: the compiled train step really switches, resumes, and errors."""

import os

import keras
import numpy as np
import pytest

import keras_margins as km
from backend_utils import BACKEND, fit_and_roundtrip, small_model, to_numpy

# TensorFlow and JAX: XLA jit. torch: eager, Keras' default for torch. The
# rebuild also works under torch.compile (jit_compile=True; checked by hand with
# KM_TORCH_COMPILE=1), but each rebuild compiles for ~30-80 s on 2 CPU cores,
# too slow for CI.
JIT = [True] if BACKEND != "torch" else [False]
if BACKEND == "torch" and os.environ.get("KM_TORCH_COMPILE") == "1":
    JIT = [True]
JIT_GRADIENT = JIT


def full_batch_fit(model, loss, x, y, epochs, callbacks, learning_rate, jit_compile,
                   initial_epoch=0):
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss=loss,
                  jit_compile=jit_compile)
    return model.fit(x, y, batch_size=len(x), epochs=epochs, initial_epoch=initial_epoch,
                     shuffle=False, verbose=0, callbacks=callbacks).history["loss"]


def expected_losses(model, counts, x, y, weights):
    cosines = to_numpy(model.predict(x, verbose=0))
    plain = float(km.losses.LDAMLoss(counts)(y, cosines))
    weighted = float(km.losses.LDAMLoss(counts, class_weights=weights)(y, cosines))
    return plain, weighted


@pytest.mark.parametrize("jit_compile", JIT)
def test_switch_changes_the_compiled_loss(fashion_mnist_lt_small, jit_compile):
    x, y, counts = fashion_mnist_lt_small
    model = small_model()
    drw = km.callbacks.DeferredReweighting(counts, start_epoch=1)
    # Learning rate 0: the model is frozen, so each epoch's loss shows the stage.
    history = full_batch_fit(model, km.losses.LDAMLoss(counts), x, y, 3, [drw], 0.0,
                             jit_compile)
    plain, weighted = expected_losses(model, counts, x, y, drw.weights)
    assert abs(plain - weighted) > 1e-3 * plain  # 50x the tolerance below
    np.testing.assert_allclose(history, [plain, weighted, weighted], rtol=2e-5)


@pytest.mark.parametrize("jit_compile", JIT_GRADIENT)
def test_switch_changes_the_gradient_step(fashion_mnist_lt_small, jit_compile):
    x, y, counts = fashion_mnist_lt_small
    weights = km.priors.class_balanced_weights(counts, 0.9999)

    def kernel_after_one_step(loss, callbacks):
        model = small_model(seed=3)
        full_batch_fit(model, loss, x, y, 1, callbacks, 0.5, jit_compile)
        return to_numpy(model.layers[-1].kernel)

    switched = kernel_after_one_step(
        km.losses.LDAMLoss(counts), [km.callbacks.DeferredReweighting(counts, 0)])
    direct = kernel_after_one_step(km.losses.LDAMLoss(counts, class_weights=weights), [])
    unweighted = kernel_after_one_step(
        km.losses.LDAMLoss(counts), [km.callbacks.DeferredReweighting(counts, 5)])
    np.testing.assert_allclose(switched, direct, rtol=1e-5, atol=1e-6)
    assert np.abs(switched - unweighted).max() > 1e-3


def test_resuming_past_the_switch_starts_reweighted(fashion_mnist_lt_small):
    x, y, counts = fashion_mnist_lt_small
    model = small_model()
    drw = km.callbacks.DeferredReweighting(counts, start_epoch=3)
    history = full_batch_fit(model, km.losses.LDAMLoss(counts), x, y, 5, [drw], 0.0, True,
                             initial_epoch=4)
    _, weighted = expected_losses(model, counts, x, y, drw.weights)
    np.testing.assert_allclose(history, [weighted], rtol=2e-5)
    assert drw.second_stage is True


def test_trains_saves_and_reloads_with_drw(fashion_mnist_lt_small, tmp_path):
    x, y, counts = fashion_mnist_lt_small
    drw = km.callbacks.DeferredReweighting(counts, start_epoch=1)
    loss = km.losses.LDAMLoss(counts)
    _, reloaded = fit_and_roundtrip(small_model(), loss, x, y, tmp_path, epochs=2,
                                    callbacks=[drw])
    np.testing.assert_allclose(reloaded.loss.class_weights, drw.weights)


def test_elm_loss_inside_a_list_is_found(fashion_mnist_lt_small):
    x, y, counts = fashion_mnist_lt_small
    model = small_model()
    loss = km.losses.ELMLoss(counts)
    model.compile(optimizer="sgd", loss=[loss])
    model.fit(x[:64], y[:64], epochs=1, verbose=0,
              callbacks=[km.callbacks.DeferredReweighting(counts, start_epoch=0)])
    assert loss.class_weights is not None


def test_model_without_switchable_loss_raises(fashion_mnist_lt_small):
    x, y, counts = fashion_mnist_lt_small
    model = small_model(cosine=False)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="DeferredReweighting.*class_weights"):
        model.fit(x[:32], y[:32], epochs=1, verbose=0,
                  callbacks=[km.callbacks.DeferredReweighting(counts, 0)])
    with pytest.raises(ValueError, match="GradientAdjustment"):
        model.fit(x[:32], y[:32], epochs=1, verbose=0,
                  callbacks=[km.callbacks.GradientAdjustment(0)])


@pytest.mark.parametrize("make, name", [
    (lambda: km.callbacks.DeferredReweighting([10, 5], start_epoch=-1), "start_epoch"),
    (lambda: km.callbacks.DeferredReweighting([10, 5], start_epoch=1.5), "start_epoch"),
    (lambda: km.callbacks.DeferredReweighting([10, 0], start_epoch=1), "class_counts"),
    (lambda: km.callbacks.DeferredReweighting([10, 5], beta=1.0), "beta"),
    (lambda: km.callbacks.GradientAdjustment(start_epoch=-2), "start_epoch"),
])
def test_bad_arguments(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_mismatched_class_counts_fail_at_switch(fashion_mnist_lt_small):
    x, y, counts = fashion_mnist_lt_small
    model = small_model()
    model.compile(optimizer="sgd", loss=km.losses.LDAMLoss(counts))
    with pytest.raises(ValueError, match="class_weights"):
        model.fit(x[:32], y[:32], epochs=1, verbose=0,
                  callbacks=[km.callbacks.DeferredReweighting(counts[:5], 0)])


def test_a_switch_at_or_past_the_last_epoch_warns(fashion_mnist_lt_small):
    import warnings
    x, y, counts = fashion_mnist_lt_small
    model = small_model()
    model.compile(optimizer="sgd", loss=km.losses.LDAMLoss(counts))
    with pytest.warns(UserWarning, match=r"start_epoch=2\) never switches: fit runs epochs 0-1"):
        model.fit(x[:32], y[:32], epochs=2, verbose=0,
                  callbacks=[km.callbacks.DeferredReweighting(counts, 2)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x[:32], y[:32], epochs=2, verbose=0,
                  callbacks=[km.callbacks.DeferredReweighting(counts, 1)])
    assert not [w for w in caught if "never switches" in str(w.message)]


def test_drw_reads_the_class_counts_from_the_loss(fashion_mnist_lt_small):
    x, y, counts = fashion_mnist_lt_small
    model = small_model()
    loss = km.losses.LDAMLoss(counts)
    model.compile(optimizer="sgd", loss=loss)
    model.fit(x[:32], y[:32], epochs=1, verbose=0,
              callbacks=[km.callbacks.DeferredReweighting(start_epoch=0)])
    np.testing.assert_allclose(loss.class_weights,
                               km.priors.class_balanced_weights(counts, 0.9999))
    model = small_model()
    model.compile(optimizer="sgd", loss=km.losses.MaxMarginLoss(0.6, 1.5, 19.0))
    with pytest.raises(ValueError, match="no class_counts.*MaxMarginLoss.*built without"):
        model.fit(x[:32], y[:32], epochs=1, verbose=0,
                  callbacks=[km.callbacks.DeferredReweighting(start_epoch=0)])
    with pytest.raises(ValueError, match="beta"):
        km.callbacks.DeferredReweighting(start_epoch=0, beta=1.0)


def test_class_margin_logger_needs_a_cosine_dense_layer():
    # Logging during a real fit is tested on real data in test_evaluation.py.
    plain = small_model(num_classes=4, cosine=False)
    logger = km.callbacks.ClassMarginLogger()
    logger.set_model(plain)
    with pytest.raises(ValueError, match="no CosineDense"):
        logger.on_train_begin()
    with pytest.raises(ValueError, match="CosineDense layer"):
        km.callbacks.ClassMarginLogger(layer=3)
    assert km.callbacks.ClassMarginLogger(layer="head", key="margin").get_config() == {
        "layer": "head", "key": "margin"}
