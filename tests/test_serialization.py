"""Every public object round-trips through get_config/from_config and model.save.

Losses (``keras_margins.losses.__all__``), layers, the regularizer, metrics,
the schedule and the callbacks' configs; then one ``.keras`` file per loss with
CosineDense + ZeroCentroid, metrics and the loss compiled in, reloaded with
``keras.models.load_model``: identical predictions, loss config and loss value.
"""

import inspect

import keras
import numpy as np
import pytest

import keras_margins as km
from test_reliability_cases import (extra_columns, loss_case_names, make_loss, make_y_pred,
                                    numpy, prepare, public_loss_classes)

COUNTS = [40, 20, 9, 5]
CASES = loss_case_names()


def _data(case, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.array([0, 1, 2, 3, 3, 1])
    return labels, make_y_pred(case, rng.uniform(-1, 1, (6, 4)).astype("float32"), rng)


@pytest.mark.parametrize("case", CASES)
def test_loss_config_round_trip(case):
    loss = prepare(make_loss(case, COUNTS))
    config = loss.get_config()
    clone = prepare(type(loss).from_config(config))
    assert clone.get_config() == config
    restored = prepare(keras.losses.deserialize(keras.losses.serialize(loss)))
    assert type(restored) is type(loss) and restored.get_config() == config
    labels, y_pred = _data(case)
    expected = numpy(loss(labels, y_pred))
    np.testing.assert_allclose(numpy(clone(labels, y_pred)), expected, rtol=1e-6)
    np.testing.assert_allclose(numpy(restored(labels, y_pred)), expected, rtol=1e-6)


def _metrics():
    made = []
    for name in km.metrics.__all__:
        cls = getattr(km.metrics, name)
        if not (inspect.isclass(cls) and issubclass(cls, keras.metrics.Metric)):
            continue
        parameters = inspect.signature(cls.__init__).parameters
        kwargs = {}
        if "num_classes" in parameters:
            kwargs["num_classes"] = len(COUNTS)
        if "class_counts" in parameters:
            kwargs["class_counts"] = [400, 60, 9, 5]
        made.append(cls(**kwargs))
    return made


def test_metric_layer_regularizer_schedule_and_callback_configs():
    labels, scores = np.array([0, 1, 2, 3, 3, 1]), np.random.default_rng(1).uniform(
        -1, 1, (6, 4)).astype("float32")
    metrics = _metrics()
    assert len(metrics) >= 3
    for metric in metrics:
        clone = type(metric).from_config(metric.get_config())
        assert clone.get_config() == metric.get_config()
        for m in (metric, clone):
            m.update_state(labels, scores)
        np.testing.assert_allclose(numpy(clone.result()), numpy(metric.result()), rtol=1e-6)
    objects = [km.layers.CosineDense(4, kernel_regularizer=km.regularizers.ZeroCentroid(0.5)),
               km.layers.AppendFeatureNorm(), km.losses.EqualizationStatistics(4)]
    for layer in objects:
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
    regularizer = km.regularizers.ZeroCentroid(0.7)
    kernel = np.random.default_rng(2).normal(size=(5, 4)).astype("float32")
    assert numpy(type(regularizer).from_config(regularizer.get_config())(kernel)) == \
        pytest.approx(float(numpy(regularizer(kernel))))
    schedule = km.schedules.WarmupStepDecay(0.1, steps_per_epoch=3, warmup_epochs=2,
                                            decay_epochs=(4, 6), decay_factors=(0.1, 0.01))
    clone = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule))
    for step in (0, 4, 13, 20):
        assert float(numpy(clone(step))) == pytest.approx(float(numpy(schedule(step))))
    callbacks = [km.callbacks.DeferredReweighting(COUNTS, start_epoch=3, beta=0.999),
                 km.callbacks.GradientAdjustment(start_epoch=7)]
    callbacks += [km.callbacks.ClassMarginLogger()]
    for callback in callbacks:
        config = callback.get_config()
        assert type(callback)(**config).get_config() == config


@pytest.mark.parametrize("case", [c for c in CASES if c in public_loss_classes()])
def test_model_save_and_load_model(case, tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    features = keras.layers.Dense(8, activation="relu")(inputs)
    cosines = km.layers.CosineDense(
        4, kernel_regularizer=km.regularizers.ZeroCentroid(0.5))(features)
    loss = make_loss(case, COUNTS)
    if extra_columns(case):
        outputs = km.layers.AppendFeatureNorm()([cosines, features])
    elif hasattr(loss, "statistics_layer"):
        outputs = loss.statistics_layer()(cosines)
    else:
        outputs = cosines
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss=loss, metrics=[km.metrics.BalancedAccuracy(4)]
                  if not extra_columns(case) else None)
    x = np.random.default_rng(3).normal(size=(6, 6)).astype("float32")
    y = np.array([0, 1, 2, 3, 3, 1])
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    if hasattr(reloaded.loss, "attach"):
        reloaded.loss.attach(reloaded)
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), expected, rtol=1e-6, atol=1e-7)
    assert type(reloaded.loss) is type(loss)
    assert reloaded.loss.get_config() == loss.get_config()
    np.testing.assert_allclose(numpy(prepare(reloaded.loss)(y, expected)),
                               numpy(prepare(loss)(y, expected)), rtol=1e-6)
