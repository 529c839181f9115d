"""Influence-balanced loss (Park et al. 2021).

The loss needs each sample's L1 feature norm ``||h||_1`` (h = penultimate
features) besides the logits, so ``y_pred`` is ``concat([logits, ||h||_1])``,
shape (batch, C + 1), built by ``keras_margins.layers.AppendFeatureNorm``.
"""

import keras
from keras import ops

from keras_margins import ops as km_ops
from keras_margins.losses.base import MarginLoss, per_sample_losses
from keras_margins.losses.focal import focal_modulation
from keras_margins.priors import inverse_frequency_weights
from keras_margins.validation import (validate_class_counts, validate_non_negative,
                                      validate_positive)

__all__ = ["InfluenceBalancedLoss", "influence_balanced_loss"]


def _split(y_pred, num_classes):
    """``(logits, ||h||_1)`` from ``y_pred = concat([logits, ||h||_1])``."""
    scores = km_ops.to_compute_dtype(y_pred)
    expected = num_classes + 1
    shape = tuple(scores.shape)
    if len(shape) != 2 or shape[-1] != expected:
        raise ValueError(
            f"`y_pred` of InfluenceBalancedLoss must be concat([logits, ||h||_1]) of "
            f"shape (batch_size, {expected}) for {num_classes} classes (use "
            f"keras_margins.layers.AppendFeatureNorm), received shape {shape}.")
    return scores[:, :-1], km_ops.column(scores, num_classes)


def _influence_balanced_rule(batch, feature_norms, alpha, gamma, epsilon):
    """``CE * alpha / (||softmax(x) - e_y||_1 ||h||_1 + epsilon)`` (times ``w_y`` later).

    IB-Focal also multiplies by the modulation of the weighted ``w_y * CE``.
    """
    cross_entropy = batch.cross_entropy()
    # ||softmax(x) - e_y||_1 = (1 - p_y) + sum_{j != y} p_j = 2 (1 - p_y), and
    # p_y = exp(-CE): no second softmax pass (expm1 keeps 1 - p_y exact near 1).
    gradient_norm = -2.0 * ops.expm1(-cross_entropy)
    losses = cross_entropy * (alpha / (gradient_norm * feature_norms + epsilon))
    if gamma is not None:
        weights = batch.class_weight
        weighted = cross_entropy if weights is None else weights * cross_entropy
        losses = losses * focal_modulation(weighted, gamma)
    return losses


def influence_balanced_loss(y_true, y_pred, class_counts, alpha=1000.0, gamma=None,
                            epsilon=0.001):
    """Per-sample influence-balanced loss on ``concat([logits, ||h||_1])`` (no reduction).

    ``ce = w_y * CE(x, y)`` with ``w_j ~ 1 / n_j`` rescaled to sum to C, and
    ``l = ce * alpha / (||softmax(x) - e_y||_1 * ||h||_1 + epsilon)``; with
    ``gamma`` (IB-Focal) also times ``(1 - exp(-ce))^gamma``.

    Args:
        y_true: sparse (B,), (B, 1) or one-hot (B, C) labels.
        y_pred: (B, C + 1): the logits and, last, the L1 norm of the features.
        class_counts: per-class training counts (any order).
        alpha: scale of the influence term, > 0 (1000).
        gamma: None for IB; a focusing parameter >= 0 for IB-Focal.
        epsilon: added to the influence denominator, > 0 (0.001).

    Returns:
        (B,) float32 losses (float64 for float64 inputs).

    Reference: Park et al., "Influence-Balanced Loss for Imbalanced Visual
    Classification", ICCV 2021, Eq. 6-8.
    """
    counts = validate_class_counts(class_counts)
    logits, feature_norms = _split(y_pred, counts.size)
    return per_sample_losses(
        _influence_balanced_rule, y_true, logits,
        class_weights=inverse_frequency_weights(counts), feature_norms=feature_norms,
        alpha=validate_positive(alpha, "alpha"),
        gamma=None if gamma is None else validate_non_negative(gamma, "gamma"),
        epsilon=validate_positive(epsilon, "epsilon"))


@keras.saving.register_keras_serializable(package="keras_margins")
class InfluenceBalancedLoss(MarginLoss):
    """Influence-balanced loss on ``y_pred = concat([logits, ||h||_1])``.

    ``ce = w_y * CE(x, y)`` with inverse-frequency weights ``w_j ~ 1 / n_j``
    (rescaled to sum to C), and

    ``l = ce * alpha / (||softmax(x) - e_y||_1 * ||h||_1 + epsilon)``

    (``epsilon = 0.001``); the gradient flows through the influence factor and
    into the features via ``||h||_1``. With ``gamma`` set (IB-Focal) ``l`` is
    further multiplied by ``(1 - exp(-ce))^gamma``. Plain mean over the batch;
    ``w`` is the loss's ``class_weights``, a Keras sample weight like every
    loss's. ``influence_balanced_loss`` is the functional form.

    Model wiring: the last column of ``y_pred`` is the L1 norm of the
    penultimate features:

    ```python
    features = keras.layers.GlobalAveragePooling2D()(backbone_output)  # h
    logits = keras.layers.Dense(10)(features)
    outputs = km.layers.AppendFeatureNorm()([logits, features])        # (B, 11)
    train_model = keras.Model(inputs, outputs)
    train_model.compile(optimizer="sgd", loss=km.losses.InfluenceBalancedLoss(counts))
    predict_model = keras.Model(inputs, logits)                         # shares weights
    ```

    The paper trains the first 100 of 200 epochs with plain cross-entropy on
    ``logits`` and switches to this loss from epoch 100 (compile the
    ``train_model`` with this loss then). Accuracy metrics must use the logits
    (``y_pred[:, :-1]``), not the extra column.

    Args:
        class_counts: per-class training counts (any order).
        alpha: scale of the influence term, > 0 (1000).
        gamma: None for IB; a focusing parameter >= 0 for IB-Focal.
        epsilon: added to the influence denominator, > 0 (0.001).
        reduction, name, dtype: see ``MarginLoss``.

    Reference: Park et al., "Influence-Balanced Loss for Imbalanced Visual
    Classification", ICCV 2021, Eq. 6-8.
    """

    accepts_class_weights = False  # the weights follow from class_counts
    rule = staticmethod(_influence_balanced_rule)
    rule_parameters = ("alpha", "gamma", "epsilon")
    config_parameters = ("class_counts", "alpha", "gamma", "epsilon")

    def __init__(self, class_counts, alpha=1000.0, gamma=None, epsilon=0.001,
                 reduction="sum_over_batch_size", name="influence_balanced_loss",
                 dtype=None):
        super().__init__(class_counts=class_counts,
                         class_weights=inverse_frequency_weights(class_counts),
                         reduction=reduction, name=name, dtype=dtype)
        self.alpha = validate_positive(alpha, "alpha")
        self.gamma = None if gamma is None else validate_non_negative(gamma, "gamma")
        self.epsilon = validate_positive(epsilon, "epsilon")

    @property
    def weights(self):
        """The inverse-frequency class weights ``w_j`` (``class_weights``)."""
        return self.class_weights

    def split_inputs(self, y_pred):
        logits, feature_norms = _split(y_pred, self.num_classes)
        return logits, {"feature_norms": feature_norms}
