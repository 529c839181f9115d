"""SGD exactly as ``torch.optim.SGD``, with coupled (L2) weight decay.

The seed papers train with ``torch.optim.SGD(params, lr, momentum=0.9,
weight_decay=2e-4)``. PyTorch adds ``weight_decay * w`` to the gradient of
*every* parameter (conv and dense kernels, biases, BatchNorm gamma and beta),
*before* momentum:

    g   <- grad + wd * w              (= the gradient of loss + (wd/2) * ||w||^2)
    buf <- momentum * buf + g         (buf = g on the first step)
    w   <- w - lr * buf

This is "coupled" weight decay: it is an L2 penalty ``(wd / 2) * ||w||^2`` on
the loss, passed through momentum. Keras differs in two ways, so the papers'
optimizer is not ``keras.optimizers.SGD(weight_decay=wd)``:

* Keras' ``weight_decay`` argument is *decoupled* (``w <- w - lr * wd * w``
  applied outside momentum, as in AdamW/SGDW);
* Keras' momentum folds the learning rate into the buffer
  (``m <- mu * m - lr * g; w <- w + m``), which differs from PyTorch whenever
  the learning rate changes (warm-up, step decays).

Adding ``keras.regularizers.L2(wd / 2)`` to every kernel would give the same
gradient for the kernels only: it misses biases and BatchNorm parameters (which
PyTorch decays) and adds the penalty to the reported loss (PyTorch's loss does
not include it). ``CoupledSGD`` therefore adds ``wd * w`` to each gradient in
the optimizer step and keeps PyTorch's momentum buffer, so one update equals
``torch.optim.SGD``'s on every backend (``tests/test_applications.py`` checks
it against torch). Variables can be excluded with Keras' usual
``exclude_from_weight_decay(var_list=..., var_names=...)``.
"""

import keras
from keras import ops

__all__ = ["CoupledSGD"]


@keras.saving.register_keras_serializable(package="applications")
class CoupledSGD(keras.optimizers.SGD):
    """``torch.optim.SGD`` in Keras: coupled L2 weight decay, PyTorch momentum.

    Args:
        learning_rate: float or ``LearningRateSchedule``.
        momentum: momentum (0.9 in the papers).
        nesterov: Nesterov momentum (PyTorch's form).
        coupled_weight_decay: ``wd`` (2e-4 in the papers); adds ``wd * w`` to
            the gradient, i.e. the loss term ``(wd / 2) * ||w||^2``.
        **kwargs: other ``keras.optimizers.Optimizer`` arguments (clipnorm, ...).
            ``weight_decay`` (decoupled) is refused to avoid decaying twice.

    Example:
    ```python
    lr = km.schedules.WarmupStepDecay(0.1, steps_per_epoch=len(train_ds))
    model.compile(optimizer=CoupledSGD(lr, momentum=0.9, coupled_weight_decay=2e-4), ...)
    ```
    """

    def __init__(self, learning_rate=0.1, momentum=0.9, nesterov=False,
                 coupled_weight_decay=0.0, name="coupled_sgd", **kwargs):
        if kwargs.get("weight_decay"):
            raise ValueError("CoupledSGD takes `coupled_weight_decay` (PyTorch's L2 form); "
                             f"received decoupled `weight_decay={kwargs['weight_decay']!r}`.")
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov,
                         name=name, **kwargs)
        coupled_weight_decay = float(coupled_weight_decay)
        if not coupled_weight_decay >= 0:
            raise ValueError(f"`coupled_weight_decay` must be >= 0, received "
                             f"{coupled_weight_decay!r}.")
        self.coupled_weight_decay = coupled_weight_decay

    def _decays(self, variable):
        # Keras' exclusion lists (exclude_from_weight_decay) apply here too.
        return self.coupled_weight_decay > 0.0 and self._use_weight_decay(variable)

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if self._decays(variable):
            gradient = ops.add(gradient, ops.multiply(
                ops.cast(self.coupled_weight_decay, variable.dtype), variable))
        if self.momentum != 0:
            buffer = self.momentums[self._get_variable_index(variable)]
            momentum = ops.cast(self.momentum, variable.dtype)
            # buf = mu * buf + g (buf starts at zero, so step 1 gives buf = g).
            self.assign(buffer, ops.add(ops.multiply(momentum, buffer), gradient))
            if self.nesterov:
                gradient = ops.add(gradient, ops.multiply(momentum, buffer))
            else:
                gradient = buffer
        self.assign_sub(variable, ops.multiply(learning_rate, gradient))

    def get_config(self):
        config = super().get_config()
        config["coupled_weight_decay"] = self.coupled_weight_decay
        config.pop("weight_decay", None)
        return config
