"""The papers' learning-rate schedule: linear warm-up, then step decays.

Per 0-based epoch ``e``: ``lr * (e + 1) / warmup_epochs`` while
``e < warmup_epochs``, then ``lr`` times the product of every decay factor
whose epoch is ``<= e``. LDAM-DRW on CIFAR (200 epochs): warm-up 5, x0.01 from
160, x0.0001 from 180; KPS: x0.1 and x0.01 (Li, Cheung & Hu).
The rate is constant within an epoch, as in the authors' code.
"""

import keras
from keras import ops

from keras_margins.validation import validate_decays

__all__ = ["WarmupStepDecay", "warmup_step_decay_value", "scaled_epochs"]


def scaled_epochs(epochs, reference_epochs, total_epochs=200):
    """Rescales epoch indices of a ``total_epochs`` protocol to ``epochs`` epochs.

    ``scaled_epochs(160, 30)`` -> 24: DRW at 80% of training, whatever its length.
    """
    if isinstance(reference_epochs, (list, tuple)):
        return [scaled_epochs(epochs, e, total_epochs) for e in reference_epochs]
    return int(round(reference_epochs * epochs / total_epochs))


def warmup_step_decay_value(epoch, base_learning_rate=0.1, warmup_epochs=5,
                            decay_epochs=(160, 180), decay_factors=(0.01, 0.0001)):
    """The learning rate of 0-based ``epoch`` (python float)."""
    decay_epochs, decay_factors = validate_decays(decay_epochs, decay_factors, warmup_epochs)
    if epoch < warmup_epochs:
        return base_learning_rate * (epoch + 1) / warmup_epochs
    factor = 1.0
    for start, value in zip(decay_epochs, decay_factors):
        if epoch >= start:
            factor = value  # factors are absolute multipliers of the base rate
    return base_learning_rate * factor


@keras.saving.register_keras_serializable(package="keras_margins")
class WarmupStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up then step decay, evaluated per optimizer step.

    The epoch of step ``t`` is ``t // steps_per_epoch``; the rate is
    ``warmup_step_decay_value(epoch, ...)``. Each decay factor multiplies the
    *base* rate (0.01 then 0.0001 in LDAM-DRW, not cumulative).

    Args:
        base_learning_rate: peak rate (0.1).
        steps_per_epoch: optimizer steps in one epoch.
        warmup_epochs: epochs of linear warm-up (5).
        decay_epochs: 0-based epochs at which the factors start ((160, 180)).
        decay_factors: multipliers of the base rate ((0.01, 0.0001)).

    Example:
    ```python
    lr = km.schedules.WarmupStepDecay(0.1, steps_per_epoch=len(train_ds))
    optimizer = keras.optimizers.SGD(lr, momentum=0.9)
    ```
    """

    def __init__(self, base_learning_rate=0.1, steps_per_epoch=1, warmup_epochs=5,
                 decay_epochs=(160, 180), decay_factors=(0.01, 0.0001)):
        if base_learning_rate <= 0:
            raise ValueError(f"`base_learning_rate` must be > 0, received "
                             f"{base_learning_rate!r}.")
        if int(steps_per_epoch) < 1:
            raise ValueError(f"`steps_per_epoch` must be >= 1, received "
                             f"{steps_per_epoch!r}.")
        self.decay_epochs, self.decay_factors = validate_decays(
            decay_epochs, decay_factors, int(warmup_epochs))
        self.base_learning_rate = float(base_learning_rate)
        self.steps_per_epoch = int(steps_per_epoch)
        self.warmup_epochs = int(warmup_epochs)

    def __call__(self, step):
        epoch = ops.floor_divide(ops.cast(step, "int32"), self.steps_per_epoch)
        epoch = ops.cast(epoch, "float32")
        rate = ops.convert_to_tensor(self.base_learning_rate, "float32")
        for start, factor in zip(self.decay_epochs, self.decay_factors):
            rate = ops.where(epoch >= start, self.base_learning_rate * factor, rate)
        if self.warmup_epochs > 0:
            warm = self.base_learning_rate * (epoch + 1.0) / self.warmup_epochs
            rate = ops.where(epoch < self.warmup_epochs, warm, rate)
        return rate

    def get_config(self):
        return {"base_learning_rate": self.base_learning_rate,
                "steps_per_epoch": self.steps_per_epoch,
                "warmup_epochs": self.warmup_epochs,
                "decay_epochs": list(self.decay_epochs),
                "decay_factors": list(self.decay_factors)}
