"""Deterministic subsampling of labelled data to given per-class counts.

The default rule is LDAM-DRW's (``IMBALANCECIFAR10.gen_imbalanced_data``):
``np.random.seed(seed)`` once, then for each class ``c`` in increasing order
``idx = np.where(targets == c)[0]; np.random.shuffle(idx); keep idx[:n_c]``.
It is reproduced with a private ``np.random.RandomState(seed)`` (the same
stream as the legacy global generator, which is left untouched), so the same
seed picks the same images as the authors' code. The shuffle of a class only
depends on how many images it has, so class-sorted data (e.g. an image folder
whose file numbers follow the original order) selects the same images as the
original interleaved arrays.
"""

import numpy as np

from keras_margins.data._imports import import_tensorflow

__all__ = ["SELECTION_METHODS", "subsample_indices", "subsample_arrays",
           "subsample_dataset", "class_counts_of"]

SELECTION_METHODS = ("ldam_drw", "first")


def _labels_array(labels, name="labels"):
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(f"`{name}` must be a 1-D array of integer class ids, received "
                         f"shape {labels.shape}.")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.all(labels == np.round(labels)):
            raise ValueError(f"`{name}` must hold integer class ids, received dtype "
                             f"{labels.dtype}.")
        labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise ValueError(f"`{name}` must be non-negative class ids, received {labels.min()}.")
    return labels.astype(np.int64, copy=False)


def class_counts_of(labels, num_classes=None):
    """Per-class counts of integer ``labels`` (length ``num_classes``)."""
    labels = _labels_array(labels)
    return [int(n) for n in np.bincount(labels, minlength=num_classes or 0)]


def subsample_indices(labels, class_counts, seed=0, method="ldam_drw"):
    """Indices that keep ``class_counts[c]`` examples of every class ``c``.

    Args:
        labels: 1-D integer class ids of the full (balanced) source.
        class_counts: how many to keep per class, class ``c`` at position ``c``.
        seed: the selection seed (LDAM-DRW's ``rand_number``, 0 by default).
        method: ``"ldam_drw"`` (the authors' rule, see the module docstring) or
            ``"first"`` (the first ``n_c`` of each class in source order).

    Returns:
        int64 indices into ``labels``, grouped class by class in class order
        (within a class in the order the rule picks them), as LDAM-DRW builds
        its ``new_data``.
    """
    labels = _labels_array(labels)
    counts = [int(n) for n in np.asarray(class_counts).reshape(-1)]
    if method not in SELECTION_METHODS:
        raise ValueError(f"`method` must be one of {SELECTION_METHODS}, received {method!r}.")
    if any(n < 0 for n in counts):
        raise ValueError(f"`class_counts` must be non-negative, received {counts}.")
    available = np.bincount(labels, minlength=len(counts))
    if available.size > len(counts):
        raise ValueError(f"`labels` hold class id {available.size - 1} but `class_counts` "
                         f"only lists {len(counts)} classes.")
    short = [c for c, n in enumerate(counts) if n > available[c]]
    if short:
        c = short[0]
        raise ValueError(f"class {c} asks for {counts[c]} examples but the source only has "
                         f"{available[c]} (classes short of examples: {short[:10]}).")
    rng = np.random.RandomState(seed) if method == "ldam_drw" else None
    selected = []
    for c, n in enumerate(counts):
        idx = np.where(labels == c)[0]
        if rng is not None:
            rng.shuffle(idx)
        selected.append(idx[:n])
    return np.concatenate(selected).astype(np.int64) if selected else np.zeros(0, np.int64)


def subsample_arrays(x, y, class_counts, seed=0, method="ldam_drw"):
    """``(x[idx], y[idx])`` with ``idx = subsample_indices(y, class_counts, ...)``."""
    y_array = _labels_array(y, "y")
    if len(x) != len(y_array):
        raise ValueError(f"`x` and `y` must have the same length, received {len(x)} and "
                         f"{len(y_array)}.")
    idx = subsample_indices(y_array, class_counts, seed=seed, method=method)
    return x[idx], np.asarray(y)[idx]


def subsample_dataset(dataset, class_counts, seed=0, method="ldam_drw", label_fn=None):
    """Keeps ``class_counts[c]`` elements of each class of a finite ``tf.data.Dataset``.

    The labels are read once (one pass over ``label_fn(element)``, by default
    the second item of ``(x, y)`` tuples or ``element["label"]`` for dicts),
    the LDAM-DRW rule picks the indices, and a filter keeps them in the
    source's order. The result reports its exact ``cardinality``.
    """
    tf = import_tensorflow("subsample_dataset (a tf.data transformation)")

    if label_fn is None:
        def label_fn(*element):
            if len(element) == 1 and isinstance(element[0], dict):
                return element[0]["label"]
            return element[1]
    label_ds = dataset.map(label_fn, num_parallel_calls=tf.data.AUTOTUNE)
    labels = np.concatenate([np.reshape(b, -1) for b in label_ds.batch(8192).as_numpy_iterator()]
                            or [np.zeros(0, np.int64)])
    idx = subsample_indices(labels, class_counts, seed=seed, method=method)
    keep = np.zeros(len(labels), dtype=bool)
    keep[idx] = True
    keep = tf.constant(keep)

    def _keep(i, *element):
        return keep[i]

    def _drop_index(i, *element):
        return element if len(element) > 1 else element[0]

    subset = dataset.enumerate().filter(_keep).map(_drop_index)
    return subset.apply(tf.data.experimental.assert_cardinality(len(idx)))
