"""Long-tailed dataset builders returning ``(train_ds, test_ds, info)``.

``info`` (a ``LongTailInfo``) holds the class names and the per-class training
counts the losses need (``LDAMLoss(info.class_counts)``). Training sets are
subsampled with ``subsample_indices`` (LDAM-DRW rule by default); test sets
stay as they are (balanced for CIFAR, Fashion-MNIST and the LT test lists).
"""

import dataclasses
import os
from typing import Optional

import numpy as np

from keras_margins.data import augment as augment_lib
from keras_margins.data.archives import resolve_image_root
from keras_margins.data.folders import check_image_file, list_image_folder
from keras_margins.data.pipeline import decode_image_fn, make_pipeline
from keras_margins.data.profiles import long_tail_counts
from keras_margins.data.samplers import get_sampler
from keras_margins.data.split_files import read_split
from keras_margins.data.subsample import class_counts_of, subsample_indices

__all__ = ["LongTailInfo", "arrays_lt", "image_folder_lt", "cifar10_lt", "cifar100_lt",
           "fashion_mnist_lt", "split_file_dataset", "split_file_lt", "read_idx"]


@dataclasses.dataclass(frozen=True)
class LongTailInfo:
    """What a long-tailed builder produced (also readable as ``info["class_counts"]``)."""

    name: str
    class_names: list
    class_counts: list                 # per-class training counts, class id order
    test_counts: Optional[list] = None
    imbalance_ratio: Optional[float] = None
    profile: Optional[str] = None
    seed: int = 0
    image_shape: Optional[tuple] = None
    batch_size: Optional[int] = None
    train_files: Optional[tuple] = None  # the selected training files (folder/list builders)

    @property
    def num_classes(self):
        return len(self.class_counts)

    @property
    def train_size(self):
        return int(sum(self.class_counts))

    @property
    def test_size(self):
        return None if self.test_counts is None else int(sum(self.test_counts))

    def __getitem__(self, key):
        return getattr(self, key)

    def as_dict(self):
        out = dataclasses.asdict(self)
        out.pop("train_files")
        out.update(num_classes=self.num_classes, train_size=self.train_size,
                   test_size=self.test_size)
        return out


def _target_counts(labels, num_classes, imbalance_ratio, profile, class_counts, max_count):
    available = np.bincount(labels, minlength=num_classes)
    if class_counts is not None:
        counts = [int(n) for n in class_counts]
        if len(counts) != num_classes:
            raise ValueError(f"`class_counts` lists {len(counts)} classes, the data has "
                             f"{num_classes}.")
        return counts
    if max_count is None:
        max_count = int(available.min())
    return long_tail_counts(num_classes, max_count, imbalance_ratio, profile)


def _train_test(x_train, y_train, x_test, y_test, *, name, class_names, imbalance_ratio,
                profile, class_counts, max_count, seed, selection, load, augment, mean, std,
                size, batch_size, sampler, cache, shuffle, mix, mix_alpha, train_files=None,
                image_shape=None, drop_remainder=False, shuffle_seed=None,
                max_test_per_class=None):
    num_classes = len(class_names)
    order_seed = seed if shuffle_seed is None else shuffle_seed
    y_train = np.asarray(y_train).reshape(-1).astype(np.int64)
    if y_train.size and (y_train.min() < 0 or y_train.max() >= num_classes):
        raise ValueError(f"{name}: training labels must lie in [0, {num_classes}), received "
                         f"[{y_train.min()}, {y_train.max()}].")
    counts = _target_counts(y_train, num_classes, imbalance_ratio, profile, class_counts,
                            max_count)
    keep = subsample_indices(y_train, counts, seed=seed, method=selection)
    x_sel, y_sel = x_train[keep], y_train[keep]
    if train_files is not None:
        for path in x_sel:
            check_image_file(path)
    sampler = get_sampler(sampler, seed=order_seed)
    mix_fn = None
    if mix is not None:
        mix_fn = augment_lib.mix_transform(num_classes, kind=mix, alpha=mix_alpha,
                                           seed=order_seed)
    train_ds = make_pipeline(
        x_sel, y_sel, load=load, training=True, batch_size=batch_size, shuffle=shuffle,
        sampler=sampler, cache=cache, seed=order_seed, mix=mix_fn,
        drop_remainder=drop_remainder,
        transform=augment_lib.get_transform(augment, True, mean, std, size, order_seed))
    test_ds, test_counts = None, None
    if x_test is not None:
        y_test = np.asarray(y_test).reshape(-1).astype(np.int64)
        if max_test_per_class is not None:
            keep_test = subsample_indices(
                y_test, [min(int(max_test_per_class), n)
                         for n in class_counts_of(y_test, num_classes)], method="first")
            x_test, y_test = x_test[keep_test], y_test[keep_test]
        test_counts = class_counts_of(y_test, num_classes)
        test_ds = make_pipeline(
            x_test, y_test, load=load, training=False, batch_size=batch_size, cache=cache,
            transform=augment_lib.get_transform(augment, False, mean, std, size))
    info = LongTailInfo(
        name=name, class_names=list(class_names), class_counts=counts,
        test_counts=test_counts, imbalance_ratio=imbalance_ratio if class_counts is None
        else max(counts) / max(min(counts), 1), profile=profile if class_counts is None
        else None, seed=seed, image_shape=image_shape, batch_size=batch_size,
        train_files=None if train_files is None else tuple(str(p) for p in x_sel))
    return train_ds, test_ds, info


def arrays_lt(x_train, y_train, x_test=None, y_test=None, imbalance_ratio=100, profile="exp",
              *, class_names=None, class_counts=None, max_count=None, seed=0,
              selection="ldam_drw", augment=None, mean=None, std=None, batch_size=128,
              sampler=None, shuffle=True, mix=None, mix_alpha=None, name="arrays_lt",
              shuffle_seed=None, max_test_per_class=None):
    """Long-tailed pipelines from uint8 image arrays ``(N, H, W, C)`` and int labels.

    ``seed`` picks the long-tailed subset; ``shuffle_seed`` (default ``seed``)
    seeds shuffling, re-sampling and augmentation, so several training seeds
    can share one subset. ``max_test_per_class`` keeps the first that many
    test images of each class (quick runs). Other arguments: ``image_folder_lt``.
    """
    x_train = np.asarray(x_train)
    y_train = np.asarray(y_train).reshape(-1)
    if class_names is None:
        num = int(max(y_train.max(), -1 if y_test is None else np.max(y_test))) + 1
        class_names = [str(i) for i in range(num)]
    return _train_test(
        x_train, y_train, None if x_test is None else np.asarray(x_test), y_test, name=name,
        class_names=class_names, imbalance_ratio=imbalance_ratio, profile=profile,
        class_counts=class_counts, max_count=max_count, seed=seed, selection=selection,
        load=None, augment=augment, mean=mean, std=std, size=None, batch_size=batch_size,
        sampler=sampler, cache=False, shuffle=shuffle, mix=mix, mix_alpha=mix_alpha,
        image_shape=tuple(x_train.shape[1:]), shuffle_seed=shuffle_seed,
        max_test_per_class=max_test_per_class)


def image_folder_lt(root, imbalance_ratio=100, profile="exp", *, class_counts=None,
                    max_count=None, seed=0, selection="ldam_drw", train_dir="train",
                    test_dir="test", image_size=(32, 32), channels=3, augment="cifar",
                    mean=None, std=None, batch_size=128, sampler=None, cache=True,
                    shuffle=True, mix=None, mix_alpha=None, check_images=True,
                    shuffle_seed=None, max_test_per_class=None):
    """Long-tailed split of an image folder (``root/train/<class>/*``, ``root/test/<class>/*``).

    ``root`` may also be a ``.tar.gz``/``.tar``/``.zip`` archive of such a folder
    (or a folder holding just that archive): it is extracted once into
    ``~/.keras/datasets`` (see ``keras_margins.data.archives``).

    With no ``train_dir`` sub-folder, ``root`` itself holds the class folders and
    there is no test set (``test_ds`` is ``None``). Classes are the sorted folder
    names; files are sorted within a class, so on the CIFAR-10 JPEG copy the
    LDAM-DRW rule picks the same images as the authors' code for the same seed.

    Args:
        root: the dataset folder.
        imbalance_ratio, profile: the long-tail profile (``long_tail_counts``).
        class_counts: explicit per-class training counts instead of a profile.
        max_count: head-class count (default: the smallest class in the folder).
        seed, selection: the subsampling seed and rule (``"ldam_drw"`` | ``"first"``).
        shuffle_seed: seed of shuffling, re-sampling and augmentation (default
            ``seed``): vary it across training seeds to keep the same subset.
        max_test_per_class: keep only the first that many test images of each
            class (quick runs; default: the whole test set).
        image_size: decoded images are resized to it when they differ (None: keep).
        augment: ``"cifar"``, ``"imagenet"``, ``None`` (normalise only) or a callable.
        mean, std: per-channel normalisation (defaults of the recipe).
        batch_size, sampler, cache, shuffle, mix, mix_alpha: see ``make_pipeline``.
        check_images: check that every selected training image starts like an image.

    Returns:
        ``(train_ds, test_ds, info)``.
    """
    root = os.fspath(resolve_image_root(root))
    if not os.path.isdir(root):
        raise ValueError(f"image folder not found: {root}")
    train_root = os.path.join(root, train_dir) if train_dir else root
    if not os.path.isdir(train_root):
        train_root, test_root = root, None
    else:
        test_root = os.path.join(root, test_dir) if test_dir else None
        if test_root is not None and not os.path.isdir(test_root):
            test_root = None
    paths, labels, class_names = list_image_folder(train_root)
    test_paths = test_labels = None
    if test_root is not None:
        test_paths, test_labels, _ = list_image_folder(test_root, class_names=class_names)
    size = None if image_size is None else (
        image_size if np.isscalar(image_size) else image_size[0])
    shape = None if image_size is None else (
        (image_size, image_size, channels) if np.isscalar(image_size)
        else (*image_size, channels))
    return _train_test(
        paths, labels, test_paths, test_labels, name=os.path.basename(root.rstrip(os.sep)),
        class_names=class_names, imbalance_ratio=imbalance_ratio, profile=profile,
        class_counts=class_counts, max_count=max_count, seed=seed, selection=selection,
        load=decode_image_fn(channels, image_size), augment=augment, mean=mean, std=std,
        size=size if augment == "imagenet" else None, batch_size=batch_size, sampler=sampler,
        cache=cache, shuffle=shuffle, mix=mix, mix_alpha=mix_alpha,
        train_files=paths if check_images else None, image_shape=shape,
        shuffle_seed=shuffle_seed, max_test_per_class=max_test_per_class)


# --------------------------------------------------------------------------- tfds
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot"]
_KNOWN_CLASSES = {"cifar10": CIFAR10_CLASSES, "fashion_mnist": FASHION_MNIST_CLASSES}


def _tfds_arrays(name, split, data_dir, download, label_key="label"):
    import tensorflow_datasets as tfds

    ds, info = tfds.load(name, split=split, data_dir=data_dir, download=download,
                         shuffle_files=False, with_info=True)
    images, labels, ids = [], [], []
    for batch in tfds.as_numpy(ds.batch(10000)):
        images.append(batch["image"])
        labels.append(batch[label_key])
        if "id" in batch:
            ids.append(batch["id"])
    images, labels = np.concatenate(images), np.concatenate(labels).astype(np.int64)
    if ids:  # original file order (train_00000, ...), whatever the shard order
        order = np.argsort(np.concatenate(ids), kind="stable")
        images, labels = images[order], labels[order]
    names = list(info.features[label_key].names)
    if name in _KNOWN_CLASSES and names == [str(i) for i in range(len(names))]:
        names = list(_KNOWN_CLASSES[name])  # metadata without names (e.g. mock data)
    return images, labels, names


def _tfds_lt(tfds_name, *, name, folder, data_dir, download, imbalance_ratio, profile,
             class_counts, max_count, seed, selection, augment, mean, std, batch_size,
             sampler, shuffle, mix, mix_alpha, shuffle_seed, max_test_per_class,
             label_key="label"):
    if folder is not None:
        return image_folder_lt(folder, imbalance_ratio, profile, class_counts=class_counts,
                               max_count=max_count, seed=seed, selection=selection,
                               augment=augment, mean=mean, std=std, batch_size=batch_size,
                               sampler=sampler, shuffle=shuffle, mix=mix, mix_alpha=mix_alpha,
                               shuffle_seed=shuffle_seed,
                               max_test_per_class=max_test_per_class)
    x_train, y_train, class_names = _tfds_arrays(tfds_name, "train", data_dir, download,
                                                 label_key)
    x_test, y_test, _ = _tfds_arrays(tfds_name, "test", data_dir, download, label_key)
    return _train_test(
        x_train, y_train, x_test, y_test, name=name, class_names=class_names,
        imbalance_ratio=imbalance_ratio, profile=profile, class_counts=class_counts,
        max_count=max_count, seed=seed, selection=selection, load=None, augment=augment,
        mean=mean, std=std, size=None, batch_size=batch_size, sampler=sampler, cache=False,
        shuffle=shuffle, mix=mix, mix_alpha=mix_alpha, image_shape=tuple(x_train.shape[1:]),
        shuffle_seed=shuffle_seed, max_test_per_class=max_test_per_class)


def cifar10_lt(imbalance_ratio=100, profile="exp", *, seed=0, folder=None, data_dir=None,
               download=True, class_counts=None, max_count=None, selection="ldam_drw",
               augment="cifar", mean=augment_lib.CIFAR10_MEAN, std=augment_lib.CIFAR10_STD,
               batch_size=128, sampler=None, shuffle=True, mix=None, mix_alpha=None,
               shuffle_seed=None, max_test_per_class=None):
    """CIFAR-10-LT (LDAM-DRW protocol): tfds ``cifar10``, or a JPEG/PNG ``folder``.

    ``data_dir`` is passed to ``tfds.load`` (``download=False`` never touches the
    network); ``folder`` (``train/<class>``, ``test/<class>``, or an archive of
    them) uses ``image_folder_lt``, which also documents ``shuffle_seed`` and
    ``max_test_per_class``. Ratio 100 keeps ``[5000, 2997, ..., 50]`` (12,406).
    """
    return _tfds_lt("cifar10", name="cifar10_lt", folder=folder, data_dir=data_dir,
                    download=download, imbalance_ratio=imbalance_ratio, profile=profile,
                    class_counts=class_counts, max_count=max_count, seed=seed,
                    selection=selection, augment=augment, mean=mean, std=std,
                    batch_size=batch_size, sampler=sampler, shuffle=shuffle, mix=mix,
                    mix_alpha=mix_alpha, shuffle_seed=shuffle_seed,
                    max_test_per_class=max_test_per_class)


def cifar100_lt(imbalance_ratio=100, profile="exp", *, seed=0, folder=None, data_dir=None,
                download=True, class_counts=None, max_count=None, selection="ldam_drw",
                augment="cifar", mean=augment_lib.CIFAR100_MEAN, std=augment_lib.CIFAR100_STD,
                batch_size=128, sampler=None, shuffle=True, mix=None, mix_alpha=None,
                shuffle_seed=None, max_test_per_class=None):
    """CIFAR-100-LT (fine labels): tfds ``cifar100`` or a ``folder``; ratio 100 keeps 10,847."""
    return _tfds_lt("cifar100", name="cifar100_lt", folder=folder, data_dir=data_dir,
                    download=download, imbalance_ratio=imbalance_ratio, profile=profile,
                    class_counts=class_counts, max_count=max_count, seed=seed,
                    selection=selection, augment=augment, mean=mean, std=std,
                    batch_size=batch_size, sampler=sampler, shuffle=shuffle, mix=mix,
                    mix_alpha=mix_alpha, shuffle_seed=shuffle_seed,
                    max_test_per_class=max_test_per_class)


def read_idx(path):
    """Reads an IDX file (``.gz`` or plain) into a numpy array."""
    import gzip

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"IDX file not found: {path}")
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {data[:4]!r}).")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = 4 + 4 * ndim + int(np.prod(shape))
    if len(data) != expected:
        raise ValueError(f"{path}: truncated IDX file ({len(data)} bytes, expected {expected}).")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist_lt(imbalance_ratio=100, profile="exp", *, seed=0, idx_dir=None,
                     data_dir=None, download=True, class_counts=None, max_count=None,
                     selection="ldam_drw", mean=None, std=None, batch_size=128, sampler=None,
                     shuffle=True, mix=None, mix_alpha=None, shuffle_seed=None,
                     max_test_per_class=None):
    """Fashion-MNIST-LT: tfds ``fashion_mnist`` or the four IDX files in ``idx_dir``.

    Images are (28, 28, 1) float32 in ``[0, 1]`` (standardised when ``mean`` /
    ``std`` are given), no augmentation. Other arguments: ``image_folder_lt``.
    """
    if idx_dir is not None:
        names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

        def find(stem):
            for candidate in (stem + ".gz", stem):
                if os.path.isfile(os.path.join(idx_dir, candidate)):
                    return os.path.join(idx_dir, candidate)
            raise ValueError(f"Fashion-MNIST file {stem}[.gz] not found in {idx_dir}.")
        x_train, y_train, x_test, y_test = (read_idx(find(n)) for n in names)
        x_train, x_test = x_train[..., None], x_test[..., None]
        class_names = FASHION_MNIST_CLASSES
    else:
        x_train, y_train, class_names = _tfds_arrays("fashion_mnist", "train", data_dir,
                                                     download)
        x_test, y_test, _ = _tfds_arrays("fashion_mnist", "test", data_dir, download)
    return _train_test(
        x_train, y_train.astype(np.int64), x_test, y_test, name="fashion_mnist_lt",
        class_names=class_names, imbalance_ratio=imbalance_ratio, profile=profile,
        class_counts=class_counts, max_count=max_count, seed=seed, selection=selection,
        load=None, augment=None, mean=mean, std=std, size=None, batch_size=batch_size,
        sampler=sampler, cache=False, shuffle=shuffle, mix=mix, mix_alpha=mix_alpha,
        image_shape=tuple(x_train.shape[1:]), shuffle_seed=shuffle_seed,
        max_test_per_class=max_test_per_class)


# --------------------------------------------------------------------- split files
def split_file_dataset(list_file, image_root, *, training=True, num_classes=None,
                       class_names=None, image_size=224, augment="imagenet", mean=None,
                       std=None, batch_size=256, sampler=None, shuffle=True, seed=0,
                       cache=False, check_files=True, mix=None, mix_alpha=None):
    """One split of ImageNet-LT / Places-LT / iNaturalist from its list file.

    ``list_file``: ``relative/path label`` lines (plain or ``.gz``) or an
    iNaturalist-2018 COCO-style ``.json``. Images are decoded from
    ``image_root``; ``training`` picks the augmentation (random resized crop +
    flip) or the evaluation transform (resize + centre crop), and shuffles or
    re-samples. Every problem in the list raises a ``ValueError`` naming the
    file and line.

    Returns:
        ``(dataset, info)``: ``info.class_counts`` are this split's counts.
    """
    paths, labels, json_names = read_split(list_file, image_root, num_classes=num_classes,
                                           check_files=check_files)
    num = num_classes or int(labels.max()) + 1
    names = list(class_names or json_names or [str(i) for i in range(num)])
    if len(names) < num:
        raise ValueError(f"{list_file}: labels go up to {num - 1} but only {len(names)} "
                         f"class names were given.")
    counts = class_counts_of(labels, len(names))
    transform = augment_lib.get_transform(augment, training, mean, std, image_size, seed)
    mix_fn = None
    if training and mix is not None:
        mix_fn = augment_lib.mix_transform(len(names), kind=mix, alpha=mix_alpha, seed=seed)
    ds = make_pipeline(paths, labels, load=decode_image_fn(3), transform=transform,
                       training=training, batch_size=batch_size, shuffle=shuffle,
                       sampler=get_sampler(sampler, seed) if training else None, cache=cache,
                       seed=seed, mix=mix_fn)
    info = LongTailInfo(name=os.path.basename(os.fspath(list_file)), class_names=names,
                        class_counts=counts, imbalance_ratio=max(counts) / max(min(counts), 1),
                        seed=seed, image_shape=(image_size, image_size, 3),
                        batch_size=batch_size, train_files=tuple(str(p) for p in paths))
    return ds, info


def split_file_lt(train_list, test_list, image_root, *, num_classes=None, **kwargs):
    """``(train_ds, test_ds, info)`` from a training and a test list (same ``image_root``).

    ``info.class_counts`` are the training counts, ``info.test_counts`` the test
    counts; other keyword arguments go to ``split_file_dataset``.
    """
    train_ds, info = split_file_dataset(train_list, image_root, training=True,
                                        num_classes=num_classes, **kwargs)
    num_classes = num_classes or info.num_classes
    kwargs.pop("sampler", None)
    kwargs.pop("mix", None)
    test_ds, test_info = split_file_dataset(test_list, image_root, training=False,
                                            num_classes=num_classes,
                                            class_names=kwargs.pop("class_names", None)
                                            or info.class_names, **kwargs)
    return train_ds, test_ds, dataclasses.replace(info, test_counts=test_info.class_counts)
