"""Argument validation shared by the whole library.

Every check runs on python / numpy values at construction time (never inside
the training graph) and raises ``ValueError`` saying what was expected and what
was received, naming the argument. Each returns the validated value in the form
the caller keeps (``float``, ``int`` or a float64 numpy array).
"""

import math

import numpy as np

__all__ = [
    "validate_class_counts",
    "validate_class_vector",
    "validate_positive",
    "validate_non_negative",
    "validate_n_base",
    "validate_num_classes",
    "validate_thresholds",
    "validate_num_bins",
    "validate_logit_scale",
    "validate_labels",
    "validate_start_epoch",
    "validate_decays",
]


def _describe(value):
    """``repr(value)`` cut to 200 characters, for error messages."""
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _as_float(value, name):
    """Returns ``float(value)``; ``ValueError`` unless it is a finite number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number, received {_describe(value)}.") from None
    if not math.isfinite(number):
        raise ValueError(f"`{name}` must be finite, received {_describe(value)}.")
    return number


def _is_integer(value):
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def validate_class_counts(class_counts, name="class_counts", num_classes=None):
    """Checks per-class training counts and returns them as float64.

    Counts must be a non-empty 1-D sequence of finite, positive, integer-valued
    numbers (at least two classes). ``num_classes``, when given, is the
    expected length. Raises ``ValueError`` naming ``name`` and the value.
    """
    if class_counts is None:
        raise ValueError(f"`{name}` is required: expected a 1-D sequence of positive "
                         f"per-class counts, received None.")
    try:
        counts = np.asarray(class_counts, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"`{name}` must be a 1-D sequence of positive numbers, "
                         f"received {_describe(class_counts)} ({error}).") from None
    if counts.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D (one count per class), received shape "
                         f"{counts.shape}: {_describe(class_counts)}.")
    if counts.size < 2:
        raise ValueError(f"`{name}` must hold at least 2 classes, received "
                         f"{counts.size}: {_describe(class_counts)}.")
    if not np.all(np.isfinite(counts)):
        raise ValueError(f"`{name}` must be finite, received {_describe(class_counts)}.")
    if np.any(counts <= 0):
        bad = int(np.flatnonzero(counts <= 0)[0])
        raise ValueError(f"`{name}` must be positive (every class needs at least one "
                         f"training example), received {counts[bad]:g} at index {bad}: "
                         f"{_describe(class_counts)}.")
    if np.any(counts != np.round(counts)):
        bad = int(np.flatnonzero(counts != np.round(counts))[0])
        raise ValueError(f"`{name}` must be integer counts, received {counts[bad]!r} "
                         f"at index {bad}: {_describe(class_counts)}.")
    if num_classes is not None and counts.size != num_classes:
        raise ValueError(f"`{name}` has {counts.size} entries but the model has "
                         f"{num_classes} classes: {_describe(class_counts)}.")
    return counts


def validate_class_vector(values, name, num_classes=None, allow_zero=True):
    """Checks a per-class vector of non-negative finite floats (e.g. weights)."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"`{name}` must be a 1-D sequence of numbers, received "
                         f"{_describe(values)} ({error}).") from None
    if array.ndim != 1 or array.size < 2:
        raise ValueError(f"`{name}` must be a 1-D sequence with one entry per class "
                         f"(at least 2), received shape {array.shape}: {_describe(values)}.")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"`{name}` must be finite, received {_describe(values)}.")
    if np.any(array < 0) or (not allow_zero and np.any(array == 0)):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"`{name}` must be {kind}, received {_describe(values)}.")
    if num_classes is not None and array.size != num_classes:
        raise ValueError(f"`{name}` has {array.size} entries, expected {num_classes} "
                         f"(one per class): {_describe(values)}.")
    return array


def validate_positive(value, name):
    """Returns ``float(value)``; ``ValueError`` unless finite and > 0."""
    number = _as_float(value, name)
    if number <= 0:
        raise ValueError(f"`{name}` must be > 0, received {_describe(value)}.")
    return number


def validate_non_negative(value, name, upper=None):
    """Returns ``float(value)``; ``ValueError`` unless finite, >= 0 (and <= upper)."""
    number = _as_float(value, name)
    if number < 0 or (upper is not None and number > upper):
        bound = f"in [0, {upper:g}]" if upper is not None else ">= 0"
        raise ValueError(f"`{name}` must be {bound}, received {_describe(value)}.")
    return number


def validate_n_base(n_base):
    """KPS's ``n_base`` as a float; ``ValueError`` unless finite and > 1."""
    n_base = _as_float(n_base, "n_base")
    if n_base <= 1:
        raise ValueError(f"`n_base` must be > 1, received {n_base!r}.")
    return n_base


def validate_num_classes(num_classes, name="num_classes"):
    """Returns ``int(num_classes)``; ``ValueError`` unless an integer >= 2."""
    if not _is_integer(num_classes) or num_classes < 2:
        raise ValueError(f"`{name}` must be an integer >= 2, received {num_classes!r}.")
    return int(num_classes)


def validate_thresholds(many_threshold, few_threshold):
    """Shot-group thresholds as floats ``(many, few)``; requires ``0 <= few <= many``."""
    many = validate_non_negative(many_threshold, "many_threshold")
    few = validate_non_negative(few_threshold, "few_threshold")
    if few > many:
        raise ValueError(f"`few_threshold` ({few:g}) must be <= `many_threshold` "
                         f"({many:g}).")
    return many, few


def validate_num_bins(num_bins):
    """Returns ``int(num_bins)``; ``ValueError`` unless a positive integer."""
    if not _is_integer(num_bins) or num_bins < 1:
        raise ValueError(f"`num_bins` must be a positive integer, received {num_bins!r}.")
    return int(num_bins)


def validate_logit_scale(logit_scale):
    """Returns ``float(logit_scale)``; ``ValueError`` unless finite and > 0."""
    try:
        number = float(logit_scale)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"`logit_scale` must be a finite number > 0, received "
                         f"{logit_scale!r}.")
    return number


def validate_labels(labels, num_classes, name="labels"):
    """Sparse int64 class indices (N,) from sparse (N,) / (N, 1) or one-hot (N, C) labels.

    ``labels`` is a numpy array (convert tensors first); ``ValueError`` for other
    shapes, non-integer values or labels outside ``[0, num_classes)``.
    """
    array = np.asarray(labels)
    if array.ndim == 2 and array.shape[1] == num_classes and num_classes > 1:
        array = np.argmax(array, axis=1)
    elif array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    elif array.ndim != 1:
        raise ValueError(f"`{name}` must be sparse (N,) or (N, 1), or one-hot (N, "
                         f"{num_classes}); received shape {array.shape}.")
    if array.size and (np.any(array != np.round(array))):
        raise ValueError(f"`{name}` must be integer class indices.")
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        bad = int(array.min()) if array.min() < 0 else int(array.max())
        raise ValueError(f"`{name}` holds label {bad}, outside [0, {num_classes}) for "
                         f"scores with {num_classes} classes.")
    return array


def validate_start_epoch(start_epoch):
    """A 0-based epoch index; ``ValueError`` unless a non-negative python int."""
    if isinstance(start_epoch, bool) or not isinstance(start_epoch, int) or start_epoch < 0:
        raise ValueError(f"`start_epoch` must be a non-negative integer (0-based epoch), "
                         f"received {start_epoch!r}.")
    return start_epoch


def validate_decays(decay_epochs, decay_factors, warmup_epochs):
    """Step-decay epochs (strictly increasing) and factors (positive), as lists."""
    decay_epochs = [int(e) for e in decay_epochs]
    decay_factors = [float(f) for f in decay_factors]
    if len(decay_epochs) != len(decay_factors):
        raise ValueError(f"`decay_epochs` and `decay_factors` must have the same length, "
                         f"received {decay_epochs} and {decay_factors}.")
    if any(b <= a for a, b in zip(decay_epochs, decay_epochs[1:])):
        raise ValueError(f"`decay_epochs` must be strictly increasing, received "
                         f"{decay_epochs}.")
    if any(f <= 0 or not np.isfinite(f) for f in decay_factors):
        raise ValueError(f"`decay_factors` must be positive, received {decay_factors}.")
    if warmup_epochs < 0:
        raise ValueError(f"`warmup_epochs` must be >= 0, received {warmup_epochs}.")
    return decay_epochs, decay_factors


def validate_finite(value, name):
    """Returns ``float(value)``; ``ValueError`` unless a finite number (any sign)."""
    return _as_float(value, name)


def validate_multiplicative_margin(value, name):
    """An angular margin that multiplies the angle (SphereFace's ``m1``), >= 1."""
    number = validate_positive(value, name)
    if number < 1.0:
        raise ValueError(f"`{name}` (multiplicative angular margin) must be >= 1, "
                         f"received {_describe(value)}.")
    return number


def validate_additive_angle(value, name):
    """An angular margin added to the angle (ArcFace's ``m2``), in [0, pi)."""
    number = validate_non_negative(value, name)
    if number >= math.pi:
        raise ValueError(f"`{name}` (additive angular margin) must be in [0, pi), "
                         f"received {_describe(value)}.")
    return number


__all__ += ["validate_finite", "validate_multiplicative_margin", "validate_additive_angle"]
