"""One-call long-tailed evaluation.

``evaluate_long_tailed(model, dataset, class_counts)`` runs the model once over
a test set and returns everything the seed papers report (top-1/3/5,
per-class, many/medium/few-shot and balanced accuracy, ECE, class margin of a
``CosineDense`` head, sample margins) as a JSON-serialisable dict;
``evaluate_predictions(outputs, labels, class_counts)`` builds the same dict
from outputs already computed. The report is computed in float64 NumPy from
the outputs and labels. ``keras_margins.reporting`` formats reports as
Markdown tables and aggregates them over seeds.

Undefined values are ``None`` (JSON ``null``), never NaN: a shot group with no
classes (e.g. few-shot on a training set where every class has >= 20 images),
a class with no test samples, or a top-k with k larger than the number of
classes (that key is then left out). ``group_descriptions`` says what each
shot group means and, for an undefined group, why.
"""

import math
import numbers

import keras
import numpy as np

from keras_margins.groups import SHOT_GROUPS, empty_group_reason, shot_group_rules, shot_groups
from keras_margins.margins import class_margin, find_cosine_head, per_class_summary
from keras_margins.validation import (validate_class_counts, validate_labels,
                                      validate_logit_scale, validate_num_bins)

__all__ = ["evaluate_long_tailed", "evaluate_predictions", "default_logit_scale"]

_CHUNK_VALUES = 1 << 22  # evaluate_predictions works on chunks of up to ~4M scores


def _split_batch(batch):
    if isinstance(batch, dict) or not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ValueError("The dataset must yield (x, y) or (x, y, sample_weight) batches "
                         "with labels; received a batch without labels.")
    return batch[0], batch[1]


def _batches(dataset, batch_size):
    """Yields (x, y) numpy batches from a tf.data.Dataset, (x, y) arrays or a PyDataset."""
    if isinstance(dataset, tuple) and len(dataset) in (2, 3) and not isinstance(dataset[0], tuple):
        x, y = dataset[0], dataset[1]
        first = keras.tree.flatten(x)[0]
        num_samples = int(np.shape(first)[0])
        if int(np.shape(y)[0]) != num_samples:
            raise ValueError(f"x has {num_samples} samples but y has {np.shape(y)[0]}.")
        for start in range(0, num_samples, batch_size):
            stop = start + batch_size
            yield keras.tree.map_structure(lambda a: a[start:stop], x), y[start:stop]
    elif hasattr(dataset, "as_numpy_iterator"):  # tf.data.Dataset (batched)
        for batch in dataset.as_numpy_iterator():
            yield _split_batch(batch)
    elif isinstance(dataset, keras.utils.PyDataset):
        num_batches = dataset.num_batches
        if num_batches is None:
            raise ValueError("Cannot evaluate on an infinite PyDataset (num_batches is None).")
        for index in range(num_batches):
            yield _split_batch(dataset[index])
    elif hasattr(dataset, "__iter__") and not hasattr(dataset, "shape"):
        for batch in dataset:  # any finite iterable of batches
            yield _split_batch(batch)
    else:
        raise ValueError(f"`dataset` must be a tf.data.Dataset, an (x, y) tuple of arrays, "
                         f"a keras.utils.PyDataset or an iterable of (x, y) batches; "
                         f"received {type(dataset).__name__}.")


def _float_or_none(value):
    value = float(value)
    return value if math.isfinite(value) else None


def _json_ready(value):
    """Numpy scalars/arrays to python, NaN to None, recursively."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return _float_or_none(value)
    return value


def default_logit_scale(model):
    """The ECE logit scale ``evaluate_long_tailed`` uses by default: the compiled
    loss's ``scale`` attribute when it is a positive number, else 1."""
    scale = getattr(getattr(model, "loss", None), "scale", None)
    if isinstance(scale, numbers.Real) and not isinstance(scale, bool) and scale > 0:
        return float(scale)
    return 1.0


def _softmax(logits):
    shifted = logits - np.max(logits, axis=1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / np.sum(exponentials, axis=1, keepdims=True)


class _Evaluation:
    """The streaming state behind ``evaluate_predictions`` and ``evaluate_long_tailed``.

    ``add(outputs, labels)`` takes one batch, checks it and accumulates
    per-class hits, top-k hits, ECE bin sums and sample margins in NumPy;
    ``result`` returns the report dict.
    """

    def __init__(self, class_counts, top_k, num_bins, from_logits, logit_scale,
                 many_threshold, few_threshold):
        self.counts = validate_class_counts(class_counts)
        self.groups = shot_groups(self.counts, many_threshold, few_threshold)
        self.thresholds = {"many": many_threshold, "few": few_threshold}
        self.rules = shot_group_rules(many_threshold, few_threshold)
        self.top_k = sorted({int(k) for k in top_k} - {1})
        self.num_bins = validate_num_bins(num_bins)
        self.from_logits = bool(from_logits)
        self.logit_scale = validate_logit_scale(logit_scale)
        self.num_classes = None
        self.margins, self.labels_seen = [], []

    def _start(self, num_classes):
        validate_class_counts(self.counts, num_classes=num_classes)
        self.num_classes = num_classes
        self.correct = np.zeros((num_classes,), dtype=np.int64)
        self.top_hits = {k: 0 for k in self.top_k if k <= num_classes}
        self.bin_count = np.zeros((self.num_bins,), dtype=np.float64)
        self.bin_confidence = np.zeros((self.num_bins,), dtype=np.float64)
        self.bin_correct = np.zeros((self.num_bins,), dtype=np.float64)

    def _probabilities(self, outputs):
        if self.from_logits:
            return _softmax(outputs.astype(np.float64) * self.logit_scale)
        if outputs.size and (np.min(outputs) < -1e-6 or np.max(outputs) > 1 + 1e-6):
            raise ValueError(
                f"from_logits=False expects probabilities in [0, 1], received values in "
                f"[{np.min(outputs):g}, {np.max(outputs):g}]; pass from_logits=True for "
                f"logits or cosines.")
        return outputs.astype(np.float64)

    def add(self, outputs, y):
        if isinstance(outputs, (list, tuple, dict)):
            raise ValueError("evaluate_long_tailed needs a model with a single "
                             "(batch, num_classes) output.")
        outputs = np.asarray(outputs, dtype=np.float32)
        if outputs.ndim != 2:
            raise ValueError(f"The model's output must be (batch, num_classes), received "
                             f"shape {outputs.shape}.")
        if self.num_classes is None:
            self._start(outputs.shape[1])
        elif outputs.shape[1] != self.num_classes:
            raise ValueError(f"The model's outputs changed from {self.num_classes} to "
                             f"{outputs.shape[1]} classes between batches.")
        labels = validate_labels(np.asarray(y), self.num_classes)
        if labels.shape[0] != outputs.shape[0]:
            raise ValueError(f"A batch has {labels.shape[0]} labels but {outputs.shape[0]} "
                             f"predictions.")
        rows = np.arange(labels.size)
        target = outputs[rows, labels]
        others = outputs.astype(np.float64)
        others[rows, labels] = -np.inf
        self.margins.append(target.astype(np.float64) - np.max(others, axis=1))
        self.labels_seen.append(labels)
        # Top-1: the first largest output; top-k: fewer than k outputs strictly
        # above the target's (ties count as hits; a NaN target never does).
        hits = np.argmax(outputs, axis=1) == labels
        self.correct += np.bincount(labels[hits], minlength=self.num_classes)
        rank = np.sum(outputs > np.where(np.isnan(target), -np.inf, target)[:, None], axis=1)
        for k in self.top_hits:
            self.top_hits[k] += int(np.sum(rank < k))
        # ECE bins (b/M, (b+1)/M] of the top-1 confidence (Guo et al. 2017, Eq. 3).
        probabilities = self._probabilities(outputs)
        confidence = np.max(probabilities, axis=1)
        right = (np.argmax(probabilities, axis=1) == labels).astype(np.float64)
        index = np.clip(np.ceil(confidence * self.num_bins).astype(np.int64) - 1, 0,
                        self.num_bins - 1)
        self.bin_count += np.bincount(index, minlength=self.num_bins)
        self.bin_confidence += np.bincount(index, weights=confidence, minlength=self.num_bins)
        self.bin_correct += np.bincount(index, weights=right, minlength=self.num_bins)

    def _group_descriptions(self, support):
        descriptions = {}
        for group in SHOT_GROUPS:
            members = self.groups[group]
            if not members:
                reason = empty_group_reason(group, self.thresholds["many"],
                                            self.thresholds["few"])
            elif not any(support[j] > 0 for j in members):
                reason = f"none of its {len(members)} classes has test samples"
            else:
                reason = None
            descriptions[group] = {"rule": self.rules[group], "num_classes": len(members),
                                   "reason": reason}
        return descriptions

    def result(self, kernel, return_per_sample):
        if self.num_classes is None:
            raise ValueError("`dataset` yielded no batches: nothing to evaluate.")
        num_classes = self.num_classes
        labels = np.concatenate(self.labels_seen)
        margins = np.concatenate(self.margins)
        support = np.bincount(labels, minlength=num_classes)
        accuracy = np.where(support > 0, self.correct / np.maximum(support, 1), np.nan)

        def group_mean(indices):
            present = [j for j in indices if support[j] > 0]
            return float(np.mean(accuracy[present])) if present else None

        per_class_margin_min, per_class_margin_mean = per_class_summary(margins, labels,
                                                                        num_classes)
        results = {
            "num_samples": int(labels.size),
            "num_classes": int(num_classes),
            "top1": float(np.sum(self.correct) / labels.size),
        }
        for k, hits in self.top_hits.items():
            results[f"top{k}"] = float(hits / labels.size)
        ece = np.sum(np.abs(self.bin_correct - self.bin_confidence)) / labels.size
        results.update({
            "many": group_mean(self.groups["many"]),
            "medium": group_mean(self.groups["medium"]),
            "few": group_mean(self.groups["few"]),
            "balanced_accuracy": group_mean(range(num_classes)),
            "ece": float(ece),
            "ece_logit_scale": self.logit_scale,
            "class_margin": class_margin(kernel) if kernel is not None else None,
            "per_class_accuracy": accuracy,
            "per_class_support": support,
            "groups": self.groups,
            "thresholds": self.thresholds,
            "group_descriptions": self._group_descriptions(support),
            "sample_margin": {
                "mean": float(np.mean(margins)),
                "min": float(np.min(margins)),
                "per_class_min": per_class_margin_min,
                "per_class_mean": per_class_margin_mean,
            },
        })
        if return_per_sample:
            results["sample_margin"]["per_sample"] = margins
        return _json_ready(results)


def evaluate_predictions(outputs, labels, class_counts, kernel=None, top_k=(3, 5),
                         num_bins=15, from_logits=True, logit_scale=None, many_threshold=100,
                         few_threshold=20, return_per_sample=False):
    """``evaluate_long_tailed``'s report from outputs already computed.

    Use it when one forward pass serves several purposes (the report, plots,
    embeddings): ``evaluate_long_tailed(model, (x, y), counts)`` equals
    ``evaluate_predictions(model.predict(x), y, counts,
    kernel=find_cosine_head(model), logit_scale=default_logit_scale(model))``.

    Args:
        outputs: (num_samples, num_classes) logits, cosines or probabilities.
        labels: sparse (num_samples,) or one-hot (num_samples, num_classes) labels.
        class_counts: per-class training counts (length num_classes).
        kernel: the classifier's (features, classes) kernel or a ``CosineDense``
            layer, for ``class_margin`` (``None``: ``class_margin`` is ``None``).
        logit_scale: factor applied to the outputs before the ECE softmax
            (default 1).
        top_k: as in ``evaluate_long_tailed``, like ``num_bins``,
            ``from_logits``, ``many_threshold``, ``few_threshold`` and
            ``return_per_sample``.

    Returns:
        the same JSON-serialisable dict as ``evaluate_long_tailed``.
    """
    outputs = np.asarray(outputs)
    labels = np.asarray(labels)
    if outputs.ndim != 2:
        raise ValueError(f"`outputs` must be (num_samples, num_classes), received shape "
                         f"{outputs.shape}.")
    if labels.shape[:1] != outputs.shape[:1]:
        raise ValueError(f"`outputs` has {outputs.shape[0]} samples but `labels` has "
                         f"{labels.shape[0] if labels.ndim else 0}.")
    state = _Evaluation(class_counts, top_k, num_bins, from_logits,
                        1.0 if logit_scale is None else logit_scale, many_threshold,
                        few_threshold)
    step = max(1, _CHUNK_VALUES // max(1, outputs.shape[1]))
    for start in range(0, outputs.shape[0], step):
        state.add(outputs[start:start + step], labels[start:start + step])
    return state.result(kernel, return_per_sample)


def evaluate_long_tailed(model, dataset, class_counts, batch_size=256, top_k=(3, 5),
                         num_bins=15, from_logits=True, logit_scale=None,
                         many_threshold=100, few_threshold=20, return_per_sample=False):
    """Evaluates a classifier the way the long-tailed papers report it.

    Runs ``model.predict_on_batch`` once over ``dataset`` (the predicted class is
    the argmax of the outputs: logits, cosines or probabilities) and returns a
    JSON-serialisable dict with fractions in [0, 1]:

    - ``top1`` (overall accuracy) and ``top3`` / ``top5`` (``top_k``; keys with
      k > num_classes are left out; ties with the target count as hits).
    - ``per_class_accuracy`` (list, ``None`` for classes without test samples)
      and ``per_class_support`` (test samples per class).
    - ``many`` / ``medium`` / ``few``: mean per-class accuracy over the classes with
      more than ``many_threshold``, between ``few_threshold`` and
      ``many_threshold``, and fewer than ``few_threshold`` training images
      (``class_counts``); ``None`` for a group with no classes (or no test
      samples). ``groups`` lists each group's classes, ``thresholds`` the
      thresholds and ``group_descriptions`` each group's ``rule`` (e.g. "fewer
      than 20 training images"), ``num_classes`` and, when the group's value
      is ``None``, the ``reason`` (e.g. "no class has fewer than 20 training
      images"; ``None`` otherwise).
    - ``balanced_accuracy``: mean per-class accuracy.
    - ``ece``: expected calibration error (``num_bins`` bins) of
      ``softmax(logit_scale * outputs)``; ``ece_logit_scale`` records the scale
      (default: the compiled loss's ``scale`` attribute if it is a number, else 1).
    - ``class_margin``: minimum angle (degrees) between the class prototypes of
      the last ``CosineDense`` layer, ``None`` if the model has none.
    - ``sample_margin``: ``z_y - max_{j != y} z_j`` summarised as ``mean``, ``min``,
      ``per_class_min`` and ``per_class_mean`` (``per_sample`` too with
      ``return_per_sample=True``).

    Args:
        model: a Keras model with one (batch, num_classes) output.
        dataset: a batched ``tf.data.Dataset`` of (x, y[, w]), an ``(x, y)`` tuple
            of arrays (split into ``batch_size`` batches), a ``keras.utils.PyDataset``
            or a finite iterable of batches. Labels sparse or one-hot; sample
            weights are ignored.
        class_counts: per-class training counts (length num_classes).
        batch_size: batch size for array inputs.
        top_k: the k of the top-k accuracies besides top-1.
        num_bins: ECE bins.
        from_logits: whether the outputs are logits/cosines (softmax for ECE)
            or probabilities.
        logit_scale: factor applied to the outputs before the ECE softmax.
        many_threshold, few_threshold: shot-group thresholds (100, 20).
        return_per_sample: also return the per-sample margins.

    Raises:
        ValueError: ``class_counts`` not matching the model's number of classes,
            labels outside ``[0, num_classes)``, an empty dataset or a batch
            without labels.

    Example:
    ```python
    results = km.evaluate_long_tailed(model, (x_test, y_test), class_counts)
    print(km.reporting.markdown_table({"LDAM-DRW": results}))
    ```
    """
    if batch_size is None or int(batch_size) < 1:
        raise ValueError(f"`batch_size` must be a positive integer, received {batch_size!r}.")
    state = _Evaluation(class_counts, top_k, num_bins, from_logits,
                        default_logit_scale(model) if logit_scale is None else logit_scale,
                        many_threshold, few_threshold)
    for x, y in _batches(dataset, int(batch_size)):
        state.add(model.predict_on_batch(x), y)
    return state.result(find_cosine_head(model), return_per_sample)
