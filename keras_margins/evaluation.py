"""One-call long-tailed evaluation, Markdown tables and seed aggregation.

``evaluate_long_tailed(model, dataset, class_counts)`` runs the model once over
a test set and returns everything the seed papers report (top-1/3/5,
per-class, many/medium/few-shot and balanced accuracy, ECE, class margin of a
``CosineDense`` head, sample margins) as a JSON-serialisable dict;
``evaluate_predictions(outputs, labels, class_counts)`` builds the same dict
from outputs already computed.
``markdown_table`` formats results in the papers' layout
(``Method | Many | Medium | Few | All``) and ``aggregate_seeds`` turns runs
over several seeds into mean and standard deviation.

Undefined values are ``None`` (JSON ``null``), never NaN: a shot group with no
classes (e.g. few-shot on a training set where every class has >= 20 images),
a class with no test samples, or a top-k with k larger than the number of
classes (that key is then left out).
"""

import math
import numbers

import keras
import numpy as np
from keras import ops

from keras_margins.metrics import (ExpectedCalibrationError, PerClassAccuracy,
                                   _numpy_labels, _per_class_summary, class_margin,
                                   find_cosine_head, shot_groups)
from keras_margins.priors import validate_class_counts

__all__ = ["evaluate_long_tailed", "evaluate_predictions", "default_logit_scale",
           "markdown_table", "aggregate_seeds"]

# Keys whose values are fractions in [0, 1] (shown as percentages in tables).
_FRACTION_KEYS = {"top1", "top3", "top5", "all", "many", "medium", "few",
                  "balanced_accuracy", "ece", "per_class_accuracy"}
_COLUMN_KEYS = {"all": "top1"}
_CHUNK_VALUES = 1 << 22  # metric updates on chunks of up to ~4M scores (16 MB)
_HEADERS = {"many": "Many", "medium": "Medium", "few": "Few", "all": "All", "top1": "Top-1",
            "top3": "Top-3", "top5": "Top-5", "balanced_accuracy": "Balanced", "ece": "ECE",
            "class_margin": "Class margin"}


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


class _Evaluation:
    """The streaming state behind ``evaluate_predictions`` and ``evaluate_long_tailed``.

    ``add(outputs, labels)`` takes one batch (checked, margins kept, metrics
    updated on chunks of up to ``_CHUNK_VALUES`` scores: far fewer eager
    dispatches and, on JAX, far fewer per-shape compilations); ``result``
    returns the report dict.
    """

    def __init__(self, class_counts, top_k, num_bins, from_logits, logit_scale,
                 many_threshold, few_threshold):
        self.counts = validate_class_counts(class_counts)
        self.groups = shot_groups(self.counts, many_threshold, few_threshold)
        self.thresholds = {"many": many_threshold, "few": few_threshold}
        self.top_k = sorted({int(k) for k in top_k} - {1})
        self.num_bins, self.from_logits = num_bins, from_logits
        self.logit_scale = float(logit_scale)
        self.num_classes = None
        self.per_class = self.top_metrics = self.ece = None
        self.margins, self.labels_seen = [], []
        self.pending_outputs, self.pending_labels = [], []

    def add(self, outputs, y):
        if isinstance(outputs, (list, tuple, dict)):
            raise ValueError("evaluate_long_tailed needs a model with a single "
                             "(batch, num_classes) output.")
        outputs = np.asarray(outputs, dtype=np.float32)
        if outputs.ndim != 2:
            raise ValueError(f"The model's output must be (batch, num_classes), received "
                             f"shape {outputs.shape}.")
        if self.num_classes is None:
            num_classes = self.num_classes = outputs.shape[1]
            validate_class_counts(self.counts, num_classes=num_classes)
            self.per_class = PerClassAccuracy(num_classes)
            self.ece = ExpectedCalibrationError(self.num_bins, from_logits=self.from_logits,
                                                logit_scale=self.logit_scale)
            self.top_metrics = {k: keras.metrics.SparseTopKCategoricalAccuracy(k=k)
                                for k in self.top_k if k <= num_classes}
        elif outputs.shape[1] != self.num_classes:
            raise ValueError(f"The model's outputs changed from {self.num_classes} to "
                             f"{outputs.shape[1]} classes between batches.")
        labels = _numpy_labels(np.asarray(y), self.num_classes)
        if labels.shape[0] != outputs.shape[0]:
            raise ValueError(f"A batch has {labels.shape[0]} labels but {outputs.shape[0]} "
                             f"predictions.")
        rows = np.arange(labels.size)
        others = outputs.astype(np.float64)
        others[rows, labels] = -np.inf
        self.margins.append(outputs[rows, labels].astype(np.float64) - np.max(others, axis=1))
        self.labels_seen.append(labels)
        self.pending_outputs.append(outputs)
        self.pending_labels.append(labels)
        if sum(len(p) for p in self.pending_labels) * self.num_classes >= _CHUNK_VALUES:
            self._flush()

    def _flush(self):
        if not self.pending_outputs:
            return
        chunk_outputs = np.concatenate(self.pending_outputs)
        chunk_labels = np.concatenate(self.pending_labels)
        self.pending_outputs.clear()
        self.pending_labels.clear()
        self.per_class.update_state(chunk_labels, chunk_outputs)
        self.ece.update_state(chunk_labels, chunk_outputs)
        for metric in self.top_metrics.values():
            metric.update_state(chunk_labels, chunk_outputs)

    def result(self, kernel, return_per_sample):
        if self.num_classes is None:
            raise ValueError("`dataset` yielded no batches: nothing to evaluate.")
        self._flush()
        num_classes = self.num_classes
        labels = np.concatenate(self.labels_seen)
        margins = np.concatenate(self.margins)
        support = np.bincount(labels, minlength=num_classes)
        accuracy = np.asarray(ops.convert_to_numpy(self.per_class.per_class_result()),
                              dtype=np.float64)
        correct = np.asarray(ops.convert_to_numpy(self.per_class.correct), dtype=np.float64)

        def group_mean(indices):
            present = [j for j in indices if support[j] > 0]
            return float(np.mean(accuracy[present])) if present else None

        per_class_margin_min, per_class_margin_mean = _per_class_summary(margins, labels,
                                                                         num_classes)
        results = {
            "num_samples": int(labels.size),
            "num_classes": int(num_classes),
            "top1": float(np.sum(correct) / labels.size),
        }
        for k, metric in self.top_metrics.items():
            results[f"top{k}"] = float(ops.convert_to_numpy(metric.result()))
        results.update({
            "many": group_mean(self.groups["many"]),
            "medium": group_mean(self.groups["medium"]),
            "few": group_mean(self.groups["few"]),
            "balanced_accuracy": group_mean(range(num_classes)),
            "ece": float(ops.convert_to_numpy(self.ece.result())),
            "ece_logit_scale": self.logit_scale,
            "class_margin": class_margin(kernel) if kernel is not None else None,
            "per_class_accuracy": accuracy,
            "per_class_support": support,
            "groups": self.groups,
            "thresholds": self.thresholds,
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
        top_k, num_bins, from_logits, many_threshold, few_threshold,
        return_per_sample: as in ``evaluate_long_tailed``.

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
      k > num_classes are left out), via ``keras.metrics.SparseTopKCategoricalAccuracy``.
    - ``per_class_accuracy`` (list, ``None`` for classes without test samples)
      and ``per_class_support`` (test samples per class).
    - ``many`` / ``medium`` / ``few``: mean per-class accuracy over the classes with
      more than ``many_threshold``, between ``few_threshold`` and
      ``many_threshold``, and fewer than ``few_threshold`` training images
      (``class_counts``); ``None`` for a group with no classes. ``groups`` lists
      each group's classes and ``thresholds`` the thresholds.
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
    print(km.evaluation.markdown_table({"LDAM-DRW": results}))
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


def _aggregate(values, ddof, path):
    present = [v for v in values if v is not None]
    if not present:
        return None
    first = present[0]
    if isinstance(first, dict):
        keys = set(first)
        for value in present[1:]:
            if not isinstance(value, dict) or set(value) != keys:
                other = sorted(value) if isinstance(value, dict) else repr(value)
                raise ValueError(f"Results differ in structure at {path or 'top level'}: "
                                 f"keys {sorted(keys)} vs {other}.")
        return {k: _aggregate([v[k] if v is not None else None for v in values], ddof,
                              f"{path}.{k}" if path else k) for k in first}
    if isinstance(first, (list, tuple)):
        if any(not isinstance(v, (list, tuple)) or len(v) != len(first) for v in present):
            raise ValueError(f"Results differ in length at {path}: "
                             f"{[len(v) if isinstance(v, (list, tuple)) else v for v in present]}.")
        return [_aggregate([v[i] if v is not None else None for v in values], ddof,
                           f"{path}[{i}]") for i in range(len(first))]
    if isinstance(first, bool) or not isinstance(first, numbers.Real):
        if any(v != first for v in present):
            raise ValueError(f"Results differ at {path}: {present!r}.")
        return first
    if isinstance(first, numbers.Integral) and all(v == first for v in present):
        return first  # counts, sizes, class indices
    array = np.asarray(present, dtype=np.float64)
    std = float(np.std(array, ddof=ddof)) if array.size > ddof else 0.0
    return {"mean": float(np.mean(array)), "std": std, "n": int(array.size)}


def aggregate_seeds(results, ddof=1):
    """Mean and standard deviation over runs (seeds) of ``evaluate_long_tailed`` dicts.

    Every float becomes ``{"mean", "std", "n"}`` (``std`` with ``ddof``, 1 = the
    sample standard deviation; 0.0 for a single run); lists are aggregated
    element-wise; integers equal in every run (sample counts, class indices)
    are kept. ``None`` entries are skipped (``n`` counts the others) and an
    entry that is ``None`` in every run stays ``None``. The result is JSON-
    serialisable and accepted by ``markdown_table``.

    Raises:
        ValueError: an empty list, or results of different structure.
    """
    results = list(results)
    if not results:
        raise ValueError("`results` is empty: nothing to aggregate.")
    if not all(isinstance(r, dict) for r in results):
        raise ValueError("`results` must be a list of dicts from evaluate_long_tailed.")
    return _aggregate(results, int(ddof), "")


def _format_cell(value, scale, digits):
    if value is None:
        return "–"
    if isinstance(value, dict):
        mean, std = value.get("mean"), value.get("std")
        if mean is None:
            return "–"
        return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"
    return f"{float(value) * scale:.{digits}f}"


def markdown_table(results, columns=("many", "medium", "few", "all"), percent=True,
                   digits=1, method_header="Method"):
    """A Markdown table in the papers' format: ``Method | Many | Medium | Few | All``.

    Args:
        results: ``{method: result}`` (or a list of ``(method, result)`` pairs),
            each result from ``evaluate_long_tailed`` or ``aggregate_seeds``
            (cells then read ``mean ± std``).
        columns: result keys; ``"all"`` is top-1 accuracy. Other keys such as
            ``"balanced_accuracy"``, ``"top5"``, ``"ece"`` or ``"class_margin"``
            work too.
        percent: show accuracies and ECE in percent (degrees stay degrees).
        digits: decimals.

    Returns:
        the table as a string; undefined cells (e.g. an empty few-shot group) are "–".

    Example output::

        | Method   | Many | Medium | Few  | All  |
        |:---------|-----:|-------:|-----:|-----:|
        | CE       | 87.2 | 60.1   | 31.0 | 70.4 |
        | LDAM-DRW | 85.9 | 72.3   | 68.5 | 77.0 |
    """
    pairs = list(results.items()) if isinstance(results, dict) else list(results)
    if not pairs:
        raise ValueError("`results` is empty: nothing to tabulate.")
    headers = [method_header] + [_HEADERS.get(c, c) for c in columns]
    rows = []
    for method, result in pairs:
        if not isinstance(result, dict):
            raise ValueError(f"The result of {method!r} must be a dict, received "
                             f"{type(result).__name__}.")
        cells = [str(method)]
        for column in columns:
            key = _COLUMN_KEYS.get(column, column)
            if key not in result:
                raise ValueError(f"Column {column!r} (key {key!r}) is missing from the result "
                                 f"of {method!r}; available: {sorted(result)}.")
            scale = 100.0 if percent and key in _FRACTION_KEYS else 1.0
            cells.append(_format_cell(result[key], scale, digits))
        rows.append(cells)
    widths = [max(len(headers[i]), *(len(row[i]) for row in rows)) for i in range(len(headers))]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    rule = "|" + "|".join(":" + "-" * (widths[0] + 1) if i == 0 else "-" * (w + 1) + ":"
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([line(headers), rule] + [line(row) for row in rows])

