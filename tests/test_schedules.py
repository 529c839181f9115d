"""Warm-up + step-decay schedule against the authors' 200-epoch learning rates."""

import keras
import numpy as np
import pytest

import keras_margins as km
from backend_utils import to_numpy


@pytest.mark.parametrize("key, factors", [
    ("ldam_drw_cifar_200_epochs", (0.01, 0.0001)),
    ("kps_cifar_200_epochs", (0.1, 0.01)),
])
def test_per_step_schedule_reproduces_reference(reference, key, factors):
    expected = reference["lr_schedules"][key]
    steps_per_epoch = 3
    schedule = km.schedules.WarmupStepDecay(0.1, steps_per_epoch, 5, (160, 180), factors)
    steps = np.arange(len(expected) * steps_per_epoch)
    rates = np.array([float(to_numpy(schedule(int(step)))) for step in steps])
    np.testing.assert_allclose(rates, np.repeat(expected, steps_per_epoch), rtol=1e-6)
    python = [km.schedules.warmup_step_decay_value(e, 0.1, 5, (160, 180), factors)
              for e in range(len(expected))]
    np.testing.assert_allclose(python, expected, rtol=1e-12)


def test_drives_an_optimizer_and_serializes():
    schedule = km.schedules.WarmupStepDecay(0.1, steps_per_epoch=2, warmup_epochs=2,
                                            decay_epochs=[3], decay_factors=[0.1])
    optimizer = keras.optimizers.SGD(schedule, momentum=0.9)
    variable = keras.Variable(np.ones(3, "float32"))
    seen = []
    for _ in range(8):
        seen.append(float(to_numpy(optimizer.learning_rate)))
        optimizer.apply_gradients([(keras.ops.ones(3), variable)])
    np.testing.assert_allclose(seen, [0.05, 0.05, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01], rtol=1e-6)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert restored.get_config()["learning_rate"]["config"] == schedule.get_config()


def test_scaled_epochs():
    assert km.schedules.scaled_epochs(30, 160) == 24
    assert km.schedules.scaled_epochs(30, [5, 160, 180]) == [1, 24, 27]
    assert km.schedules.scaled_epochs(200, 120) == 120


@pytest.mark.parametrize("kwargs, name", [
    ({"base_learning_rate": 0}, "base_learning_rate"),
    ({"steps_per_epoch": 0}, "steps_per_epoch"),
    ({"decay_epochs": (10, 5), "decay_factors": (0.1, 0.01)}, "increasing"),
    ({"decay_epochs": (10,), "decay_factors": (0.1, 0.01)}, "same length"),
    ({"decay_factors": (0.0, 0.1)}, "positive"),
])
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        km.schedules.WarmupStepDecay(**kwargs)
