"""Class-count priors: margins, weights, radii, scales and log-priors.

Every function takes the per-class training counts ``class_counts`` (any
order, never assumed sorted), validates them and returns a float64 numpy array
of length ``C``. These are computed once, outside the training graph; the
losses turn them into constants of the right dtype.

Reference: ``SPEC.md`` "Class-count priors"; LDAM (Cao et al., 2019, Eq. 13),
class-balanced weights (Cui et al., 2019, Eq. 3), logit adjustment (Menon et
al., 2021, Eq. 10), KPS (Li, Cheung & Hu, Eq. 26-29).
"""

import math

import numpy as np

__all__ = [
    "validate_class_counts",
    "validate_positive",
    "validate_non_negative",
    "validate_class_vector",
    "ldam_margins",
    "class_balanced_weights",
    "inverse_frequency_weights",
    "priors",
    "log_priors",
    "kps_radii",
    "kps_relative_margins",
    "kps_margins",
    "kps_scales",
]


def _describe(value):
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


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


def _as_float(value, name):
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number, received {_describe(value)}.") from None
    if not math.isfinite(number):
        raise ValueError(f"`{name}` must be finite, received {_describe(value)}.")
    return number


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


def ldam_margins(class_counts, max_margin=0.5):
    """LDAM margins ``m_j = max_margin * n_j^(-1/4) / max_k n_k^(-1/4)``.

    The rarest class gets ``max_margin``. Cao et al. 2019, Eq. 13.
    """
    counts = validate_class_counts(class_counts)
    max_margin = validate_non_negative(max_margin, "max_margin")
    quarter = counts ** -0.25
    return quarter * (max_margin / np.max(quarter))


def class_balanced_weights(class_counts, beta=0.9999):
    """Effective-number weights ``(1 - beta) / (1 - beta^n_j)``, summing to C.

    ``beta = 0`` gives all ones. Cui et al. 2019, Eq. 3; the DRW weights.
    """
    counts = validate_class_counts(class_counts)
    beta = _as_float(beta, "beta")
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"`beta` must be in [0, 1), received {beta!r}.")
    # 1 - beta^n computed as -expm1(n * log(beta)) keeps precision for beta ~ 1.
    if beta == 0.0:
        weights = np.ones_like(counts)
    else:
        weights = (1.0 - beta) / -np.expm1(counts * math.log(beta))
    return weights * (counts.size / np.sum(weights))


def inverse_frequency_weights(class_counts):
    """Weights ``1 / n_j`` rescaled to sum to C (the IB loss's re-weighting)."""
    counts = validate_class_counts(class_counts)
    weights = 1.0 / counts
    return weights * (counts.size / np.sum(weights))


def priors(class_counts):
    """Class priors ``pi_j = n_j / sum_k n_k``."""
    counts = validate_class_counts(class_counts)
    return counts / np.sum(counts)


def log_priors(class_counts, tau=1.0):
    """Logit-adjustment offsets ``log(pi_j^tau + 1e-12)``. Menon et al. 2021."""
    tau = validate_non_negative(tau, "tau")
    return np.log(priors(class_counts) ** tau + 1e-12)


def _validate_n_base(n_base):
    n_base = _as_float(n_base, "n_base")
    if n_base <= 1:
        raise ValueError(f"`n_base` must be > 1, received {n_base!r}.")
    return n_base


def kps_radii(class_counts, n_base=50):
    """KPS radii ``r_j = 1 + ln(n_j / n_min) / ln(n_base)`` (rarest class: 1)."""
    counts = validate_class_counts(class_counts)
    n_base = _validate_n_base(n_base)
    return 1.0 + np.log(counts / np.min(counts)) / math.log(n_base)


def kps_relative_margins(class_counts, n_base=50):
    """KPS relative margins ``m'_j = max(r) + 1 - r_j`` (paper Eq. 28), >= 1."""
    radii = kps_radii(class_counts, n_base)
    return np.max(radii) + 1.0 - radii


def kps_margins(class_counts, max_margin=0.5, n_base=50):
    """KPS margins ``m_j = max_margin * m'_j / max(m')`` (paper Eq. 29).

    Uses the formula, not the authors' reversed radius list: both agree only
    when the counts are sorted in descending order.
    """
    max_margin = validate_non_negative(max_margin, "max_margin")
    relative = kps_relative_margins(class_counts, n_base)
    return max_margin * relative / np.max(relative)


def kps_scales(class_counts, scale=15.0, max_scale=50.0, n_base=50):
    """Gradient-adjustment scales ``s_j = clip(scale * m'_j, scale, max_scale)``."""
    scale = validate_positive(scale, "scale")
    max_scale = validate_positive(max_scale, "max_scale")
    if max_scale < scale:
        raise ValueError(f"`max_scale` must be >= `scale` ({scale:g}), received "
                         f"{max_scale:g}.")
    relative = kps_relative_margins(class_counts, n_base)
    return np.clip(scale * relative, scale, max_scale)
