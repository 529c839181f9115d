"""Re-sampling (RS, CB-RS, square-root, progressive, deferred) for tf.data and NumPy.

A sampler draws each epoch's indices from per-class probabilities
``p_c ∝ n_c ** q`` (Kang et al., 2020, "Decoupling representation and
classifier", Eq. 1): ``q = 1`` instance-balanced (every image once per
epoch, shuffled), ``q = 0`` class-balanced, ``q = 1/2`` square-root. A class is
drawn first, then an image of that class uniformly (with replacement, like
the class-aware samplers of the seeds' code). Progressive-balanced sampling
interpolates linearly from instance- to class-balanced over ``total_epochs``;
deferred re-sampling (DRS, Cao et al., 2019) is instance-balanced until
``defer_epoch`` and re-samples afterwards.

Samplers are ``Dataset.apply`` transformations: apply them to the light
``(path or array, label)`` dataset *before* decoding and augmentation::

    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    ds = ds.apply(class_balanced(seed=0)).map(load).batch(128)

Each pass through the result is one epoch with fresh, seeded indices; the
epoch index advances by itself at every pass and ``set_epoch`` (or the
callback from ``sampler.callback()``) pins it, e.g. when resuming training.

Without TensorFlow, ``epoch_indices(labels, epoch)`` draws the same
distribution with NumPy (seeded by ``(seed, epoch)``); ``ArrayBatches`` calls
it at every epoch. The two paths draw different (equally distributed) indices.
"""

import numpy as np

from keras_margins.data._imports import import_tensorflow

__all__ = ["Sampler", "sampling_probabilities", "instance_balanced", "class_balanced",
           "square_root", "progressive", "deferred", "get_sampler"]


def sampling_probabilities(class_counts, q):
    """``p_c = n_c ** q / sum_k n_k ** q`` (classes with no image get 0)."""
    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0 or np.any(counts < 0) or counts.sum() <= 0:
        raise ValueError(f"`class_counts` must be non-negative counts with a positive sum, "
                         f"received {class_counts!r}.")
    weights = np.where(counts > 0, np.power(np.maximum(counts, 1e-300), float(q)), 0.0)
    return weights / weights.sum()


class Sampler:
    """Per-epoch class re-sampling with ``p_c(e) = (1 - a(e)) p_c^{q_start} + a(e) p_c^{q_end}``.

    Args:
        q_end: exponent after the schedule (0 class-balanced, 0.5 square-root,
            1 instance-balanced).
        q_start: exponent before the schedule (1: instance-balanced).
        schedule: ``"constant"`` (``a = 1``), ``"linear"`` (``a = e / total_epochs``,
            capped at 1) or ``"step"`` (``a = 0`` before ``defer_epoch``, 1 after).
        total_epochs: length of the linear schedule.
        defer_epoch: first re-sampled epoch of the step schedule.
        num_samples: indices per epoch (default: the source size).
        seed: the sampling seed; epoch ``e`` uses the stateless seed ``(seed, e)``.
    """

    def __init__(self, q_end=0.0, q_start=1.0, schedule="constant", total_epochs=None,
                 defer_epoch=None, num_samples=None, seed=0, name="sampler"):
        if schedule not in ("constant", "linear", "step"):
            raise ValueError(f"`schedule` must be 'constant', 'linear' or 'step', received "
                             f"{schedule!r}.")
        if schedule == "linear" and (total_epochs is None or int(total_epochs) < 1):
            raise ValueError(f"`total_epochs` must be a positive integer for the progressive "
                             f"schedule, received {total_epochs!r}.")
        if schedule == "step" and (defer_epoch is None or int(defer_epoch) < 0):
            raise ValueError(f"`defer_epoch` must be a non-negative integer for deferred "
                             f"re-sampling, received {defer_epoch!r}.")
        if num_samples is not None and int(num_samples) < 1:
            raise ValueError(f"`num_samples` must be positive, received {num_samples!r}.")
        self.q_end, self.q_start = float(q_end), float(q_start)
        self.schedule = schedule
        self.total_epochs = None if total_epochs is None else int(total_epochs)
        self.defer_epoch = None if defer_epoch is None else int(defer_epoch)
        self.num_samples = None if num_samples is None else int(num_samples)
        self.seed = int(seed)
        self.name = name
        self._epoch = None

    # -- epoch bookkeeping -------------------------------------------------
    def _epoch_variable(self):
        tf = import_tensorflow("Sampler.set_epoch (the tf.data epoch counter)")
        if self._epoch is None:
            with tf.init_scope():
                self._epoch = tf.Variable(0, dtype=tf.int64, trainable=False,
                                          name=f"{self.name}_epoch")
        return self._epoch

    @property
    def epoch(self):
        """The epoch the next pass through the dataset will sample."""
        return 0 if self._epoch is None else int(self._epoch.numpy())

    def set_epoch(self, epoch):
        """Makes the next pass sample epoch ``epoch`` (0-based)."""
        self._epoch_variable().assign(int(epoch))

    def callback(self):
        """A Keras callback that pins the sampler to ``fit``'s epoch index (tf.data path;
        ``ArrayBatches`` has its own ``callback()``)."""
        import keras
        return keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs=None: self.set_epoch(epoch))

    def mixing(self, epoch):
        """``a(e)``: 0 is ``q_start`` sampling, 1 is ``q_end`` sampling."""
        if self.schedule == "constant":
            return 1.0
        if self.schedule == "linear":
            return min(float(epoch) / self.total_epochs, 1.0)
        return 1.0 if epoch >= self.defer_epoch else 0.0

    def class_probabilities(self, class_counts, epoch=0):
        """The per-class sampling probabilities of epoch ``epoch`` (numpy)."""
        a = self.mixing(epoch)
        return ((1.0 - a) * sampling_probabilities(class_counts, self.q_start)
                + a * sampling_probabilities(class_counts, self.q_end))

    def _layout(self, labels):
        """Labels grouped by class: ``(counts, order, starts, num, plain_shuffle)``.

        Class ``c``'s indices are ``order[starts[c]:starts[c] + counts[c]]``.
        """
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        if labels.size == 0 or labels.min() < 0:
            raise ValueError("`labels` must be a non-empty array of non-negative class ids.")
        counts = np.bincount(labels)
        num = self.num_samples or labels.size
        plain_shuffle = self.q_start == 1.0 and self.q_end == 1.0 and num == labels.size
        return (counts, np.argsort(labels, kind="stable"),
                np.concatenate([[0], np.cumsum(counts)[:-1]]), num, plain_shuffle)

    # -- NumPy -----------------------------------------------------------------
    def epoch_indices(self, labels, epoch=0, rng=None):
        """Epoch ``epoch``'s int64 indices into ``labels``, drawn with NumPy.

        Same distribution as ``index_dataset`` (a class drawn with
        ``class_probabilities(counts, epoch)``, then one of its images
        uniformly; instance-balanced: a permutation). ``rng`` defaults to
        ``np.random.default_rng([seed, epoch, 3])``, so an epoch's indices
        depend on nothing else.
        """
        counts, order, starts, num, plain_shuffle = self._layout(labels)
        if rng is None:
            rng = np.random.default_rng([self.seed, int(epoch), 3])
        if plain_shuffle:
            return rng.permutation(len(order)).astype(np.int64)
        cls = rng.choice(len(counts), size=num, p=self.class_probabilities(counts, epoch))
        n_c = counts[cls]
        offset = np.minimum((rng.random(num) * n_c).astype(np.int64), n_c - 1)
        return order[starts[cls] + offset].astype(np.int64)

    # -- tf.data -------------------------------------------------------------
    def index_dataset(self, labels):
        """A dataset of int64 indices into ``labels``, one epoch per pass."""
        tf = import_tensorflow("Sampler.index_dataset (a tf.data dataset)")

        counts, order, starts, num, plain_shuffle = self._layout(labels)
        size = len(order)
        order = tf.constant(order, tf.int64)
        starts = tf.constant(starts, tf.int64)
        counts_t = tf.constant(counts, tf.int64)
        p_start = tf.constant(sampling_probabilities(counts, self.q_start), tf.float64)
        p_end = tf.constant(sampling_probabilities(counts, self.q_end), tf.float64)
        epoch_var = self._epoch_variable()
        schedule, seed = self.schedule, self.seed
        total, defer = self.total_epochs, self.defer_epoch

        def one_epoch(_):
            epoch = epoch_var.assign_add(1) - 1
            seeds = tf.random.experimental.stateless_split(
                tf.stack([tf.constant(seed, tf.int64), epoch]), num=2)
            if plain_shuffle:  # instance-balanced: each image once, in a new order
                return tf.data.Dataset.from_tensor_slices(
                    tf.random.experimental.stateless_shuffle(tf.range(size, dtype=tf.int64),
                                                             seeds[0]))
            if schedule == "constant":
                a = tf.constant(1.0, tf.float64)
            elif schedule == "linear":
                a = tf.minimum(tf.cast(epoch, tf.float64) / total, 1.0)
            else:
                a = tf.cast(epoch >= defer, tf.float64)
            cdf = tf.cumsum((1.0 - a) * p_start + a * p_end)
            u = tf.random.stateless_uniform([num], seeds[0], dtype=tf.float64) * cdf[-1]
            cls = tf.minimum(tf.searchsorted(cdf, u, side="right"), len(counts) - 1)
            cls = tf.cast(cls, tf.int64)
            v = tf.random.stateless_uniform([num], seeds[1], dtype=tf.float64)
            n_c = tf.gather(counts_t, cls)
            offset = tf.minimum(tf.cast(v * tf.cast(n_c, tf.float64), tf.int64), n_c - 1)
            return tf.data.Dataset.from_tensor_slices(
                tf.gather(order, tf.gather(starts, cls) + offset))

        ds = tf.data.Dataset.range(1).flat_map(one_epoch)
        return ds.apply(tf.data.experimental.assert_cardinality(num))

    def __call__(self, dataset, label_fn=None):
        """``Dataset.apply`` transformation of a finite dataset of light elements.

        The elements are gathered into memory once (apply this before decoding
        images), their labels read with ``label_fn`` (default: the second item of
        an ``(x, y, ...)`` tuple, or ``element["label"]``), and each pass yields
        ``num_samples`` re-sampled elements with a known ``cardinality``.
        """
        tf = import_tensorflow("Sampler (a tf.data transformation)")

        size = int(dataset.cardinality())
        if size < 0:
            size = sum(1 for _ in dataset)
        if size == 0:
            raise ValueError("cannot re-sample an empty dataset.")
        elements = dataset.batch(size).get_single_element()
        if label_fn is not None:
            labels = label_fn(elements)
        elif isinstance(elements, dict):
            labels = elements["label"]
        else:
            labels = elements[1]
        indices = self.index_dataset(np.asarray(labels))
        gathered = indices.map(lambda i: tf.nest.map_structure(lambda t: tf.gather(t, i),
                                                                elements),
                               num_parallel_calls=tf.data.AUTOTUNE)
        return gathered

    def __repr__(self):
        return (f"Sampler(q_end={self.q_end}, q_start={self.q_start}, schedule={self.schedule!r}, "
                f"total_epochs={self.total_epochs}, defer_epoch={self.defer_epoch}, "
                f"num_samples={self.num_samples}, seed={self.seed})")


def instance_balanced(seed=0, num_samples=None):
    """Every image once per epoch, reshuffled each epoch (the default)."""
    return Sampler(q_end=1.0, q_start=1.0, num_samples=num_samples, seed=seed,
                   name="instance_balanced")


def class_balanced(seed=0, num_samples=None):
    """Class-balanced re-sampling (CB-RS): each class equally likely."""
    return Sampler(q_end=0.0, num_samples=num_samples, seed=seed, name="class_balanced")


def square_root(seed=0, num_samples=None):
    """Square-root sampling: ``p_c ∝ sqrt(n_c)``."""
    return Sampler(q_end=0.5, num_samples=num_samples, seed=seed, name="square_root")


def progressive(total_epochs, seed=0, num_samples=None):
    """Progressive-balanced: ``(1 - e/T) p^IB + (e/T) p^CB``."""
    return Sampler(q_end=0.0, schedule="linear", total_epochs=total_epochs,
                   num_samples=num_samples, seed=seed, name="progressive")


def deferred(defer_epoch, q=0.0, seed=0, num_samples=None):
    """Deferred re-sampling (DRS): instance-balanced, then ``p ∝ n^q`` from ``defer_epoch``."""
    return Sampler(q_end=q, schedule="step", defer_epoch=defer_epoch,
                   num_samples=num_samples, seed=seed, name="deferred")


_NAMED = {"instance_balanced": instance_balanced, "class_balanced": class_balanced,
          "square_root": square_root}


def get_sampler(sampler, seed=0):
    """``None``/a name/a ``Sampler`` -> a ``Sampler`` or ``None`` (plain shuffling)."""
    if sampler is None or isinstance(sampler, Sampler):
        return sampler
    if sampler in _NAMED:
        return _NAMED[sampler](seed=seed)
    raise ValueError(f"`sampler` must be None, a Sampler or one of {sorted(_NAMED)} "
                     f"(use progressive(total_epochs) / deferred(defer_epoch) for the "
                     f"scheduled ones), received {sampler!r}.")
