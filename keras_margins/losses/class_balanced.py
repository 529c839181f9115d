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

from keras_margins import ops as km_ops
from keras_margins.losses.base import MarginLoss, per_sample_losses
from keras_margins.priors import class_balanced_weights
from keras_margins.validation import validate_non_negative

__all__ = ["ClassBalancedLoss", "class_balanced_loss"]

LOSS_TYPES = ("softmax", "sigmoid", "focal")


def _validate_loss_type(loss_type):
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"`loss_type` must be one of {LOSS_TYPES}, received {loss_type!r}.")
    return loss_type


def _class_balanced_rule(batch, loss_type, gamma):
    """Unweighted softmax CE, or sigmoid / focal BCE summed over the classes."""
    if loss_type == "softmax":
        return batch.cross_entropy()
    gamma = gamma if loss_type == "focal" else 0.0
    return km_ops.sigmoid_focal_cross_entropy(batch.scores, batch.mask, gamma)


def class_balanced_loss(y_true, y_pred, class_counts, beta=0.9999, loss_type="softmax",
                        gamma=1.0):
    """Per-sample class-balanced softmax, sigmoid or focal loss (no reduction).

    ``w_j = (1 - beta) / (1 - beta^n_j)`` rescaled to sum to C, and
    ``l = w_y * CE(x, y)`` (softmax), ``w_y * sum_j BCE(x_j, e_yj)`` (sigmoid)
    or ``w_y * sum_j (1 - p_t,j)^gamma * BCE(x_j, e_yj)`` (focal).

    Args:
        y_true: sparse (B,), (B, 1) or one-hot (B, C) labels.
        y_pred: (B, C) logits.
        class_counts: per-class training counts (any order).
        beta: effective-number hyper-parameter in [0, 1) (0.9999).
        loss_type: ``"softmax"``, ``"sigmoid"`` or ``"focal"``.
        gamma: focusing parameter of ``"focal"``, >= 0 (1.0).

    Returns:
        (B,) float32 losses (float64 for float64 inputs).

    Reference: Cui et al., "Class-Balanced Loss Based on Effective Number of
    Samples", CVPR 2019, Eq. 3 (weights), 4-7 (softmax, sigmoid, focal).
    """
    weights = class_balanced_weights(class_counts, beta)
    return per_sample_losses(_class_balanced_rule, y_true, y_pred, class_weights=weights,
                             loss_type=_validate_loss_type(loss_type),
                             gamma=validate_non_negative(gamma, "gamma"))


@keras.saving.register_keras_serializable(package="keras_margins")
class ClassBalancedLoss(MarginLoss):
    """Class-balanced softmax, sigmoid or focal loss on logits.

    ``w_j = (1 - beta) / (1 - beta^n_j)`` (effective number), rescaled to sum
    to C; ``beta = 0`` gives all ones (softmax: plain cross-entropy).

    * softmax: ``l = w_y * CE(x, y)``
    * sigmoid: ``l = sum_j w_y * BCE(x_j, e_yj)``
    * focal:   ``l = sum_j w_y * (1 - p_t)^gamma * BCE(x_j, e_yj)``

    The batch loss is ``sum_i l_i / B`` (plain mean, the authors' code): the
    weights are the loss's ``class_weights``, applied as Keras sample weights
    like every loss's. ``class_balanced_loss`` is the functional form.

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

    accepts_class_weights = False  # the weights follow from class_counts and beta
    rule = staticmethod(_class_balanced_rule)
    rule_parameters = ("loss_type", "gamma")
    config_parameters = ("class_counts", "beta", "loss_type", "gamma")

    def __init__(self, class_counts, beta=0.9999, loss_type="softmax", gamma=1.0,
                 reduction="sum_over_batch_size", name="class_balanced_loss", dtype=None):
        super().__init__(class_counts=class_counts,
                         class_weights=class_balanced_weights(class_counts, beta),
                         reduction=reduction, name=name, dtype=dtype)
        self.loss_type = _validate_loss_type(loss_type)
        self.gamma = validate_non_negative(gamma, "gamma")
        self.beta = float(beta)

    @property
    def weights(self):
        """The effective-number class weights ``w_j`` (``class_weights``)."""
        return self.class_weights
