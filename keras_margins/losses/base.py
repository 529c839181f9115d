"""Shared machinery of the margin losses: dtype, labels, class weights.

``MarginLoss`` is a ``keras.losses.Loss`` that

* computes in float32 whatever the dtype policy (float64 when asked), so a
  ``mixed_float16`` / ``mixed_bfloat16`` model gets a float32 loss and labels
  are never rounded by a 16-bit cast;
* accepts sparse (B,), (B, 1) and one-hot (B, C) labels;
* merges its per-class ``class_weights`` into Keras' sample weights, so the
  default ``reduction="mean_with_sample_weight"`` is the papers' weighted mean
  ``sum_i w[y_i] l_i / sum_i w[y_i]`` (PyTorch's rule) and
  ``reduction="sum_over_batch_size"`` the plain mean of weighted losses;
* returns NaN for labels outside ``[0, C)`` under ``jit`` (eager: ValueError).

Subclasses implement ``per_sample(labels, scores)`` on float scores of shape
(batch, classes) and int32 labels of shape (batch,).
"""

import keras
import numpy as np
from keras import ops

from keras_margins import ops as km_ops
from keras_margins.priors import validate_class_counts, validate_class_vector

__all__ = ["MarginLoss", "loss_dtype"]


def loss_dtype(dtype):
    """float64 if the requested policy computes in float64, else float32."""
    policy = keras.dtype_policies.get(dtype or keras.backend.floatx())
    return "float64" if policy.compute_dtype == "float64" else "float32"


class MarginLoss(keras.losses.Loss):
    """Base class: per-sample ``call`` plus class weights merged into reduction.

    Args:
        class_counts: optional per-class training counts (validated, kept in the
            config; subclasses derive margins from them).
        class_weights: optional per-class weights ``w_j`` (e.g. DRW's
            class-balanced weights); ``None`` means all ones.
        reduction: Keras reduction. The default ``"mean_with_sample_weight"``
            gives ``sum w_y l / sum w_y``; ``"sum_over_batch_size"`` gives
            ``sum w_y l / B``.
        name, dtype: as in ``keras.losses.Loss``; 16-bit dtypes compute in float32.
    """

    #: Whether ``DeferredReweighting`` may switch this loss's class weights.
    accepts_class_weights = True
    #: True: class weights become Keras sample weights (weighted-mean reduction).
    #: False: the subclass applies them inside ``per_sample`` (e.g. focal).
    class_weights_in_reduction = True

    def __init__(self, class_counts=None, class_weights=None,
                 reduction="mean_with_sample_weight", name=None, dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=loss_dtype(dtype))
        self._class_counts = (None if class_counts is None
                              else validate_class_counts(class_counts))
        self.class_weights = class_weights

    @property
    def num_classes(self):
        """Number of classes fixed at construction (None if not known yet)."""
        return None if self._class_counts is None else self._class_counts.size

    @property
    def class_counts(self):
        return None if self._class_counts is None else self._class_counts.copy()

    @property
    def class_weights(self):
        return self._class_weights

    @class_weights.setter
    def class_weights(self, value):
        self._class_weights = (None if value is None else validate_class_vector(
            value, "class_weights", num_classes=self.num_classes))

    def _check_num_classes(self, scores):
        num_classes = km_ops.check_scores(scores)
        for name, vector in (("class_counts", self._class_counts),
                             ("class_weights", self._class_weights)):
            if vector is not None and num_classes is not None and vector.size != num_classes:
                raise ValueError(f"`{name}` has {vector.size} entries but y_pred has "
                                 f"{num_classes} classes (shape {tuple(scores.shape)}).")
        return num_classes

    @staticmethod
    def constant(values, dtype):
        """A per-class numpy vector as a tensor of ``dtype``."""
        return ops.convert_to_tensor(np.asarray(values), dtype=dtype)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if self._class_weights is not None and self.class_weights_in_reduction:
            scores = ops.convert_to_tensor(y_pred)
            num_classes = self._check_num_classes(scores)
            labels = km_ops.sparse_labels(y_true, num_classes)
            weights = ops.take(self.constant(self._class_weights, self.dtype),
                               ops.clip(labels, 0, num_classes - 1))
            if sample_weight is not None:
                sample_weight = ops.convert_to_tensor(sample_weight, dtype=self.dtype)
                if len(sample_weight.shape) == 2 and sample_weight.shape[-1] == 1:
                    sample_weight = ops.squeeze(sample_weight, -1)
                weights = weights * sample_weight
            sample_weight = weights
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def call(self, y_true, y_pred):
        scores = km_ops.to_compute_dtype(y_pred)
        num_classes = self._check_num_classes(scores)
        labels = km_ops.sparse_labels(y_true, num_classes)
        losses = self.per_sample(labels, scores)
        return km_ops.nan_for_invalid_labels(losses, labels, num_classes)

    def per_sample(self, labels, scores):
        """Per-sample losses, shape (batch,). Implemented by subclasses."""
        raise NotImplementedError(f"{type(self).__name__} must implement per_sample().")

    def get_config(self):
        config = super().get_config()
        config["dtype"] = self.dtype
        if type(self).accepts_class_weights:
            config["class_weights"] = (None if self._class_weights is None
                                       else self._class_weights.tolist())
        return config
