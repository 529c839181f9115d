"""Long-tailed data for the applications: a thin layer over ``keras_margins.data``.

``load_dataset(name, ..., pipeline=...)`` returns the training and test batch
sources (``LongTailedData``) that feed ``model.fit`` on every Keras backend:
``tf.data`` pipelines, or ``keras.utils.PyDataset`` batch sources built with
NumPy and Pillow only (``pipeline="numpy"``, for machines without TensorFlow;
``"auto"`` picks tf.data when TensorFlow imports). Both select the same images
and apply the same augmentation recipe:

* ``fashion-mnist-lt``: ``keras_margins.data.fashion_mnist_lt`` on the IDX
  files in ``<data_dir>/fashion-mnist``, 28x28x1,
  ``img_max = 6000``, standardised with the dataset's mean and std.
* ``cifar10-lt``: ``keras_margins.data.cifar10_lt(folder=<data_dir>/cifar10)``,
  the CIFAR-10 JPEG copy (``cifar10-jpeg.tar.gz``, extracted once into
  ``~/.keras/datasets``, or its extracted ``train/`` and ``test/`` folders),
  32x32x3, ``img_max = 5000``; training images go through the library's
  ``cifar_transform`` (pad 4, random crop, horizontal flip, normalisation).
* ``digits-lt``: ``keras_margins.data.arrays_lt`` on scikit-learn's bundled
  8x8 digits (offline smoke runs): half of each class for training (before
  subsampling), the rest (at most 80 per class) for testing.

Training sets are the LDAM-DRW subsets (``keras_margins.data.long_tail_counts``
and ``subsample_indices``; ``seed`` 0 reproduces the authors' subset); test
sets stay balanced. ``shuffle_seed`` (the training seed) only changes the
order and augmentation, never the subset.
"""

import dataclasses
import pathlib

import numpy as np

from keras_margins import data as km_data

from applications.cli import default_data_dir

__all__ = ["LongTailedData", "load_dataset", "device_training_array", "DATASETS", "PIPELINES",
           "default_data_dir"]

DATASETS = ("fashion-mnist-lt", "cifar10-lt", "digits-lt")
PIPELINES = ("auto", "numpy", "tfdata", "device")
IMG_MAX = {"fashion-mnist-lt": 6000, "cifar10-lt": 5000, "digits-lt": 87}
# Per-channel statistics of the Fashion-MNIST training set.
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)


@dataclasses.dataclass
class LongTailedData:
    """The pipelines of one long-tailed dataset and what the builder reported."""
    name: str
    train: object                     # tf.data.Dataset or PyDataset of (images, labels) batches
    test: object                      # idem, balanced, not shuffled
    info: km_data.LongTailInfo
    details: dict = dataclasses.field(default_factory=dict)
    pipeline: str = "tfdata"          # "tfdata" or "numpy"

    batch_size: int = 128

    def train_batches(self, max_steps=None):
        """The training source, capped at ``max_steps`` batches an epoch (device
        pipeline: the ``(x, y)`` arrays, cut to ``max_steps`` batches)."""
        if isinstance(self.train, tuple):
            if not max_steps:
                return self.train
            # a fixed random subset (the arrays are sorted by class)
            keep = np.random.default_rng(0).permutation(len(self.train[1]))
            keep = np.sort(keep[:max_steps * self.batch_size])
            return tuple(array[keep] for array in self.train)
        return self.train.take(max_steps) if max_steps else self.train

    def steps(self, source):
        """Batches an epoch of a tf.data pipeline, a PyDataset or ``(x, y)`` arrays."""
        if isinstance(source, tuple):
            return -(-len(source[1]) // self.batch_size)
        return int(source.cardinality()) if hasattr(source, "cardinality") else len(source)

    def test_batches(self):
        """Iterates the test set once as NumPy ``(images, labels)`` batches."""
        if self.pipeline == "tfdata":
            yield from self.test.as_numpy_iterator()
        else:
            for index in range(len(self.test)):
                yield self.test[index]

    @property
    def class_names(self):
        return list(self.info.class_names)

    @property
    def class_counts(self):
        return list(self.info.class_counts)

    @property
    def num_classes(self):
        return self.info.num_classes

    @property
    def input_shape(self):
        return tuple(self.info.image_shape)

    @property
    def num_train(self):
        return self.info.train_size

    @property
    def num_test(self):
        return self.info.test_size


def _require(path, what):
    if not pathlib.Path(path).exists():
        raise FileNotFoundError(f"{what} not found at {path}; pass --data-dir (the folder "
                                f"holding fashion-mnist/ and cifar10/, e.g. ../shared/datasets).")
    return pathlib.Path(path)


def _digits_lt(class_counts, **kwargs):
    """scikit-learn's digits split per class (shuffled with seed 1234): the first
    half is the training pool, the next (at most) 80 the test set."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    images = digits.images.astype(np.uint8)[..., None]          # values 0..16
    labels = digits.target.astype(np.int64)
    sizes = np.bincount(labels)
    shuffled = km_data.subsample_indices(labels, sizes, seed=1234)   # class by class
    starts = np.cumsum(sizes) - sizes
    pool = np.concatenate([shuffled[s:s + n // 2] for s, n in zip(starts, sizes)])
    test = np.concatenate([shuffled[s + n // 2:s + n // 2 + 80] for s, n in zip(starts, sizes)])
    # Standardise with the training pool's statistics (normalizer divides by 255 first).
    mean, std = images[pool].mean() / 255.0, images[pool].std() / 255.0
    return km_data.arrays_lt(images[pool], labels[pool], images[test], labels[test],
                             class_counts=class_counts, mean=(mean,), std=(std,),
                             class_names=[str(i) for i in range(10)], name="digits_lt",
                             **kwargs)


def _device_data(name, data_dir, counts, selected, seed, max_per_class, batch_size,
                 imbalance_ratio, profile, sampler, mixup_alpha):
    """``pipeline="device"``: the training subset as one normalised float32 array
    (fed to ``fit`` whole; the model crops and flips on the device with
    ``RandomPadCropFlip``), the test set through the NumPy pipeline."""
    if name != "cifar10-lt":
        raise ValueError(f'pipeline="device" is for cifar10-lt (pad-4 crops and flips), '
                         f"received dataset {name!r}.")
    if sampler is not None or mixup_alpha:
        raise ValueError(f'pipeline="device" feeds instance-balanced batches without MixUp; '
                         f"received sampler={sampler!r}, mixup_alpha={mixup_alpha!r}.")
    folder = _require(pathlib.Path(data_dir) / "cifar10", "CIFAR-10 JPEG copy")
    kwargs = dict(class_counts=selected, seed=seed, max_test_per_class=max_per_class)
    (x_train, y_train), _ = km_data.cifar10_lt(folder=folder, pipeline="arrays", **kwargs)[:2]
    _, test, info = km_data.cifar10_lt(folder=folder, pipeline="numpy", batch_size=batch_size,
                                       **kwargs)
    x_train, black = device_training_array(x_train)
    return LongTailedData(name, (x_train, np.asarray(y_train, "int32")), test, info, details={
        "profile_counts": counts, "imbalance_ratio": imbalance_ratio, "profile": profile,
        "data_dir": str(data_dir), "fill_value": black}, pipeline="device",
        batch_size=batch_size)


def device_training_array(images):
    """The device pipeline's CIFAR training array and pad value: uint8 images
    normalised as the host pipelines normalise them (float32), and the
    normalised black pixel, the value the host pipelines pad with before
    normalising (``RandomPadCropFlip(fill_value=...)``), as a list per channel."""
    from keras_margins.data.augment import CIFAR10_MEAN, CIFAR10_STD
    from keras_margins.data.numpy_augment import numpy_normalizer
    normalize = numpy_normalizer(CIFAR10_MEAN, CIFAR10_STD)   # the host pipelines' own
    black = normalize(np.zeros((1, 1, 1, 3), np.uint8))[0, 0, 0]
    return normalize(np.asarray(images)), black.tolist()


def load_dataset(name, data_dir=None, imbalance_ratio=100.0, profile="exp", seed=0,
                 max_per_class=None, train_fraction=None, batch_size=128, shuffle_seed=None,
                 pipeline="auto", sampler=None, mixup_alpha=None):
    """Builds the long-tailed training pipeline and its balanced test pipeline.

    Args:
        name: one of ``DATASETS``.
        data_dir: folder with ``fashion-mnist/`` and ``cifar10/`` (default
            ``default_data_dir()``).
        imbalance_ratio: largest / smallest class count (100).
        profile: ``"exp"`` or ``"step"``.
        seed: seed of the subset selection (0 = the LDAM-DRW code's subset).
        max_per_class: keep the first this many test images per class (smoke runs).
        train_fraction: keep ``ceil(fraction * n_c)`` training images of each
            class, a prefix of the full subset's picks (smoke runs; the subset
            stays long-tailed). ``class_counts`` are always the actual counts.
        batch_size: batch size of both pipelines.
        shuffle_seed: seed of shuffling and augmentation (default ``seed``).
        pipeline: ``"tfdata"``, ``"numpy"`` or ``"auto"`` (tf.data when TensorFlow
            imports, else numpy; ``keras_margins.data.resolve_pipeline``).
        sampler: training-batch sampler (``keras_margins.data.get_sampler``: None =
            shuffled instances, ``"class_balanced"``, ...).
        mixup_alpha: mix the training batches with ``keras.layers.MixUp`` of this
            alpha (soft labels; tf.data pipeline only).
    """
    if name not in DATASETS:
        raise ValueError(f"`dataset` must be one of {DATASETS}, received {name!r}.")
    data_dir = pathlib.Path(data_dir) if data_dir else default_data_dir()
    counts = km_data.long_tail_counts(10, IMG_MAX[name], imbalance_ratio, profile)
    if min(counts) < 1:
        raise ValueError(f"imbalance ratio {imbalance_ratio} leaves a class of {name} "
                         f"empty (counts {counts}); use a smaller ratio"
                         + (" (<= 87; 10 is usual)." if name == "digits-lt" else "."))
    selected = counts if not train_fraction else [int(np.ceil(train_fraction * n))
                                                  for n in counts]
    if pipeline not in PIPELINES:
        raise ValueError(f"`pipeline` must be one of {PIPELINES}, received {pipeline!r}.")
    if pipeline == "device":
        return _device_data(name, data_dir, counts, selected, seed, max_per_class, batch_size,
                            imbalance_ratio, profile, sampler, mixup_alpha)
    pipeline = km_data.resolve_pipeline(pipeline)
    kwargs = dict(class_counts=selected, seed=seed, batch_size=batch_size,
                  shuffle_seed=shuffle_seed, max_test_per_class=max_per_class,
                  pipeline=pipeline, sampler=sampler)
    if mixup_alpha:
        kwargs.update(mix="mixup", mix_alpha=float(mixup_alpha))
    if name == "fashion-mnist-lt":
        folder = _require(data_dir / "fashion-mnist", "Fashion-MNIST IDX files")
        train, test, info = km_data.fashion_mnist_lt(
            idx_dir=folder, mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD, **kwargs)
    elif name == "cifar10-lt":
        folder = _require(data_dir / "cifar10", "CIFAR-10 JPEG copy")
        train, test, info = km_data.cifar10_lt(folder=folder, **kwargs)
    else:
        train, test, info = _digits_lt(**kwargs)
    return LongTailedData(name, train, test, info, details={
        "profile_counts": counts, "imbalance_ratio": imbalance_ratio, "profile": profile,
        "data_dir": str(data_dir)}, pipeline=pipeline, batch_size=batch_size)
