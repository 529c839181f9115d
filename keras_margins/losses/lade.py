"""LADE loss (Hong et al. 2021): prior-adjusted cross-entropy plus the LADER regulariser."""

import math

import keras
from keras import ops

from keras_margins import ops as km_ops
from keras_margins.losses.base import MarginLoss, per_sample_losses
from keras_margins.priors import log_priors, priors
from keras_margins.validation import validate_non_negative

__all__ = ["LADELoss", "lade_loss"]


def _lade_rule(batch, alpha, remine_lambda):
    """Hook: logit-adjusted CE (tau = 1) per sample, plus ``alpha R`` on every sample.

    ``R`` is the batch's LADER term (Donsker-Varadhan estimate with the ReMINE
    penalty), a batch-level scalar added to every sample so that the batch mean
    of the values is ``mean_i CE_i + alpha R``.
    """
    x = batch.scores
    offsets = batch.vector("offsets")[None, :]  # log pi_j
    cross_entropy = batch.cross_entropy(scores=x + offsets)
    if alpha == 0.0:
        return cross_entropy
    size = ops.cast(ops.shape(x)[0], batch.dtype)
    # (1 / N_j) sum_{i: y_i = j} x_ij; 0 for a class absent from the batch. Summed
    # over the target scores by label (O(B)), not over a (B, C) mask.
    sums = batch.sum_by_label(batch.target)
    members = batch.sum_by_label(ops.ones_like(batch.target))
    first = sums / (members + 1e-8)
    # log (1 / B) sum_i exp(x_ij - log pi_j + log(1 / C)): the target (uniform) prior.
    second = (km_ops.logsumexp_over_batch(x, -batch.vector("offsets")
                                          - math.log(batch.num_classes))
              - ops.log(size))
    bound = first - second - remine_lambda * ops.square(second)
    regulariser = -ops.sum(batch.vector("priors") * bound)
    return cross_entropy + alpha * regulariser


def _lade_vectors(class_counts):
    return {"offsets": log_priors(class_counts, 1.0), "priors": priors(class_counts)}


def lade_loss(y_true, y_pred, class_counts, alpha=0.1, remine_lambda=0.1):
    """Per-sample LADE loss values (no reduction): ``CE_i + alpha R``.

    ``CE_i = CE(x_i + log pi, y_i)`` is the LADE-CE (PC-softmax) loss with the
    training prior ``pi_j = n_j / sum_k n_k``. ``R`` is the LADER regulariser of
    the whole batch (one scalar, the same in every value), so that the batch
    mean of the returned values is the LADE loss ``mean_i CE_i + alpha R``
    (their sum is ``sum_i CE_i + B alpha R``; a loss of one sample alone is not
    defined, ``R`` couples the samples)::

        R = -sum_j pi_j [ m_j - L_j - remine_lambda L_j^2 ]
        m_j = (1 / N_j) sum_{i: y_i = j} x_ij        (0 if class j is absent)
        L_j = log (1 / B) sum_i exp(x_ij - log pi_j + log(1 / C))

    Args:
        y_true: sparse (B,), (B, 1) or one-hot (B, C) labels (hard labels only:
            soft labels raise ``ValueError``).
        y_pred: (B, C) logits.
        class_counts: per-class training counts (any order).
        alpha: weight of the LADER regulariser, >= 0 (0.1).
        remine_lambda: weight of the ReMINE penalty ``L_j^2``, >= 0 (0.1).

    Returns:
        (B,) float32 values (float64 for float64 inputs).

    Reference: Hong et al., "Disentangling Label Distribution for Long-tailed
    Visual Recognition", CVPR 2021 (LADE-CE, LADER with ReMINE).
    """
    return per_sample_losses(_lade_rule, y_true, y_pred, per_class=_lade_vectors(class_counts),
                             soft_labels=False,
                             alpha=validate_non_negative(alpha, "alpha"),
                             remine_lambda=validate_non_negative(remine_lambda, "remine_lambda"))


@keras.saving.register_keras_serializable(package="keras_margins")
class LADELoss(MarginLoss):
    """LADE: cross-entropy with the training prior plus the LADER regulariser.

    ``L = mean_i CE(x_i + log pi, y_i) + alpha R`` with ``pi_j = n_j / sum_k n_k``
    (``log(pi_j + 1e-12)``, as ``LogitAdjustedLoss(tau=1)``) and the batch's
    LADER term (Donsker-Varadhan bound of the per-class log-likelihood ratio,
    with the ReMINE penalty)::

        R = -sum_j pi_j [ m_j - L_j - remine_lambda L_j^2 ]
        m_j = (1 / N_j) sum_{i: y_i = j} x_ij        (0 if class j is absent)
        L_j = log (1 / B) sum_i exp(x_ij - log pi_j + log(1 / C))

    The weights ``pi_j``, the shift to the uniform target prior in ``L_j`` and
    the sum over every class (``m_j = 0`` for a class absent from the batch)
    follow the authors' code. ``alpha = 0`` is ``LogitAdjustedLoss(tau=1)``.
    Predict with the raw logits ``x`` (the balanced posterior; add ``log p_t``
    for another target prior). ``reduction=None`` returns ``CE_i + alpha R``
    per sample (their mean is the loss); ``R`` is computed over the batch, so
    under a distribution strategy it is per replica.

    Args:
        class_counts: per-class training counts (any order).
        alpha: weight of the regulariser, >= 0. Default 0.1 (the authors'
            CIFAR-100-LT configuration: LADELoss weight 0.1).
        remine_lambda: weight of the ReMINE penalty, >= 0 (0.1, same source).
        reduction, name, dtype: see ``MarginLoss``.

    Example:
    ```python
    model.compile(optimizer="sgd", loss=km.losses.LADELoss(counts, alpha=0.1))
    ```

    Reference: Hong et al., "Disentangling Label Distribution for Long-tailed
    Visual Recognition", CVPR 2021 (LADE-CE, LADER with ReMINE).
    """

    accepts_class_weights = False
    accepts_soft_labels = False  # R's per-class batch means need one label per sample
    rule = staticmethod(_lade_rule)
    rule_parameters = ("alpha", "remine_lambda")
    config_parameters = ("class_counts", "alpha", "remine_lambda")

    def __init__(self, class_counts, alpha=0.1, remine_lambda=0.1,
                 reduction="sum_over_batch_size", name="lade_loss", dtype=None):
        super().__init__(class_counts=class_counts, reduction=reduction, name=name,
                         dtype=dtype)
        self.alpha = validate_non_negative(alpha, "alpha")
        self.remine_lambda = validate_non_negative(remine_lambda, "remine_lambda")
        self.vectors = _lade_vectors(self._class_counts)

    def rule_arguments(self):
        per_class, arguments = super().rule_arguments()
        return dict(self.vectors), arguments
