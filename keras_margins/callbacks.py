"""Callbacks that switch a loss to its second training stage during ``fit``.

* ``DeferredReweighting`` (DRW, Cao et al. 2019): class weights all ones
  before ``start_epoch`` (0-based), class-balanced (effective number, beta)
  from then on.
* ``GradientAdjustment`` (GA, KPS): from ``start_epoch`` every row of the KPS
  loss is scaled by its target class's scale instead of the base scale.

The stage is a pure function of the epoch index the callback is given in
``on_epoch_begin``, so resuming with ``initial_epoch`` or
``keras.callbacks.BackupAndRestore`` past the switch starts in the second
stage. When the stage changes, the model's compiled train and test functions
are rebuilt: under ``jit`` (TensorFlow, JAX, torch.compile) a loss attribute is
a trace-time constant, and changing it alone would be silently ignored.

``ClassMarginLogger`` records the class margin of a ``CosineDense`` head
(``keras_margins.margins.class_margin``) at each epoch end.
"""

import warnings

import keras

from keras_margins.margins import class_margin, find_cosine_head
from keras_margins.priors import class_balanced_weights
from keras_margins.validation import validate_class_counts, validate_start_epoch

__all__ = ["StageSwitch", "DeferredReweighting", "GradientAdjustment", "ClassMarginLogger",
           "find_losses"]


def _walk_losses(loss):
    if loss is None or isinstance(loss, str) or callable(loss) and not isinstance(
            loss, keras.losses.Loss):
        return
    if isinstance(loss, dict):
        for value in loss.values():
            yield from _walk_losses(value)
        return
    if isinstance(loss, (list, tuple)):
        for value in loss:
            yield from _walk_losses(value)
        return
    yield loss
    # Composite losses (e.g. SampleMarginLoss) expose what they wrap.
    yield from _walk_losses(getattr(loss, "base_loss", None))


def find_losses(model, predicate):
    """The Loss objects given to ``model.compile`` (nested ones included) that
    satisfy ``predicate``."""
    return [loss for loss in _walk_losses(getattr(model, "loss", None)) if predicate(loss)]


class StageSwitch(keras.callbacks.Callback):
    """Base: a two-stage switch at 0-based ``start_epoch`` applied to losses.

    Subclasses define ``accepts(loss)`` and ``set_stage(loss, second_stage)``,
    the latter returning True when it changed the loss.
    """

    #: What the error message says the model's loss must be.
    requirement = "a switchable loss"

    def __init__(self, start_epoch):
        super().__init__()
        self.start_epoch = validate_start_epoch(start_epoch)
        self.second_stage = None

    def accepts(self, loss):
        raise NotImplementedError

    def set_stage(self, loss, second_stage):
        raise NotImplementedError

    def targets(self):
        losses = find_losses(self.model, self.accepts)
        if not losses:
            raise ValueError(
                f"{type(self).__name__} needs a model compiled with {self.requirement}; "
                f"received loss {getattr(self.model, 'loss', None)!r}.")
        return losses

    def on_train_begin(self, logs=None):
        self.targets()
        epochs = (self.params or {}).get("epochs")
        if epochs is not None and self.start_epoch >= epochs:
            warnings.warn(
                f"{type(self).__name__}(start_epoch={self.start_epoch}) never switches: "
                f"fit runs epochs 0-{epochs - 1} (0-based). Use a start_epoch below "
                f"{epochs}, e.g. keras_margins.schedules.scaled_epochs({epochs}, 160).",
                stacklevel=2)

    def on_epoch_begin(self, epoch, logs=None):
        self.second_stage = epoch >= self.start_epoch
        changed = [self.set_stage(loss, self.second_stage) for loss in self.targets()]
        if any(changed):
            # The compiled step functions captured the previous stage: rebuild.
            self.model.make_train_function(force=True)
            self.model.make_test_function(force=True)

    def get_config(self):
        return {"start_epoch": self.start_epoch}


class DeferredReweighting(StageSwitch):
    """Deferred re-weighting: class-balanced class weights from ``start_epoch``.

    Before ``start_epoch`` (0-based) the loss's ``class_weights`` are all ones;
    from it on, ``(1 - beta) / (1 - beta^n_j)`` rescaled to sum to C.
    Works on every loss with ``class_weights`` (LDAM, ELM, MM, ...).

    Args:
        class_counts: per-class training counts (any order); ``None`` (default):
            each loss's own ``class_counts`` (LDAM, ELM, KPS, MM-LDAM have them),
            so the counts are passed once.
        start_epoch: 0-based epoch of the switch (160 of 200 in the paper).
        beta: effective-number hyper-parameter (0.9999).

    Example:
    ```python
    model.compile(optimizer=opt, loss=km.losses.LDAMLoss(counts))
    model.fit(train, epochs=200,
              callbacks=[km.callbacks.DeferredReweighting(start_epoch=160)])
    ```

    Reference: Cao et al., NeurIPS 2019, Section 3.3 / Algorithm 1.
    """

    requirement = "a loss that takes `class_weights` (e.g. LDAMLoss, ELMLoss)"

    def __init__(self, class_counts=None, start_epoch=160, beta=0.9999):
        super().__init__(start_epoch)
        class_balanced_weights([1, 1], beta)  # validates beta now, not at the switch
        self.beta = float(beta)
        self.class_counts = (None if class_counts is None
                             else validate_class_counts(class_counts))
        self.weights = (None if self.class_counts is None
                        else class_balanced_weights(self.class_counts, self.beta))

    def accepts(self, loss):
        return bool(getattr(loss, "accepts_class_weights", False))

    def weights_for(self, loss):
        """The class-balanced weights of ``loss``: from the callback's counts, or
        else from the counts the loss was built with."""
        if self.weights is not None:
            return self.weights
        counts = getattr(loss, "class_counts", None)
        if counts is None:
            raise ValueError(
                f"DeferredReweighting was given no class_counts and {type(loss).__name__} "
                f"was built without them; pass DeferredReweighting(class_counts, "
                f"start_epoch=...).")
        return class_balanced_weights(counts, self.beta)

    def set_stage(self, loss, second_stage):
        target = self.weights_for(loss) if second_stage else None
        current = loss.class_weights
        if target is None and current is None:
            return False
        if target is not None and current is not None and current.shape == target.shape \
                and (current == target).all():
            return False
        loss.class_weights = target
        return True

    def get_config(self):
        counts = None if self.class_counts is None else self.class_counts.tolist()
        return {"class_counts": counts, "start_epoch": self.start_epoch, "beta": self.beta}


class GradientAdjustment(StageSwitch):
    """KPS gradient adjustment: per-class scales from ``start_epoch`` on.

    Switches every ``KPSLoss`` of the model to ``gradient_adjustment=True``
    from 0-based ``start_epoch`` (120 of 200 in the paper).

    Reference: Li, Cheung & Hu, "Key Point Sensitive Loss for Long-Tailed
    Visual Recognition", Section 3.3.
    """

    requirement = "a loss with a gradient-adjustment stage (KPSLoss)"

    def __init__(self, start_epoch=120):
        super().__init__(start_epoch)

    def accepts(self, loss):
        return hasattr(loss, "gradient_adjustment") and hasattr(loss, "kps_scales")

    def set_stage(self, loss, second_stage):
        if bool(loss.gradient_adjustment) == second_stage:
            return False
        loss.gradient_adjustment = second_stage
        return True


@keras.saving.register_keras_serializable(package="keras_margins")
class ClassMarginLogger(keras.callbacks.Callback):
    """Logs the class margin (degrees) of a ``CosineDense`` layer at each epoch end.

    Adds ``logs[key]`` (so it appears in ``History`` and other callbacks that
    run after it) and appends to ``self.margins``.

    Args:
        layer: the ``CosineDense`` layer, its name, or None for the model's last
            ``CosineDense`` layer.
        key: the name of the log entry.

    Example:
    ```python
    history = model.fit(x, y, epochs=5, callbacks=[km.callbacks.ClassMarginLogger()])
    history.history["class_margin"]
    ```
    """

    def __init__(self, layer=None, key="class_margin"):
        super().__init__()
        if layer is not None and not isinstance(layer, str) \
                and not hasattr(layer, "normalized_kernel"):
            raise ValueError(f"`layer` must be a CosineDense layer, its name, or None; "
                             f"received {layer!r}.")
        self.layer = layer
        self.key = key
        self.margins = []

    def _head(self):
        if self.layer is None:
            head = find_cosine_head(self.model)
            if head is None:
                raise ValueError("ClassMarginLogger found no CosineDense layer in the model; "
                                 "pass `layer=`.")
            return head
        if isinstance(self.layer, str):
            return self.model.get_layer(self.layer)
        return self.layer

    def on_train_begin(self, logs=None):
        self.margins = []
        self._head()  # fail before the first epoch, not after it

    def on_epoch_end(self, epoch, logs=None):
        margin = class_margin(self._head())
        self.margins.append(margin)
        if logs is not None:
            logs[self.key] = margin

    def get_config(self):
        layer = self.layer if self.layer is None or isinstance(self.layer, str) \
            else self.layer.name
        return {"layer": layer, "key": self.key}
