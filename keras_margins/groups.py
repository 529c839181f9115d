"""Many-, medium- and few-shot class groups from the training counts.

many: ``n_j > many_threshold``; medium: ``few_threshold <= n_j <= many_threshold``;
few: ``n_j < few_threshold`` (the 100 / 20 split of OLTR, Liu et al. 2019, and
the long-tailed CIFAR papers).
"""

import numpy as np

from keras_margins.validation import validate_class_counts, validate_thresholds

__all__ = ["SHOT_GROUPS", "shot_groups", "shot_group_rules", "empty_group_reason"]

SHOT_GROUPS = ("many", "medium", "few")


def shot_groups(class_counts, many_threshold=100, few_threshold=20):
    """Class indices of each shot group from the training counts.

    many: ``n > many_threshold``; medium: ``few_threshold <= n <= many_threshold``;
    few: ``n < few_threshold``.

    Returns:
        dict ``{"many": [...], "medium": [...], "few": [...]}`` of sorted class
        indices (lists of ints; a group may be empty).
    """
    counts = validate_class_counts(class_counts)
    many, few = validate_thresholds(many_threshold, few_threshold)
    return {
        "many": [int(i) for i in np.flatnonzero(counts > many)],
        "medium": [int(i) for i in np.flatnonzero((counts >= few) & (counts <= many))],
        "few": [int(i) for i in np.flatnonzero(counts < few)],
    }


def _rule_texts(many_threshold, few_threshold):
    many, few = validate_thresholds(many_threshold, few_threshold)
    return {"many": f"more than {many:g}", "medium": f"{few:g} to {many:g}",
            "few": f"fewer than {few:g}"}


def shot_group_rules(many_threshold=100, few_threshold=20):
    """What each group means, e.g. ``{"few": "fewer than 20 training images", ...}``.

    The medium bounds are inclusive.
    """
    return {group: f"{text} training images"
            for group, text in _rule_texts(many_threshold, few_threshold).items()}


def empty_group_reason(group, many_threshold=100, few_threshold=20):
    """Why ``group`` has no class, e.g. ``"no class has fewer than 20 training images"``."""
    texts = _rule_texts(many_threshold, few_threshold)
    if group not in texts:
        raise ValueError(f"`group` must be one of {SHOT_GROUPS}, received {group!r}.")
    return f"no class has {texts[group]} training images"
