"""Long-tailed class-count profiles (how many training images each class keeps).

``long_tail_counts`` reproduces the LDAM-DRW generator (Cao et al., 2019,
``IMBALANCECIFAR10.get_img_num_per_cls``) exactly, including its ``int``
truncation, and adds a Pareto profile shaped like ImageNet-LT / Places-LT
(a steep head and a long, flat tail).
"""

import math
import numbers

__all__ = ["PROFILES", "long_tail_counts", "imbalance_ratio_of"]

PROFILES = ("exp", "step", "pareto")


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"`{name}` must be an integer >= {minimum}, received {value!r}.")
    value = int(value)
    if value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, received {value}.")
    return value


def long_tail_counts(num_classes, max_count, imbalance_ratio, profile="exp", pareto_alpha=6.0):
    """Per-class training counts of a long-tailed split, head class first.

    Profiles (``C = num_classes``, ``rho = imbalance_ratio``, class ``i`` in
    ``0..C-1``):

    - ``"exp"``: ``n_i = int(max_count * (1/rho) ** (i / (C - 1)))``;
    - ``"step"``: the first ``C // 2`` classes keep ``max_count``, the others
      ``int(max_count * (1/rho))``;
    - ``"pareto"``: ``n_i = int(max_count * (1 + k i) ** -alpha)`` with ``k``
      chosen so that the last class keeps ``max_count / rho`` (a Lomax/Pareto
      II decay, as ImageNet-LT was sampled with ``alpha = 6``).

    The exponential and step rules are the LDAM-DRW code's, float for float, so
    ``long_tail_counts(10, 5000, 100)`` is ``[5000, 2997, ..., 83, 50]``
    (12,406 images) and ``long_tail_counts(100, 500, 100)`` totals 10,847.

    Args:
        num_classes: number of classes ``C`` (at least 2).
        max_count: images kept by the head class (LDAM-DRW: ``50000 / C``).
        imbalance_ratio: ``rho = n_max / n_min``, at least 1 (1 is balanced).
        profile: ``"exp"``, ``"step"`` or ``"pareto"``.
        pareto_alpha: the Pareto shape ``alpha`` (``"pareto"`` only).

    Returns:
        A list of ``C`` Python ints.

    Example:
    >>> long_tail_counts(10, 5000, 10, "step")
    [5000, 5000, 5000, 5000, 5000, 500, 500, 500, 500, 500]
    """
    num_classes = _check_int(num_classes, "num_classes", 2)
    max_count = _check_int(max_count, "max_count", 1)
    try:
        ratio = float(imbalance_ratio)
    except (TypeError, ValueError):
        raise ValueError(f"`imbalance_ratio` must be a number >= 1, received "
                         f"{imbalance_ratio!r}.") from None
    if not math.isfinite(ratio) or ratio < 1:
        raise ValueError(f"`imbalance_ratio` must be a finite number >= 1 (n_max / n_min), "
                         f"received {imbalance_ratio!r}.")
    if profile not in PROFILES:
        raise ValueError(f"`profile` must be one of {PROFILES}, received {profile!r}.")
    imb_factor = 1.0 / ratio
    if int(max_count * imb_factor) < 1:
        raise ValueError(f"max_count={max_count} with imbalance_ratio={imbalance_ratio} "
                         f"leaves the tail classes with no image (max_count / ratio < 1).")
    if profile == "exp":
        # Same expression, same float rounding, as LDAM-DRW's generator.
        return [int(max_count * (imb_factor ** (i / (num_classes - 1.0))))
                for i in range(num_classes)]
    if profile == "step":
        head = num_classes // 2
        return [int(max_count)] * head + [int(max_count * imb_factor)] * (num_classes - head)
    alpha = float(pareto_alpha)
    if not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"`pareto_alpha` must be positive, received {pareto_alpha!r}.")
    slope = (ratio ** (1.0 / alpha) - 1.0) / (num_classes - 1)
    counts = [int(max_count * (1.0 + slope * i) ** -alpha + 1e-9) for i in range(num_classes)]
    counts[-1] = max(counts[-1], int(max_count * imb_factor + 1e-9))
    return counts


def imbalance_ratio_of(class_counts):
    """``max(class_counts) / min(class_counts)`` as a float."""
    counts = [int(c) for c in class_counts]
    if not counts or min(counts) <= 0:
        raise ValueError(f"`class_counts` must be positive counts, received {class_counts!r}.")
    return max(counts) / min(counts)
