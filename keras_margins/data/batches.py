"""``ArrayBatches``: a ``keras.utils.PyDataset`` of augmented NumPy batches (no TensorFlow).

The TensorFlow-free counterpart of ``make_pipeline``: it feeds ``model.fit``
/ ``evaluate`` / ``predict`` on JAX and PyTorch (and TensorFlow) from uint8
image arrays, or from image files decoded lazily with Pillow.

Determinism: epoch ``e``'s order is drawn from ``(seed, e)`` (a permutation,
or the sampler's ``epoch_indices``), and batch ``i``'s augmentation from
``(seed, e, i)``. A batch therefore depends only on its index and the epoch,
never on which worker thread computes it or in which order batches are asked
for (``fit(shuffle=True)``, the default, asks for them in a random order).

Epochs: ``on_epoch_end`` (called by ``fit``) moves to the next epoch. With
``workers=1`` it does so only once every batch of the current epoch was
served: ``fit`` also calls it after peeking at one batch to build the model
(and after each partial pass when ``steps_per_epoch < len()``), so epoch ``e``
of ``fit`` samples epoch ``e``, as progressive and deferred samplers need.
With several workers Keras computes batches ahead in other threads, so every
call moves on; pass ``callbacks=[batches.callback()]`` to pin the epoch to
``fit``'s (also the way to resume at ``initial_epoch``).
"""

import copy
import math
import threading

import keras
import numpy as np

from keras_margins.data.numpy_augment import numpy_normalizer
from keras_margins.data.readers import read_image

__all__ = ["ArrayBatches", "limit_batches"]

# Stream tags keep the order and augmentation seeds apart (and end in a non-zero
# value: NumPy seeds [s, e] and [s, e, 0] are the same stream).
_ORDER_STREAM, _AUGMENT_STREAM = 1, 2


def _int_at_least(value, name, minimum=0, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}"
                         f"{' or None' if allow_none else ''}, received {value!r}.")
    return int(value)


class ArrayBatches(keras.utils.PyDataset):
    """Batches ``(float32 images, int32 labels)`` of images held in memory or in files.

    Args:
        images: uint8 images ``(N, H, W, C)``, or ``N`` image file paths (decoded
            per batch with ``load``).
        labels: ``N`` integer class ids.
        batch_size: images per batch; the last, partial batch is kept unless
            ``drop_remainder``.
        transform: ``transform(images, rng) -> float32 images`` on one batch
            (see ``numpy_augment``); default ``x / 255``.
        load: ``path -> uint8 (H, W, C)`` for file paths (default: ``read_image``,
            RGB at the file's size).
        shuffle: a new order every epoch (ignored with a ``sampler``); ``False``
            keeps the given order (test sets).
        sampler: a ``samplers.Sampler``: each epoch's indices come from its
            ``epoch_indices`` (and the epoch length from its ``num_samples``).
        seed: seed of the order and the augmentation (a non-negative integer);
            ``None`` draws one.
        max_batches: at most this many batches per epoch (like ``Dataset.take``).
        drop_remainder: drop the last batch when it is partial.
        workers, use_multiprocessing, max_queue_size: ``keras.utils.PyDataset``'s
            parallelism in ``fit`` (threads unless ``use_multiprocessing``).

    Example:
        >>> train = ArrayBatches(x_train, y_train, 128, shuffle=True, seed=0,
        ...                      transform=numpy_cifar_transform(mean=..., std=...))
        >>> model.fit(train, epochs=200)
    """

    def __init__(self, images, labels, batch_size=128, *, transform=None, load=None,
                 shuffle=False, sampler=None, seed=0, max_batches=None, drop_remainder=False,
                 workers=1, use_multiprocessing=False, max_queue_size=10):
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing,
                         max_queue_size=max_queue_size)
        labels = np.asarray(labels)
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
            raise ValueError(f"`labels` must be integer class ids of shape (N,), received "
                             f"dtype {labels.dtype} and shape {labels.shape}.")
        images = np.asarray(images)
        files = images.dtype.kind in "USO"
        images = images.astype(str) if files else images
        if files and images.ndim != 1:
            raise ValueError(f"`images` must be an image array (N, H, W, C) or a list of "
                             f"file paths, received shape {images.shape}.")
        if not files and images.ndim < 2:
            raise ValueError(f"`images` must be an image array (N, H, W, C), received shape "
                             f"{images.shape}.")
        if len(images) != len(labels):
            raise ValueError(f"`images` and `labels` differ in length: {len(images)} != "
                             f"{len(labels)}.")
        if len(labels) == 0:
            raise ValueError("cannot batch an empty dataset (no images).")
        self.images = images
        self.labels = labels.astype(np.int32)
        self.batch_size = _int_at_least(batch_size, "batch_size", 1)
        self.max_batches = _int_at_least(max_batches, "max_batches", 1, allow_none=True)
        self.seed = (int(np.random.SeedSequence().entropy % (2 ** 63)) if seed is None
                     else _int_at_least(seed, "seed"))
        self.transform = transform or numpy_normalizer()
        self.load = (load or read_image) if files else None
        self.shuffle = bool(shuffle)
        self.sampler = sampler
        self.drop_remainder = bool(drop_remainder)
        self.epoch = 0
        self._lock = threading.Lock()
        self._order_epoch, self._order = None, None
        self._served = set()  # batch indices of the current epoch handed out so far

    # -- the epoch's order ----------------------------------------------------
    def epoch_order(self, epoch=None):
        """The indices into ``images`` that epoch ``epoch`` (default: the current) visits."""
        epoch = self.epoch if epoch is None else int(epoch)
        with self._lock:
            if self._order_epoch != epoch:
                if self.sampler is not None:
                    order = self.sampler.epoch_indices(self.labels, epoch)
                elif self.shuffle:
                    order = np.random.default_rng([self.seed, epoch, _ORDER_STREAM]
                                                  ).permutation(len(self.labels))
                else:
                    order = np.arange(len(self.labels))
                self._order_epoch, self._order = epoch, order
            return self._order

    @property
    def num_samples(self):
        """Images per (uncapped) epoch: the sampler's ``num_samples`` or ``N``."""
        if self.sampler is not None and self.sampler.num_samples:
            return self.sampler.num_samples
        return len(self.labels)

    def __len__(self):
        full = (self.num_samples // self.batch_size if self.drop_remainder
                else math.ceil(self.num_samples / self.batch_size))
        return full if self.max_batches is None else min(full, self.max_batches)

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"batch index {index} out of range for {len(self)} batches.")
        epoch = self.epoch
        order = self.epoch_order(epoch)
        chosen = order[index * self.batch_size:(index + 1) * self.batch_size]
        if self.load is None:
            images = self.images[chosen]
        else:
            images = [self.load(path) for path in self.images[chosen]]
        rng = np.random.default_rng([self.seed, epoch, int(index), _AUGMENT_STREAM])
        batch = np.asarray(self.transform(images, rng), dtype=np.float32)
        with self._lock:
            if epoch == self.epoch:
                self._served.add(int(index))
        return batch, self.labels[chosen]

    # -- epochs ---------------------------------------------------------------
    def on_epoch_end(self):
        """Moves to the next epoch: a new order (or re-sample) and new augmentation.

        With ``workers=1``, only once every batch of this epoch was served (module docstring).
        """
        with self._lock:
            # With workers, how many batches were computed ahead depends on timing.
            parallel = self.workers > 1 or self.use_multiprocessing
            if parallel or len(self._served) >= len(self):
                self.epoch += 1
                self._served = set()

    def set_epoch(self, epoch):
        """Makes the next batches those of epoch ``epoch`` (e.g. when resuming training)."""
        epoch = _int_at_least(epoch, "epoch")
        with self._lock:
            self.epoch, self._served = epoch, set()

    def callback(self):
        """A Keras callback that pins the epoch to ``fit``'s epoch index (resuming)."""
        return keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs=None: self.set_epoch(epoch))

    def take(self, max_batches):
        """A copy capped at ``max_batches`` batches per epoch (``Dataset.take``'s role)."""
        capped = copy.copy(self)
        capped.max_batches = _int_at_least(max_batches, "max_batches", 1)
        if self.max_batches is not None:
            capped.max_batches = min(capped.max_batches, self.max_batches)
        capped._lock, capped._order_epoch, capped._served = threading.Lock(), None, set()
        return capped

    def __repr__(self):
        return (f"ArrayBatches(num_samples={self.num_samples}, batch_size={self.batch_size}, "
                f"batches={len(self)}, shuffle={self.shuffle}, sampler={self.sampler!r}, "
                f"seed={self.seed}, epoch={self.epoch})")


def limit_batches(batches, max_batches):
    """At most ``max_batches`` batches an epoch, of a ``tf.data`` pipeline or ``ArrayBatches``.

    Both have ``take(max_batches)``; this spells the cap the same way for either.
    """
    return batches.take(max_batches)
