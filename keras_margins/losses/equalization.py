"""Equalization loss v2 (Tan et al. 2021): gradient-guided sigmoid re-weighting.

Sigmoid classification where each class's positive and negative terms are
re-weighted from the *accumulated* gradient magnitudes that class received:

    G+_j += sum_i w_pos_j * |p_ij - 1|   over samples i with y_i = j
    G-_j += sum_i w_neg_j * p_ij         over samples i with y_i != j
    w_neg_j = sigmoid(gamma * (G+_j / G-_j - mu)),  w_pos_j = 1 + alpha * (1 - w_neg_j)
    l_i = sum_j w_ij * BCE(x_ij, [j == y_i]),  batch loss sum_i l_i / B

(``|p - t|`` is the magnitude of ``dBCE/dx``). Before any statistics exist
(``G-_j = 0``) both weights are 1.

Why a layer holds the statistics: a ``keras.losses.Loss`` is not tracked by
the model, and the JAX trainer is stateless: it only threads the model's own
(trainable, non-trainable, metric) variables through the compiled step, so a
variable owned by the loss would be a trace-time constant there and its
updates would be dropped. The statistics therefore live in an
``EqualizationStatistics`` layer (an identity on the logits) placed in the
model; the loss reads and assigns its non-trainable variables inside
``compute_loss``, which every trainer (TensorFlow ``tf.function``, JAX
``StatelessScope`` state, torch) carries over to the next step. The layer also
records whether the current call is a training call, so ``evaluate`` and
``predict`` leave the statistics unchanged.
"""

import keras
import numpy as np
from keras import ops

from keras_margins import ops as km_ops
from keras_margins.losses.base import MarginLoss, per_sample_losses
from keras_margins.validation import (validate_finite, validate_non_negative,
                                      validate_num_classes)

__all__ = ["EqualizationLossV2", "EqualizationStatistics", "equalization_loss_v2"]

try:  # Keras' stateless scope: where the JAX trainer keeps the step's state.
    from keras.src.backend.common.stateless_scope import get_stateless_scope
    from keras.src.backend.common.symbolic_scope import in_symbolic_scope
except ImportError:  # pragma: no cover - other Keras layouts: skip the check
    def get_stateless_scope():
        return None

    def in_symbolic_scope():
        return False


def equalization_weights(positive_gradients, negative_gradients, gamma, mu, alpha,
                         dtype="float32"):
    """``(w_pos, w_neg)`` of shape (C,) from the accumulated G+ and G-.

    ``w_neg = sigmoid(gamma * (G+ / G- - mu))`` (1 where ``G- = 0``),
    ``w_pos = 1 + alpha * (1 - w_neg)``.
    """
    positive = ops.cast(positive_gradients, dtype)
    negative = ops.cast(negative_gradients, dtype)
    ratio = positive / ops.maximum(negative, ops.cast(1e-30, dtype))
    negative_weights = ops.where(negative > 0, ops.sigmoid(gamma * (ratio - mu)),
                                 ops.ones_like(negative))
    return 1.0 + alpha * (1.0 - negative_weights), negative_weights


def _equalization_rule(batch, record=None):
    """``sum_j w_ij BCE(x_ij, [j == y_i])``; ``record(G+ step, G- step)`` if given."""
    mask = batch.mask
    weights = ops.where(mask, batch.vector("positive_weights")[None, :],
                        batch.vector("negative_weights")[None, :])
    # sign = +1 on the target: BCE = softplus(-sign*x), |p - t| = sigmoid(-sign*x).
    # The magnitudes need no gradient, so the BCE keeps the single fused
    # softplus (its backward is the cheapest) and, outside a Keras trainer
    # under jit, the unused magnitudes cost nothing.
    negated = km_ops.negated_signed_scores(batch.scores, mask)
    losses = ops.sum(weights * ops.softplus(negated), axis=-1)
    if record is not None:
        magnitudes = ops.stop_gradient(ops.sigmoid(negated) * weights)
        # Positive statistics: one value per sample, summed per class (a (batch,)
        # scatter, not a second (batch, classes) column reduction).
        valid = km_ops.valid_labels(batch.labels, batch.num_classes)  # jit: bad labels add 0
        target_magnitudes = ops.where(valid, batch.gather(magnitudes),
                                      ops.zeros_like(magnitudes[:, 0]))
        positive = batch.sum_by_label(target_magnitudes)
        zero = ops.zeros((), dtype=ops.dtype(magnitudes))  # broadcast, no (batch, classes) zeros
        negative = ops.sum(ops.where(mask, zero, magnitudes), axis=0)
        record(positive, negative)
    return losses


def equalization_loss_v2(y_true, y_pred, positive_gradients, negative_gradients,
                         gamma=12.0, mu=0.8, alpha=4.0):
    """Per-sample equalization loss v2 for given gradient statistics (no reduction).

    ``w_neg_j = sigmoid(gamma * (G+_j / G-_j - mu))`` (1 where ``G-_j = 0``),
    ``w_pos_j = 1 + alpha * (1 - w_neg_j)`` and
    ``l = sum_j w_j * BCE(x_j, [j == y])`` (``w_pos`` on the target column,
    ``w_neg`` elsewhere). The statistics are inputs here and are not updated
    (``EqualizationLossV2`` accumulates them).

    Args:
        y_true: sparse (B,), (B, 1) or one-hot (B, C) labels (hard labels only:
            soft labels raise ``ValueError``).
        y_pred: (B, C) logits.
        positive_gradients: accumulated G+ (C,).
        negative_gradients: accumulated G- (C,).
        gamma: slope of the mapping function, >= 0 (12).
        mu: centre of the mapping function (0.8).
        alpha: extra weight of positives, >= 0 (4.0).

    Returns:
        (B,) float32 losses (float64 for float64 inputs).

    Reference: Tan et al., "Equalization Loss v2: A New Gradient Balance
    Approach for Long-tailed Object Detection", CVPR 2021, Eq. 5-9.
    """
    def statistic(values):
        if isinstance(values, (list, tuple, np.ndarray)):
            return km_ops.constant(values, "float32")
        return values

    dtype = km_ops.compute_dtype(ops.convert_to_tensor(y_pred))
    positive_weights, negative_weights = equalization_weights(
        statistic(positive_gradients), statistic(negative_gradients),
        validate_non_negative(gamma, "gamma"), validate_finite(mu, "mu"),
        validate_non_negative(alpha, "alpha"), dtype)
    return per_sample_losses(_equalization_rule, y_true, y_pred, soft_labels=False,
                             per_class={"positive_weights": positive_weights,
                                        "negative_weights": negative_weights})


class _Link:
    """Plain holder, so that Keras' saving does not walk into the loss's layer."""

    def __init__(self, layer):
        self.layer = layer


@keras.saving.register_keras_serializable(package="keras_margins")
class EqualizationStatistics(keras.layers.Layer):
    """Identity on the logits that holds EQLv2's running gradient statistics.

    Non-trainable float32 weights: ``positive_gradients`` (G+, shape (C,)),
    ``negative_gradients`` (G-, shape (C,)) and ``update_flag`` (1.0 during
    training calls, 0.0 otherwise). They are saved with the model. Obtain it
    from ``EqualizationLossV2.statistics_layer()`` and place it after the logits.
    """

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = validate_num_classes(num_classes)
        self.positive_gradients = self.add_weight(
            name="positive_gradients", shape=(self.num_classes,), initializer="zeros",
            trainable=False, dtype="float32", autocast=False)
        self.negative_gradients = self.add_weight(
            name="negative_gradients", shape=(self.num_classes,), initializer="zeros",
            trainable=False, dtype="float32", autocast=False)
        # 1.0 until the layer is first called, so a loss used without the layer
        # (TensorFlow / torch only) still accumulates.
        self.update_flag = self.add_weight(
            name="update_flag", shape=(), initializer="ones", trainable=False,
            dtype="float32", autocast=False)
        self.built = True

    def call(self, inputs, training=None):
        self.update_flag.assign(1.0 if training else 0.0)
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def reset_statistics(self):
        """Sets G+ and G- back to zero (weights all ones again)."""
        self.positive_gradients.assign(np.zeros(self.num_classes, "float32"))
        self.negative_gradients.assign(np.zeros(self.num_classes, "float32"))

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes)
        return config


@keras.saving.register_keras_serializable(package="keras_margins")
class EqualizationLossV2(MarginLoss):
    """Equalization loss v2: sigmoid loss re-weighted by accumulated gradients.

    ``w_neg_j = sigmoid(gamma * (G+_j / G-_j - mu))``,
    ``w_pos_j = 1 + alpha * (1 - w_neg_j)``,
    ``l = sum_j w_j * BCE(x_j, [j == y])`` (``w_pos`` on the target column,
    ``w_neg`` elsewhere), plain mean over the batch. After each training
    batch, G+ and G- grow by the weighted gradient magnitudes ``|p - t|`` of
    the positive and negative terms of every class (no gradient flows through
    the weights or the statistics). Predict with ``sigmoid(x)`` or ``argmax x``.

    The statistics live in the layer ``loss.statistics_layer()``, which must be part
    of the model (identity on the logits) so that they update under ``jit`` on
    every backend, in particular JAX (see the module docstring):

    ```python
    loss = km.losses.EqualizationLossV2(num_classes=10)
    logits = keras.layers.Dense(10)(features)
    model = keras.Model(inputs, loss.statistics_layer()(logits))
    model.compile(optimizer="sgd", loss=loss)
    model.fit(x, y)
    # after keras.models.load_model(path): reloaded.loss.attach(reloaded)
    ```

    Without the layer in the model, TensorFlow and torch still update the
    statistics (not saved with the model), and JAX raises ``ValueError`` when
    the train step is traced.

    Args:
        num_classes: number of classes C.
        gamma: slope of the mapping function, >= 0 (12).
        mu: centre of the mapping function (0.8).
        alpha: extra weight of positives, >= 0 (4.0).
        reduction, name, dtype: see ``MarginLoss``.

    Reference: Tan et al., "Equalization Loss v2: A New Gradient Balance
    Approach for Long-tailed Object Detection", CVPR 2021, Eq. 5-9.
    """

    accepts_class_weights = False
    accepts_soft_labels = False  # G+ / G- are accumulated per hard label
    rule = staticmethod(_equalization_rule)
    config_parameters = ("num_classes", "gamma", "mu", "alpha")

    def __init__(self, num_classes, gamma=12.0, mu=0.8, alpha=4.0,
                 reduction="sum_over_batch_size", name="equalization_loss_v2",
                 dtype=None):
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.num_classes_ = validate_num_classes(num_classes)
        self.gamma = validate_non_negative(gamma, "gamma")
        self.mu = validate_finite(mu, "mu")
        self.alpha = validate_non_negative(alpha, "alpha")
        self._link = _Link(EqualizationStatistics(self.num_classes_,
                                                  name="equalization_statistics"))

    @property
    def num_classes(self):
        return self.num_classes_

    def statistics_layer(self):
        """The ``EqualizationStatistics`` layer this loss reads and updates.

        Place it in the model after the logits: ``loss.statistics_layer()(logits)``.
        (A method, not an attribute: Keras' saving walks a loss's attributes,
        and the layer must be saved once, as part of the model.)
        """
        return self._link.layer

    def attach(self, model):
        """Uses the ``EqualizationStatistics`` layer of ``model`` (e.g. after
        ``keras.models.load_model``). Raises ``ValueError`` unless exactly one
        matching layer exists."""
        found = [layer for layer in model._flatten_layers(include_self=False)
                 if isinstance(layer, EqualizationStatistics)
                 and layer.num_classes == self.num_classes_]
        if len(found) != 1:
            raise ValueError(f"`model` must contain exactly one EqualizationStatistics "
                             f"layer with {self.num_classes_} classes, found {len(found)}.")
        self._link = _Link(found[0])
        if getattr(model, "train_function", None) is not None:
            model.make_train_function(force=True)
        return self

    def class_weights_from_statistics(self, dtype="float32"):
        """Current ``(w_pos, w_neg)``, each of shape (C,)."""
        stats = self.statistics_layer()
        return equalization_weights(stats.positive_gradients, stats.negative_gradients,
                                    self.gamma, self.mu, self.alpha, dtype)

    def rule_arguments(self):
        positive_weights, negative_weights = self.class_weights_from_statistics()
        return ({"positive_weights": positive_weights, "negative_weights": negative_weights},
                {"record": self._accumulate})

    def _check_num_classes(self, scores):
        if scores.shape[-1] is not None and scores.shape[-1] != self.num_classes_:
            raise ValueError(f"`y_pred` must have num_classes={self.num_classes_} columns, "
                             f"received shape {tuple(scores.shape)}.")
        return super()._check_num_classes(scores)

    def _accumulate(self, positive, negative):
        stats = self.statistics_layer()
        flag = ops.convert_to_tensor(stats.update_flag)
        updates = [(stats.positive_gradients, positive), (stats.negative_gradients, negative)]
        if keras.backend.backend() == "jax":
            scope = get_stateless_scope()
            if scope is not None and not in_symbolic_scope():
                if scope.get_current_value(stats.positive_gradients) is None:
                    raise ValueError(
                        "EqualizationLossV2 on the JAX backend needs its statistics "
                        "layer in the model: build it as `keras.Model(inputs, "
                        "loss.statistics_layer()(logits))` (or call `loss.attach(model)` after "
                        "loading); the JAX trainer drops updates to variables the model "
                        "does not track.")
            elif km_ops._concrete_numpy(positive) is None:
                return  # traced outside a Keras trainer: no state to write to
        for variable, delta in updates:
            delta = ops.cast(delta, "float32")
            variable.assign(ops.convert_to_tensor(variable) + flag * delta)
