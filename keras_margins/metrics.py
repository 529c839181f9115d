"""Long-tailed classification metrics.

Stateful ``keras.metrics.Metric`` subclasses (usable in
``model.compile(metrics=[...])`` on every backend, eager or compiled):

- ``PerClassAccuracy(num_classes)``: per-class accuracy (recall). ``result()`` is
  the mean over the classes seen so far (a scalar for progress bars);
  ``per_class_result()`` is the (num_classes,) vector.
- ``ShotGroupAccuracy(class_counts, group)``: mean per-class accuracy over the
  many-shot (> 100 training images), medium-shot (20-100) or few-shot (< 20)
  classes; thresholds configurable (``keras_margins.groups``).
- ``BalancedAccuracy(num_classes)``: mean per-class accuracy.
- ``ExpectedCalibrationError(num_bins=15)``: ECE of the softmax confidences.

Top-k accuracy: use ``keras.metrics.SparseTopKCategoricalAccuracy(k)``. Class
and sample margins: ``keras_margins.margins``; the margin logger:
``keras_margins.callbacks.ClassMarginLogger``.

Conventions shared by all metrics:

- Labels are sparse ints of shape (B,) or (B, 1), or one-hot (B, C);
  predictions are logits, cosines or probabilities of shape (B, C) (the
  predicted class is their argmax).
- Counts accumulate across batches, so a class absent from a batch (or from a
  whole epoch) is handled: it simply does not enter the class averages.
  A class with no samples has accuracy NaN in ``per_class_result()`` (numpy's
  "undefined"); every scalar ``result()`` averages over the classes that have
  samples and is 0.0 before any sample has been seen (the Keras convention).
- Bad input: a number of classes in ``y_pred`` that differs from
  ``num_classes`` / ``len(class_counts)`` raises ``ValueError`` at trace time.
  Labels outside ``[0, C)`` raise ``ValueError`` in eager mode; under ``jit``
  they cannot be inspected, so they are counted and every result becomes NaN
  (loud, never a silently wrong number).
- A shot group with no classes (e.g. ``"few"`` on a balanced set) raises
  ``ValueError`` at construction.
"""

import keras
import numpy as np
from keras import ops

from keras_margins.groups import SHOT_GROUPS, empty_group_reason, shot_groups
from keras_margins.ops import check_scores, sparse_labels, target_mask, valid_labels
from keras_margins.validation import (validate_class_counts, validate_logit_scale,
                                      validate_num_bins, validate_num_classes)

__all__ = [
    "PerClassAccuracy",
    "BalancedAccuracy",
    "ShotGroupAccuracy",
    "ExpectedCalibrationError",
]


def _check_num_classes(y_pred, num_classes, what):
    classes = check_scores(y_pred)
    if classes is not None and classes != num_classes:
        raise ValueError(f"`y_pred` has {classes} classes (shape {tuple(y_pred.shape)}) "
                         f"but {what} {num_classes}.")


def _sample_weights(sample_weight, batch_like):
    if sample_weight is None:
        return ops.ones_like(ops.cast(batch_like, "float32"))
    weights = ops.cast(ops.convert_to_tensor(sample_weight), "float32")
    return ops.reshape(weights, (-1,))


class _ClassCountsMetric(keras.metrics.Metric):
    """Accumulates per-class (weighted) sample counts and correct counts."""

    def __init__(self, num_classes, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.num_classes = validate_num_classes(num_classes)
        self.correct = self.add_variable(shape=(self.num_classes,), initializer="zeros",
                                         dtype="float32", name="correct")
        self.total = self.add_variable(shape=(self.num_classes,), initializer="zeros",
                                       dtype="float32", name="total")
        self.invalid = self.add_variable(shape=(), initializer="zeros", dtype="float32",
                                         name="invalid_labels")

    def _expected(self):
        return "the metric expects num_classes ="

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.convert_to_tensor(y_pred)
        _check_num_classes(y_pred, self.num_classes, self._expected())
        labels = sparse_labels(y_true, self.num_classes)
        predicted = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        mask = ops.cast(target_mask(labels, self.num_classes), "float32")
        weights = _sample_weights(sample_weight, labels)
        weighted = mask * ops.expand_dims(weights, -1)
        hits = ops.cast(predicted == labels, "float32")
        valid = valid_labels(labels, self.num_classes)
        self.total.assign_add(ops.sum(weighted, axis=0))
        self.correct.assign_add(ops.sum(weighted * ops.expand_dims(hits, -1), axis=0))
        self.invalid.assign_add(ops.sum(1.0 - ops.cast(valid, "float32")))

    def _nan_if_invalid(self, value):
        return ops.where(self.invalid > 0, ops.cast(np.nan, "float32"), value)

    def per_class_result(self):
        """(num_classes,) per-class accuracy; NaN for classes with no samples."""
        present = self.total > 0
        accuracy = self.correct / ops.maximum(self.total, 1e-12)
        return self._nan_if_invalid(ops.where(present, accuracy, np.nan))

    def per_class_support(self):
        """(num_classes,) (weighted) number of samples seen per class."""
        return ops.convert_to_tensor(self.total)

    def _class_mask(self):
        """(num_classes,) 0/1 weights of the classes that ``result()`` averages."""
        return ops.ones((self.num_classes,), dtype="float32")

    def result(self):
        """Mean per-class accuracy ``(1/|S|) sum_{j in S} acc_j`` over the classes
        ``S`` of ``_class_mask()`` that have samples; 0.0 before any sample."""
        present = ops.cast(self.total > 0, "float32") * self._class_mask()
        accuracy = self.correct / ops.maximum(self.total, 1e-12)
        mean = ops.sum(accuracy * present) / ops.maximum(ops.sum(present), 1.0)
        return self._nan_if_invalid(mean)

    def reset_state(self):
        for variable in (self.correct, self.total):
            variable.assign(ops.zeros((self.num_classes,), dtype="float32"))
        self.invalid.assign(ops.zeros((), dtype="float32"))

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="keras_margins")
class PerClassAccuracy(_ClassCountsMetric):
    """Per-class accuracy (recall): ``acc_j = #{i: y_i = j, argmax z_i = j} / #{i: y_i = j}``.

    ``result()`` is a scalar for progress bars: the mean of ``acc_j`` over the
    classes seen so far (equal to ``BalancedAccuracy``). ``per_class_result()``
    returns the (num_classes,) vector (NaN for classes without samples) and
    ``per_class_support()`` the per-class sample counts.

    Args:
        num_classes: number of classes ``C`` (``y_pred`` must be (B, C)).

    Example:
    ```python
    per_class = km.metrics.PerClassAccuracy(10)
    model.compile(loss=..., metrics=[per_class])
    model.evaluate(x_test, y_test)
    keras.ops.convert_to_numpy(per_class.per_class_result())
    ```
    """

    def __init__(self, num_classes, name="per_class_accuracy", dtype=None):
        super().__init__(num_classes, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package="keras_margins")
class BalancedAccuracy(_ClassCountsMetric):
    """Balanced accuracy: mean per-class accuracy ``(1/|S|) sum_{j in S} acc_j``.

    ``S`` is the set of classes with at least one sample (as scikit-learn's
    ``balanced_accuracy_score``). On a balanced test set it equals top-1 accuracy.

    Args:
        num_classes: number of classes ``C``.

    Example:
    ```python
    model.compile(loss=..., metrics=[km.metrics.BalancedAccuracy(10)])
    ```
    """

    def __init__(self, num_classes, name="balanced_accuracy", dtype=None):
        super().__init__(num_classes, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package="keras_margins")
class ShotGroupAccuracy(_ClassCountsMetric):
    """Many-, medium- or few-shot accuracy: mean per-class accuracy over a group.

    Groups from the *training* counts ``n_j``: many ``n_j > many_threshold``,
    medium ``few_threshold <= n_j <= many_threshold``, few ``n_j < few_threshold``
    (defaults 100 and 20, as in the long-tailed CIFAR / ImageNet-LT papers).
    The result is ``mean_{j in group, j seen} acc_j``; on the usual balanced test
    sets it equals the sample accuracy over the group's test images.

    Args:
        class_counts: per-class training counts (length ``C``).
        group: ``"many"``, ``"medium"`` or ``"few"``.
        many_threshold: classes with more training images are many-shot.
        few_threshold: classes with fewer training images are few-shot.

    Raises:
        ValueError: bad counts or thresholds, an unknown group, or a group with
            no classes (e.g. ``"few"`` on a balanced training set).

    Example:
    ```python
    counts = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    model.compile(loss=..., metrics=[
        km.metrics.ShotGroupAccuracy(counts, g) for g in ("many", "medium", "few")])
    ```
    """

    def __init__(self, class_counts, group="many", many_threshold=100, few_threshold=20,
                 name=None, dtype=None):
        counts = validate_class_counts(class_counts)
        if group not in SHOT_GROUPS:
            raise ValueError(f"`group` must be one of {SHOT_GROUPS}, received {group!r}.")
        members = shot_groups(counts, many_threshold, few_threshold)[group]
        if not members:
            raise ValueError(
                f"The {group!r}-shot group is empty for class_counts {counts.astype(int).tolist()} "
                f"({empty_group_reason(group, many_threshold, few_threshold)}; many > "
                f"{many_threshold}, medium {few_threshold}-{many_threshold}, few < "
                f"{few_threshold} training images): no accuracy can be computed for it. "
                f"Drop this metric or change the thresholds.")
        super().__init__(counts.size, name=name or f"{group}_shot_accuracy", dtype=dtype)
        self.class_counts = [int(n) for n in counts]
        self.group = group
        self.many_threshold = many_threshold
        self.few_threshold = few_threshold
        self.group_classes = members
        group_mask = np.zeros((counts.size,), dtype="float32")
        group_mask[members] = 1.0
        self._group_mask = group_mask

    def _expected(self):
        return "class_counts has"

    def _class_mask(self):
        return ops.convert_to_tensor(self._group_mask)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "class_counts": self.class_counts,
                "group": self.group, "many_threshold": self.many_threshold,
                "few_threshold": self.few_threshold}


@keras.saving.register_keras_serializable(package="keras_margins")
class ExpectedCalibrationError(keras.metrics.Metric):
    """Expected calibration error of the top-1 confidence (Guo et al. 2017, Eq. 3).

    ``ECE = sum_b (|B_b| / N) * |acc(B_b) - conf(B_b)|`` over ``num_bins`` equal-
    width confidence bins ``(b/M, (b+1)/M]``, where the confidence of a sample is
    ``max_j p_j`` and ``p = softmax(logit_scale * y_pred)`` (``from_logits``) or
    ``y_pred`` itself (probabilities). Perfectly calibrated predictions give 0.

    For a ``CosineDense`` head pass the scale used by the loss as
    ``logit_scale`` (e.g. 30 for LDAM): the softmax of raw cosines is nearly
    uniform and its ECE says little.

    Args:
        num_bins: number of confidence bins (15 as in Guo et al.).
        from_logits: whether ``y_pred`` are logits (softmax applied) or
            probabilities (eagerly checked to lie in [0, 1]).
        logit_scale: positive factor applied to logits before the softmax.

    Example:
    ```python
    model.compile(loss=..., metrics=[km.metrics.ExpectedCalibrationError()])
    ```
    """

    def __init__(self, num_bins=15, from_logits=True, logit_scale=1.0, name="ece", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.num_bins = validate_num_bins(num_bins)
        self.from_logits = bool(from_logits)
        self.logit_scale = validate_logit_scale(logit_scale)
        shape = (self.num_bins,)
        self.bin_count = self.add_variable(shape=shape, initializer="zeros",
                                           dtype="float32", name="bin_count")
        self.bin_confidence = self.add_variable(shape=shape, initializer="zeros",
                                                dtype="float32", name="bin_confidence")
        self.bin_correct = self.add_variable(shape=shape, initializer="zeros",
                                             dtype="float32", name="bin_correct")
        self.invalid = self.add_variable(shape=(), initializer="zeros", dtype="float32",
                                         name="invalid_labels")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.cast(ops.convert_to_tensor(y_pred), "float32")
        num_classes = check_scores(y_pred)
        labels = sparse_labels(y_true, num_classes)
        if self.from_logits:
            probabilities = ops.softmax(y_pred * self.logit_scale, axis=-1)
        else:
            probabilities = y_pred
            try:
                values = ops.convert_to_numpy(y_pred)
            except Exception:  # symbolic under jit: cannot be inspected
                values = None
            if values is not None and values.size and (
                    np.min(values) < -1e-6 or np.max(values) > 1 + 1e-6):
                raise ValueError(
                    f"ExpectedCalibrationError(from_logits=False) expects probabilities "
                    f"in [0, 1], received values in [{np.min(values):g}, "
                    f"{np.max(values):g}]; pass from_logits=True for logits or cosines.")
        confidence = ops.amax(probabilities, axis=-1)
        predicted = ops.cast(ops.argmax(probabilities, axis=-1), "int32")
        hits = ops.cast(predicted == labels, "float32")
        index = ops.cast(ops.ceil(confidence * self.num_bins), "int32") - 1
        index = ops.clip(index, 0, self.num_bins - 1)
        bins = ops.cast(ops.expand_dims(index, -1)
                        == ops.arange(self.num_bins, dtype="int32")[None, :], "float32")
        weights = _sample_weights(sample_weight, labels)
        bins = bins * ops.expand_dims(weights, -1)
        valid = valid_labels(labels, num_classes or None)
        self.bin_count.assign_add(ops.sum(bins, axis=0))
        self.bin_confidence.assign_add(ops.sum(bins * ops.expand_dims(confidence, -1), axis=0))
        self.bin_correct.assign_add(ops.sum(bins * ops.expand_dims(hits, -1), axis=0))
        self.invalid.assign_add(ops.sum(1.0 - ops.cast(valid, "float32")))

    def result(self):
        total = ops.sum(self.bin_count)
        ece = ops.sum(ops.abs(self.bin_correct - self.bin_confidence)) / ops.maximum(total, 1e-12)
        return ops.where(self.invalid > 0, ops.cast(np.nan, "float32"), ece)

    def reset_state(self):
        for variable in (self.bin_count, self.bin_confidence, self.bin_correct):
            variable.assign(ops.zeros((self.num_bins,), dtype="float32"))
        self.invalid.assign(ops.zeros((), dtype="float32"))

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "num_bins": self.num_bins,
                "from_logits": self.from_logits, "logit_scale": self.logit_scale}
