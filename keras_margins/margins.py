"""Class and sample margins, the measures of the largest-margins paper.

- ``class_margin(kernel)``: the smallest angle (degrees) between two class
  prototypes (columns of a (features, classes) kernel, or a ``CosineDense``).
- ``simplex_class_margin(C)``: its best possible value ``arccos(-1/(C-1))``.
- ``sample_margins(scores, labels)``: ``z_y - max_{j != y} z_j`` per sample,
  with the per-class minimum and mean.
- ``find_cosine_head(model)``: the ``CosineDense`` layer whose kernel to measure.

Computed in float64 numpy, outside the training graph (identical on every
backend). Reference: Zhou et al. 2022, "Learning towards the largest margins".
"""

import numpy as np
from keras import ops

from keras_margins.validation import validate_labels, validate_num_classes

__all__ = ["class_margin", "simplex_class_margin", "sample_margins", "per_class_summary",
           "find_cosine_head"]


def _kernel_array(kernel):
    if hasattr(kernel, "normalized_kernel"):
        kernel = kernel.normalized_kernel()
    array = np.asarray(ops.convert_to_numpy(kernel), dtype=np.float64)
    if array.ndim != 2 or array.shape[1] < 2:
        raise ValueError(f"`kernel` must have shape (features, classes) with at least 2 "
                         f"classes (prototypes are its columns), received shape "
                         f"{array.shape}.")
    if not np.all(np.isfinite(array)):
        raise ValueError("`kernel` holds non-finite values.")
    norms = np.linalg.norm(array, axis=0)
    if np.any(norms == 0):
        bad = int(np.flatnonzero(norms == 0)[0])
        raise ValueError(f"`kernel` column {bad} (the prototype of class {bad}) is all "
                         f"zeros and has no direction.")
    return array / norms


def class_margin(kernel):
    """Class margin: the smallest angle between two class prototypes, in degrees.

    ``margin = arccos(max_{i != j} w_hat_i . w_hat_j)`` with ``w_hat_j`` the
    unit-normalised prototype of class ``j``: the ``j``-th COLUMN of a
    (features, classes) kernel, as in ``keras.layers.Dense`` and
    ``CosineDense`` (pass ``kernel.T`` for a (classes, features) matrix). The
    best possible value is ``arccos(-1/(C-1))`` for ``C <= features + 1``
    (a regular simplex; see ``simplex_class_margin``). Computed in float64.

    Args:
        kernel: (features, classes) array or tensor, or a layer with a
            ``normalized_kernel()`` method (``CosineDense``).

    Returns:
        python float, degrees in [0, 180].

    Reference: Zhou et al. 2022, "Learning towards the largest margins", Sec. 3.
    """
    prototypes = _kernel_array(kernel)
    gram = prototypes.T @ prototypes
    np.fill_diagonal(gram, -np.inf)
    return float(np.degrees(np.arccos(np.clip(np.max(gram), -1.0, 1.0))))


def simplex_class_margin(num_classes):
    """The largest possible class margin ``arccos(-1/(C-1))`` in degrees (C <= d + 1)."""
    num_classes = validate_num_classes(num_classes)
    return float(np.degrees(np.arccos(-1.0 / (num_classes - 1))))


def per_class_summary(values, labels, num_classes):
    """Per-class minimum and mean of ``values`` (NaN for classes without samples)."""
    count = np.bincount(labels, minlength=num_classes)
    minimum = np.full((num_classes,), np.inf)
    np.minimum.at(minimum, labels, values)
    total = np.bincount(labels, weights=values, minlength=num_classes)
    present = count > 0
    mean = np.where(present, total / np.maximum(count, 1), np.nan)
    return np.where(present, minimum, np.nan), mean


def sample_margins(logits_or_cosines, labels):
    """Sample margins ``z_y - max_{j != y} z_j`` and their per-class minimum and mean.

    The sample margin of class ``j`` in the largest-margins paper is the minimum
    over its samples (computed on cosines); the paper also reports the mean.
    Computed in float64 numpy (identical on every backend).

    Args:
        logits_or_cosines: (N, C) scores (array or tensor).
        labels: sparse (N,) / (N, 1) or one-hot (N, C) labels in ``[0, C)``.

    Returns:
        dict of numpy arrays: ``per_sample`` (N,), ``per_class_min`` (C,),
        ``per_class_mean`` (C,) (NaN for classes without samples) and
        ``per_class_count`` (C,) ints.

    Raises:
        ValueError: scores not (N, C) with C >= 2, labels of the wrong shape or
            outside ``[0, C)``.
    """
    scores = np.asarray(ops.convert_to_numpy(logits_or_cosines), dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"`logits_or_cosines` must have shape (num_samples, num_classes) "
                         f"with num_classes >= 2, received shape {scores.shape}.")
    num_classes = scores.shape[1]
    labels = validate_labels(np.asarray(ops.convert_to_numpy(labels)), num_classes)
    if labels.shape[0] != scores.shape[0]:
        raise ValueError(f"`labels` has {labels.shape[0]} samples but `logits_or_cosines` "
                         f"has {scores.shape[0]}.")
    rows = np.arange(scores.shape[0])
    target = scores[rows, labels]
    others = scores.copy()
    others[rows, labels] = -np.inf
    margins = target - np.max(others, axis=1)
    count = np.bincount(labels, minlength=num_classes)
    per_class_min, per_class_mean = per_class_summary(margins, labels, num_classes)
    return {"per_sample": margins, "per_class_min": per_class_min,
            "per_class_mean": per_class_mean, "per_class_count": count}


def _iter_layers(layer):
    for child in getattr(layer, "layers", None) or []:
        yield child
        yield from _iter_layers(child)


def find_cosine_head(model):
    """The last ``CosineDense`` layer of ``model`` (searching nested models), or None."""
    from keras_margins.layers import CosineDense
    found = None
    for layer in _iter_layers(model):
        if isinstance(layer, CosineDense):
            found = layer
    return found
