"""Influence-balanced loss (Park et al. 2021).

The loss needs each sample's L1 feature norm ``||h||_1`` (h = penultimate
features) besides the logits, so ``y_pred`` is ``concat([logits, ||h||_1])``,
shape (batch, C + 1), built by ``keras_margins.layers.AppendFeatureNorm``.
"""

import keras
from keras import ops

from keras_margins import ops as km_ops
from keras_margins.losses.base import MarginLoss
from keras_margins.losses.focal import focal_modulation
from keras_margins.priors import (inverse_frequency_weights, validate_non_negative,
                                  validate_positive)

__all__ = ["InfluenceBalancedLoss"]


@keras.saving.register_keras_serializable(package="keras_margins")
class InfluenceBalancedLoss(MarginLoss):
    """Influence-balanced loss on ``y_pred = concat([logits, ||h||_1])``.

    ``ce = w_y * CE(x, y)`` with inverse-frequency weights ``w_j ~ 1 / n_j``
    (rescaled to sum to C), and

    ``l = ce * alpha / (||softmax(x) - e_y||_1 * ||h||_1 + epsilon)``

    (``epsilon = 0.001``); the gradient flows through the influence factor and
    into the features via ``||h||_1``. With ``gamma`` set (IB-Focal) ``l`` is
    further multiplied by ``(1 - exp(-ce))^gamma``. Plain mean over the batch.

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

    accepts_class_weights = False

    def __init__(self, class_counts, alpha=1000.0, gamma=None, epsilon=0.001,
                 reduction="sum_over_batch_size", name="influence_balanced_loss",
                 dtype=None):
        super().__init__(class_counts=class_counts, reduction=reduction, name=name,
                         dtype=dtype)
        self.alpha = validate_positive(alpha, "alpha")
        self.gamma = None if gamma is None else validate_non_negative(gamma, "gamma")
        self.epsilon = validate_positive(epsilon, "epsilon")
        self.weights = inverse_frequency_weights(self._class_counts)

    def _split(self, y_pred):
        scores = km_ops.to_compute_dtype(y_pred)
        expected = self.num_classes + 1
        shape = tuple(scores.shape)
        if len(shape) != 2 or shape[-1] != expected:
            raise ValueError(
                f"`y_pred` of InfluenceBalancedLoss must be concat([logits, ||h||_1]) of "
                f"shape (batch_size, {expected}) for {self.num_classes} classes (use "
                f"keras_margins.layers.AppendFeatureNorm), received shape {shape}.")
        return scores[:, :-1], scores[:, -1]

    def call(self, y_true, y_pred):
        logits, feature_norms = self._split(y_pred)
        labels = km_ops.sparse_labels(y_true, self.num_classes)
        losses = self.per_sample(labels, logits, feature_norms)
        return km_ops.nan_for_invalid_labels(losses, labels, self.num_classes)

    def per_sample(self, labels, scores, feature_norms):
        num_classes = scores.shape[-1]
        mask = km_ops.target_mask(labels, num_classes)
        weights = ops.take(self.constant(self.weights, ops.dtype(scores)),
                           ops.clip(labels, 0, num_classes - 1))
        plain_ce = km_ops.margin_softmax_cross_entropy(labels, scores, mask=mask)
        ce = weights * plain_ce
        # ||softmax(x) - e_y||_1 = (1 - p_y) + sum_{j != y} p_j = 2 (1 - p_y), and
        # p_y = exp(-CE): no second softmax pass (expm1 keeps 1 - p_y exact near 1).
        gradient_norm = -2.0 * ops.expm1(-plain_ce)
        losses = ce * (self.alpha / (gradient_norm * feature_norms + self.epsilon))
        if self.gamma is not None:
            losses = losses * focal_modulation(ce, self.gamma)
        return losses

    def get_config(self):
        config = super().get_config()
        config.update(class_counts=self._class_counts.tolist(), alpha=self.alpha,
                      gamma=self.gamma, epsilon=self.epsilon)
        return config
