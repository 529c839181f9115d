"""Class-balanced losses (Cui et al. 2019): effective-number class weights.

With ``w_j = (1 - beta) / (1 - beta^n_j)`` rescaled to sum to C:

* ``"softmax"``: ``l = w_y * CE(x, y)``;
* ``"sigmoid"``: ``l = sum_j w_y * BCE(x_j, [j == y])``;
* ``"focal"``: ``l = sum_j w_y * (1 - p_t,j)^gamma * BCE(x_j, [j == y])``,
  ``p_t,j = sigmoid(x_j)`` for the target column, ``1 - sigmoid(x_j)`` elsewhere;

each reduced by the plain mean over the batch (``sum_i l_i / B``), as the
authors' TensorFlow code does.
"""

import keras
from keras import ops

from keras_margins import ops as km_ops
from keras_margins.losses.base import MarginLoss
from keras_margins.priors import class_balanced_weights, validate_non_negative

__all__ = ["ClassBalancedLoss"]

LOSS_TYPES = ("softmax", "sigmoid", "focal")


@keras.saving.register_keras_serializable(package="keras_margins")
class ClassBalancedLoss(MarginLoss):
    """Class-balanced softmax, sigmoid or focal loss on logits.

    ``w_j = (1 - beta) / (1 - beta^n_j)`` (effective number), rescaled to sum
    to C; ``beta = 0`` gives all ones (softmax: plain cross-entropy).

    * softmax: ``l = w_y * CE(x, y)``
    * sigmoid: ``l = sum_j w_y * BCE(x_j, e_yj)``
    * focal:   ``l = sum_j w_y * (1 - p_t)^gamma * BCE(x_j, e_yj)``

    The batch loss is ``sum_i l_i / B`` (plain mean, the authors' code).

    Args:
        class_counts: per-class training counts (any order).
        beta: effective-number hyper-parameter in [0, 1) (0.9999).
        loss_type: ``"softmax"``, ``"sigmoid"`` or ``"focal"``.
        gamma: focusing parameter of ``"focal"``, >= 0 (1.0).
        reduction, name, dtype: see ``MarginLoss``.

    Example:
    ```python
    model.compile(optimizer="sgd",
                  loss=km.losses.ClassBalancedLoss(counts, beta=0.9999, loss_type="focal"))
    ```

    Reference: Cui et al., "Class-Balanced Loss Based on Effective Number of
    Samples", CVPR 2019, Eq. 3 (weights), 4-7 (softmax, sigmoid, focal).
    """

    accepts_class_weights = False

    def __init__(self, class_counts, beta=0.9999, loss_type="softmax", gamma=1.0,
                 reduction="sum_over_batch_size", name="class_balanced_loss", dtype=None):
        super().__init__(class_counts=class_counts, reduction=reduction, name=name,
                         dtype=dtype)
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"`loss_type` must be one of {LOSS_TYPES}, received "
                             f"{loss_type!r}.")
        self.loss_type = loss_type
        self.gamma = validate_non_negative(gamma, "gamma")
        self.weights = class_balanced_weights(self._class_counts, beta)
        self.beta = float(beta)

    def per_sample(self, labels, scores):
        num_classes = scores.shape[-1]
        weights = ops.take(self.constant(self.weights, ops.dtype(scores)),
                           ops.clip(labels, 0, num_classes - 1))
        if self.loss_type == "softmax":
            return weights * km_ops.margin_softmax_cross_entropy(labels, scores)
        mask = km_ops.target_mask(labels, num_classes)
        # BCE = -log sigmoid(sign * x) and 1 - p_t from one exp and one log1p per element.
        focal = self.loss_type == "focal" and self.gamma != 0.0
        terms, one_minus_pt, log_one_minus_pt = km_ops.sigmoid_cross_entropy_terms(
            scores, mask, with_residual=focal)
        if focal and self.gamma == 1.0:
            terms = terms * one_minus_pt
        elif focal:
            # exp(gamma * log(1 - p_t)), not power(): finite gradient where 1 - p_t = 0
            terms = terms * ops.exp(self.gamma * log_one_minus_pt)
        return weights * ops.sum(terms, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(class_counts=self._class_counts.tolist(), beta=self.beta,
                      loss_type=self.loss_type, gamma=self.gamma)
        return config
