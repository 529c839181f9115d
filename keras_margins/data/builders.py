"""Long-tailed dataset builders returning ``(train, test, info)``.

``info`` (a ``LongTailInfo``) holds the class names and the per-class training
counts the losses need (``LDAMLoss(info.class_counts)``). Training sets are
subsampled with ``subsample_indices`` (LDAM-DRW rule by default); test sets
stay as they are (balanced for CIFAR, Fashion-MNIST and the LT test lists).

``pipeline`` chooses what ``train`` and ``test`` are; the subset and ``info``
are the same whichever is chosen:

- ``"tfdata"``: batched ``tf.data.Dataset`` s (needs TensorFlow);
- ``"numpy"``: ``ArrayBatches`` (``keras.utils.PyDataset``), NumPy and Pillow
  only, for JAX / PyTorch machines without TensorFlow;
- ``"arrays"``: the selected data itself, ``(x, y)`` NumPy pairs before any
  transform: uint8 images, or file paths where images are read lazily
  (``cache=False`` folders, split files);
- ``"auto"`` (default): ``"tfdata"`` when TensorFlow imports, else ``"numpy"``.
"""

import dataclasses
import functools
import os
import pathlib
import re
import socket
import threading
from typing import Optional

import numpy as np

from keras_margins.data import augment as augment_lib
from keras_margins.data._imports import import_tensorflow, import_tfds, tensorflow_available
from keras_margins.data.archives import resolve_image_root
from keras_margins.data.batches import ArrayBatches
from keras_margins.data.folders import IMAGE_EXTENSIONS, check_image_file, list_image_folder
from keras_margins.data.numpy_augment import get_numpy_transform
from keras_margins.data.pipeline import decode_image_fn, make_pipeline
from keras_margins.data.profiles import long_tail_counts
from keras_margins.data.readers import (CIFAR_PICKLE_FILES, cifar_pickle_kind, did_you_mean,
                                        image_size_of, read_cifar_batches, read_fashion_mnist,
                                        read_idx, read_image, read_images)
from keras_margins.data.samplers import get_sampler
from keras_margins.data.split_files import read_split
from keras_margins.data.subsample import class_counts_of, subsample_indices

__all__ = ["LongTailInfo", "PIPELINES", "resolve_pipeline", "arrays_lt", "image_folder_lt",
           "cifar10_lt", "cifar100_lt", "fashion_mnist_lt", "split_file_dataset",
           "split_file_lt", "read_idx"]

PIPELINES = ("auto", "tfdata", "numpy", "arrays")


def resolve_pipeline(pipeline):
    """``"auto"`` -> ``"tfdata"`` if TensorFlow imports, else ``"numpy"``; checks the others.

    ``"tfdata"`` without TensorFlow raises an ``ImportError`` naming the extra.
    """
    if pipeline not in PIPELINES:
        raise ValueError(f"`pipeline` must be one of {PIPELINES}, received {pipeline!r}.")
    if pipeline == "auto":
        return "tfdata" if tensorflow_available() else "numpy"
    if pipeline == "tfdata":
        import_tensorflow('pipeline="tfdata"')
    return pipeline


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
                profile, class_counts, max_count, seed, selection, augment, mean, std,
                size, batch_size, sampler, cache, shuffle, mix, mix_alpha, pipeline,
                decode=None, workers=1, train_files=None, image_shape=None,
                drop_remainder=False, shuffle_seed=None, max_test_per_class=None):
    """Selects the long-tailed subset, then builds the chosen pipeline over it.

    ``decode`` is ``(channels, image_size)`` when ``x_train`` / ``x_test`` are
    file paths, ``None`` when they are uint8 images.
    """
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
    test_counts = None
    if x_test is not None:
        y_test = np.asarray(y_test).reshape(-1).astype(np.int64)
        if max_test_per_class is not None:
            keep_test = subsample_indices(
                y_test, [min(int(max_test_per_class), n)
                         for n in class_counts_of(y_test, num_classes)], method="first")
            x_test, y_test = x_test[keep_test], y_test[keep_test]
        test_counts = class_counts_of(y_test, num_classes)
    info = LongTailInfo(
        name=name, class_names=list(class_names), class_counts=counts,
        test_counts=test_counts, imbalance_ratio=imbalance_ratio if class_counts is None
        else max(counts) / max(min(counts), 1), profile=profile if class_counts is None
        else None, seed=seed, image_shape=image_shape, batch_size=batch_size,
        train_files=None if train_files is None else tuple(str(p) for p in x_sel))
    options = dict(augment=augment, mean=mean, std=std, size=size, batch_size=batch_size,
                   sampler=get_sampler(sampler, seed=order_seed), cache=cache, shuffle=shuffle,
                   seed=order_seed, decode=decode, drop_remainder=drop_remainder)
    if pipeline == "tfdata":
        mix_fn = None
        if mix is not None:
            mix_fn = augment_lib.mix_transform(num_classes, kind=mix, alpha=mix_alpha,
                                               seed=order_seed)
        train, test = _tf_pair(x_sel, y_sel, x_test, y_test, mix=mix_fn, **options)
    else:
        _numpy_has_no_mix(mix)
        train, test = _numpy_pair(x_sel, y_sel, x_test, y_test, pipeline=pipeline,
                                  workers=workers, **options)
    return train, test, info


def _tf_pair(x_train, y_train, x_test, y_test, *, augment, mean, std, size, batch_size,
             sampler, cache, shuffle, seed, decode, drop_remainder, mix):
    load = None if decode is None else decode_image_fn(*decode)
    train = make_pipeline(
        x_train, y_train, load=load, training=True, batch_size=batch_size, shuffle=shuffle,
        sampler=sampler, cache=cache, seed=seed, mix=mix, drop_remainder=drop_remainder,
        transform=augment_lib.get_transform(augment, True, mean, std, size, seed))
    test = None
    if x_test is not None:
        test = make_pipeline(
            x_test, y_test, load=load, training=False, batch_size=batch_size, cache=cache,
            transform=augment_lib.get_transform(augment, False, mean, std, size))
    return train, test


def _numpy_has_no_mix(mix):
    if mix is not None:
        raise ValueError(f"mix={mix!r} (MixUp / CutMix) is only on the tf.data pipeline: "
                         f'pass pipeline="tfdata" (needs TensorFlow) or mix=None.')


def _numpy_pair(x_train, y_train, x_test, y_test, *, pipeline, augment, mean, std, size,
                batch_size, sampler, cache, shuffle, seed, decode, drop_remainder, workers):
    load = None
    if decode is not None and cache:  # decoded once, into memory (tf.data's cache)
        x_train = read_images(x_train, *decode)
        x_test = None if x_test is None else read_images(x_test, *decode)
    elif decode is not None:
        load = functools.partial(read_image, channels=decode[0], size=decode[1])
    if pipeline == "arrays":
        return (x_train, y_train), None if x_test is None else (x_test, y_test)
    train = ArrayBatches(x_train, y_train, batch_size, load=load, shuffle=shuffle,
                         sampler=sampler, seed=seed, drop_remainder=drop_remainder,
                         workers=workers,
                         transform=get_numpy_transform(augment, True, mean, std, size))
    test = None
    if x_test is not None:
        test = ArrayBatches(x_test, y_test, batch_size, load=load, shuffle=False,
                            workers=workers,
                            transform=get_numpy_transform(augment, False, mean, std, size))
    return train, test


def _check_xy(x, y, x_name, y_name):
    """``(x, y)`` as arrays; a ``ValueError`` for 1-D images, one-hot labels, lengths."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 2:
        raise ValueError(f"`{x_name}` must be an array of images (N, H, W, C), received shape "
                         f"{x.shape}.")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2:
        raise ValueError(f"`{y_name}` must hold integer class ids of shape (N,), received "
                         f"shape {y.shape} (one-hot labels? pass np.argmax({y_name}, axis=-1)).")
    if y.ndim != 1:
        raise ValueError(f"`{y_name}` must hold integer class ids of shape (N,), received "
                         f"shape {y.shape}.")
    if len(x) != len(y):
        raise ValueError(f"`{x_name}` and `{y_name}` differ in length: {len(x)} images, "
                         f"{len(y)} labels.")
    return x, y


def arrays_lt(x_train, y_train, x_test=None, y_test=None, imbalance_ratio=100, profile="exp",
              *, class_names=None, class_counts=None, max_count=None, seed=0,
              selection="ldam_drw", augment=None, mean=None, std=None, batch_size=128,
              sampler=None, shuffle=True, mix=None, mix_alpha=None, name="arrays_lt",
              shuffle_seed=None, max_test_per_class=None, pipeline="auto", workers=1):
    """Long-tailed pipelines from uint8 image arrays ``(N, H, W, C)`` and int labels.

    ``seed`` picks the long-tailed subset; ``shuffle_seed`` (default ``seed``)
    seeds shuffling, re-sampling and augmentation, so several training seeds
    can share one subset. ``max_test_per_class`` keeps the first that many
    test images of each class (quick runs). Labels are class ids of shape
    ``(N,)`` (one-hot labels are refused). ``pipeline``: see the module
    docstring; ``workers``: threads of the NumPy batches in ``fit``. Other
    arguments: ``image_folder_lt``.
    """
    pipeline = resolve_pipeline(pipeline)
    x_train, y_train = _check_xy(x_train, y_train, "x_train", "y_train")
    if (x_test is None) != (y_test is None):
        raise ValueError("pass both `x_test` and `y_test`, or neither.")
    if x_test is not None:
        x_test, y_test = _check_xy(x_test, y_test, "x_test", "y_test")
    if class_names is None:
        num = int(max(y_train.max(), -1 if y_test is None else np.max(y_test))) + 1
        class_names = [str(i) for i in range(num)]
    return _train_test(
        x_train, y_train, x_test, y_test, name=name, class_names=class_names,
        imbalance_ratio=imbalance_ratio, profile=profile, class_counts=class_counts,
        max_count=max_count, seed=seed, selection=selection, augment=augment, mean=mean,
        std=std, size=None, batch_size=batch_size, sampler=sampler, cache=False,
        shuffle=shuffle, mix=mix, mix_alpha=mix_alpha, pipeline=pipeline, workers=workers,
        image_shape=tuple(x_train.shape[1:]), shuffle_seed=shuffle_seed,
        max_test_per_class=max_test_per_class)


def _list_train_test(train_root, test_root):
    """Lists both splits; a ``ValueError`` when their class folders differ."""
    paths, labels, class_names = list_image_folder(train_root)
    if test_root is None:
        return paths, labels, class_names, None, None
    test_classes = sorted(entry.name for entry in os.scandir(test_root) if entry.is_dir())
    missing = [c for c in class_names if c not in test_classes]
    extra = [c for c in test_classes if c not in class_names]
    if missing or extra:
        differences = [f"{test_root} lacks {missing[:10]} (found in {train_root})"] * bool(missing)
        differences += [f"{train_root} lacks {extra[:10]} (found in {test_root})"] * bool(extra)
        raise ValueError("the train and test folders must hold the same class folders: "
                         + "; ".join(differences) + ".")
    test_paths, test_labels, _ = list_image_folder(test_root, class_names=class_names)
    return paths, labels, class_names, test_paths, test_labels


def image_folder_lt(root, imbalance_ratio=100, profile="exp", *, class_counts=None,
                    max_count=None, seed=0, selection="ldam_drw", train_dir="train",
                    test_dir="test", image_size=(32, 32), channels=3, augment="cifar",
                    mean=None, std=None, batch_size=128, sampler=None, cache=True,
                    shuffle=True, mix=None, mix_alpha=None, check_images=True,
                    shuffle_seed=None, max_test_per_class=None, pipeline="auto", workers=1):
    """Long-tailed split of an image folder (``root/train/<class>/*``, ``root/test/<class>/*``).

    ``root`` may also be a ``.tar.gz``/``.tar``/``.zip`` archive of such a folder
    (or a folder holding just that archive): it is extracted once into
    ``~/.keras/datasets`` (see ``keras_margins.data.archives``).

    With no ``train_dir`` sub-folder, ``root`` itself holds the class folders and
    there is no test set (``test`` is ``None``). Classes are the sorted folder
    names (the test folder must hold the same ones); files are sorted within a
    class, so on the CIFAR-10 JPEG copy the LDAM-DRW rule picks the same images
    as the authors' code for the same seed.

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
        image_size: decoded images are resized to it when they differ (None:
            keep; on the NumPy path images must then share one size).
        augment: ``"cifar"``, ``"imagenet"``, ``None`` (normalise only) or a
            callable (a per-image tf function for ``"tfdata"``, a batch
            ``(images, rng) -> float32`` function for ``"numpy"``).
        mean, std: per-channel normalisation (defaults of the recipe).
        batch_size, sampler, shuffle, mix, mix_alpha: see ``make_pipeline``
            (``mix`` needs ``"tfdata"``).
        cache: keep the decoded images in memory (NumPy path: decode the selected
            images once, in threads, instead of per batch).
        check_images: check that every selected training image starts like an image.
        pipeline: ``"auto"``, ``"tfdata"``, ``"numpy"`` or ``"arrays"`` (module docstring).
        workers: threads of the NumPy batches in ``fit`` (``keras.utils.PyDataset``).

    Returns:
        ``(train, test, info)``.
    """
    pipeline = resolve_pipeline(pipeline)
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
    paths, labels, class_names, test_paths, test_labels = _list_train_test(train_root,
                                                                           test_root)
    size = None if image_size is None else (
        image_size if np.isscalar(image_size) else image_size[0])
    shape = None if image_size is None else (
        (image_size, image_size, channels) if np.isscalar(image_size)
        else (*image_size, channels))
    return _train_test(
        paths, labels, test_paths, test_labels, name=os.path.basename(root.rstrip(os.sep)),
        class_names=class_names, imbalance_ratio=imbalance_ratio, profile=profile,
        class_counts=class_counts, max_count=max_count, seed=seed, selection=selection,
        decode=(channels, image_size), augment=augment, mean=mean, std=std,
        size=size if augment == "imagenet" else None, batch_size=batch_size, sampler=sampler,
        cache=cache, shuffle=shuffle, mix=mix, mix_alpha=mix_alpha, pipeline=pipeline,
        workers=workers, train_files=paths if check_images else None, image_shape=shape,
        shuffle_seed=shuffle_seed, max_test_per_class=max_test_per_class)


# --------------------------------------------------------------------------- tfds
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot"]
_KNOWN_CLASSES = {"cifar10": CIFAR10_CLASSES, "fashion_mnist": FASHION_MNIST_CLASSES}
# Where tensorflow-datasets downloads each dataset from (host, port).
_DOWNLOAD_HOSTS = {"cifar10": ("www.cs.toronto.edu", 443),
                   "cifar100": ("www.cs.toronto.edu", 443),
                   "fashion_mnist": ("fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80)}
_CIFAR = {"cifar10": ("CIFAR-10", 10, re.compile(r"cifar[-_]?10(?!0)")),
          "cifar100": ("CIFAR-100", 100, re.compile(r"cifar[-_]?100"))}


def _host_reachable(host, port, timeout=2.0):
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` s (DNS included)."""
    result = []

    def connect():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)
    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def _check_download(tfds, name, data_dir, local_hint):
    """Fails fast (instead of tfds' minutes of retries) when a download cannot work."""
    try:
        if tfds.builder(name, data_dir=data_dir).is_prepared():
            return
    except Exception:  # noqa: BLE001 - tfds.load reports its own problems
        return
    host, port = _DOWNLOAD_HOSTS.get(name, ("storage.googleapis.com", 443))
    if not _host_reachable(host, port):
        raise ConnectionError(
            f"tensorflow-datasets has not prepared {name!r} in "
            f"{data_dir or 'its default data_dir'} and cannot download it ({host}:{port} is "
            f"unreachable; no network?). Pass a local copy instead: {local_hint}.")


def _tfds_arrays(tfds, name, split, data_dir, download, label_key="label"):
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


def _tfds_train_test(name, data_dir, download, local_hint, label_key="label"):
    """``(x_train, y_train, x_test, y_test, class_names)`` from tensorflow-datasets."""
    tfds = import_tfds(f"loading {name!r} from tensorflow-datasets (without {local_hint})")
    if download:
        _check_download(tfds, name, data_dir, local_hint)
    x_train, y_train, names = _tfds_arrays(tfds, name, "train", data_dir, download, label_key)
    x_test, y_test, _ = _tfds_arrays(tfds, name, "test", data_dir, download, label_key)
    return x_train, y_train, x_test, y_test, names


def _locate_cifar(folder, dataset):
    """``("pickles" | "folder", root)`` for a CIFAR folder, archive or python batches."""
    title, _, pattern = _CIFAR[dataset]
    path = pathlib.Path(folder).expanduser()
    if not path.exists():
        raise ValueError(f"{title} folder not found: {path}")
    root = pathlib.Path(resolve_image_root(path))
    kind = cifar_pickle_kind(root)
    if kind == dataset:
        return "pickles", root
    if kind is not None:
        raise ValueError(f"{root} holds the python {_CIFAR[kind][0]}, expected {title}.")
    if (root / "train").is_dir() and (root / "test").is_dir():
        return "folder", root
    found = sorted(p.name for p in root.iterdir())[:10] if root.is_dir() else [root.name]
    raise ValueError(
        f"{path} is not a {title} folder: expected train/<class>/ and test/<class>/ image "
        f"folders, the python batches ({', '.join(CIFAR_PICKLE_FILES[dataset])}) or an archive "
        f"of either; found {found}."
        + did_you_mean(root, lambda name: bool(pattern.match(name.lower()))))


def _check_cifar_folder(root, dataset):
    """A ``ValueError`` unless both splits hold the dataset's classes of 32x32 images.

    Reads the header of the first image of every class (when Pillow is installed).
    """
    title, num_classes, _ = _CIFAR[dataset]
    for split in ("train", "test"):
        folder = root / split
        classes = sorted(p for p in folder.iterdir() if p.is_dir())
        if len(classes) != num_classes:
            raise ValueError(f"{folder} is not {title}-shaped: expected {num_classes} class "
                             f"folders, found {len(classes)}.")
        try:
            for class_folder in classes:
                first = min((p for p in class_folder.iterdir()
                             if p.name.lower().endswith(IMAGE_EXTENSIONS)), default=None)
                size = None if first is None else image_size_of(first)
                if size not in (None, (32, 32)):
                    raise ValueError(f"{folder} is not {title}-shaped: expected 32x32 images, "
                                     f"{first} is {size[0]}x{size[1]}.")
        except ImportError:  # no Pillow: the tf.data decoder resizes to 32x32
            return


def _tfds_lt(tfds_name, *, name, folder, data_dir, download, imbalance_ratio, profile,
             class_counts, max_count, seed, selection, augment, mean, std, batch_size,
             sampler, shuffle, mix, mix_alpha, shuffle_seed, max_test_per_class, pipeline,
             workers, label_key="label"):
    pipeline = resolve_pipeline(pipeline)
    common = dict(imbalance_ratio=imbalance_ratio, profile=profile, class_counts=class_counts,
                  max_count=max_count, seed=seed, selection=selection, augment=augment,
                  mean=mean, std=std, batch_size=batch_size, sampler=sampler, shuffle=shuffle,
                  mix=mix, mix_alpha=mix_alpha, shuffle_seed=shuffle_seed,
                  max_test_per_class=max_test_per_class, pipeline=pipeline, workers=workers)
    if folder is not None:
        kind, root = _locate_cifar(folder, tfds_name)
        if kind == "folder":
            _check_cifar_folder(root, tfds_name)
            return image_folder_lt(root, **common)
        (x_train, y_train), (x_test, y_test), class_names = read_cifar_batches(root)
    else:
        if pipeline != "tfdata" and not tensorflow_available():
            raise ImportError(
                f"{name}(folder=None) reads {tfds_name!r} with tensorflow-datasets, which "
                f'needs TensorFlow (pip install "keras-margins[data]"). Without TensorFlow, '
                f"pass folder= (the JPEG folder with train/ and test/, its archive, or the "
                f"python batches).")
        x_train, y_train, x_test, y_test, class_names = _tfds_train_test(
            tfds_name, data_dir, download, "folder=<the CIFAR folder or archive>", label_key)
    return _train_test(
        x_train, y_train, x_test, y_test, name=name, class_names=class_names, size=None,
        cache=False, image_shape=tuple(x_train.shape[1:]), **common)


def cifar10_lt(imbalance_ratio=100, profile="exp", *, seed=0, folder=None, data_dir=None,
               download=True, class_counts=None, max_count=None, selection="ldam_drw",
               augment="cifar", mean=augment_lib.CIFAR10_MEAN, std=augment_lib.CIFAR10_STD,
               batch_size=128, sampler=None, shuffle=True, mix=None, mix_alpha=None,
               shuffle_seed=None, max_test_per_class=None, pipeline="auto", workers=1):
    """CIFAR-10-LT (LDAM-DRW protocol): tfds ``cifar10``, or a local ``folder``.

    ``folder`` is the JPEG/PNG copy (``train/<class>``, ``test/<class>``, read
    by ``image_folder_lt``, which also documents ``shuffle_seed``,
    ``max_test_per_class``, ``pipeline`` and ``workers``), an archive of it, or
    the python batches (``cifar-10-batches-py``). Without ``folder``,
    ``data_dir`` and ``download`` go to ``tfds.load`` (needs TensorFlow;
    ``download=False`` never touches the network, and a download that cannot
    work fails at once). Ratio 100 keeps ``[5000, 2997, ..., 50]`` (12,406).
    """
    # Every argument is forwarded unchanged (locals() holds just the parameters).
    return _tfds_lt("cifar10", name="cifar10_lt", **locals())


def cifar100_lt(imbalance_ratio=100, profile="exp", *, seed=0, folder=None, data_dir=None,
                download=True, class_counts=None, max_count=None, selection="ldam_drw",
                augment="cifar", mean=augment_lib.CIFAR100_MEAN, std=augment_lib.CIFAR100_STD,
                batch_size=128, sampler=None, shuffle=True, mix=None, mix_alpha=None,
                shuffle_seed=None, max_test_per_class=None, pipeline="auto", workers=1):
    """CIFAR-100-LT (fine labels): tfds ``cifar100`` or a ``folder`` (image folders or
    ``cifar-100-python``); ratio 100 keeps 10,847. Arguments: ``cifar10_lt``."""
    # Every argument is forwarded unchanged (locals() holds just the parameters).
    return _tfds_lt("cifar100", name="cifar100_lt", **locals())


def fashion_mnist_lt(imbalance_ratio=100, profile="exp", *, seed=0, idx_dir=None,
                     data_dir=None, download=True, class_counts=None, max_count=None,
                     selection="ldam_drw", mean=None, std=None, batch_size=128, sampler=None,
                     shuffle=True, mix=None, mix_alpha=None, shuffle_seed=None,
                     max_test_per_class=None, pipeline="auto", workers=1):
    """Fashion-MNIST-LT: the four IDX files in ``idx_dir``, or tfds ``fashion_mnist``.

    Images are (28, 28, 1) float32 in ``[0, 1]`` (standardised when ``mean`` /
    ``std`` are given), no augmentation. The tfds route needs TensorFlow;
    ``idx_dir`` works on every pipeline. Other arguments: ``image_folder_lt``.
    """
    pipeline = resolve_pipeline(pipeline)
    if idx_dir is not None:
        (x_train, y_train), (x_test, y_test) = read_fashion_mnist(idx_dir)
        class_names = FASHION_MNIST_CLASSES
    else:
        if pipeline != "tfdata" and not tensorflow_available():
            raise ImportError(
                'fashion_mnist_lt(idx_dir=None) reads tensorflow-datasets, which needs '
                'TensorFlow (pip install "keras-margins[data]"). Without TensorFlow, pass '
                'idx_dir= (the folder of the four IDX files).')
        x_train, y_train, x_test, y_test, class_names = _tfds_train_test(
            "fashion_mnist", data_dir, download, "idx_dir=<the folder of the IDX files>")
    return _train_test(
        x_train, y_train.astype(np.int64), x_test, y_test, name="fashion_mnist_lt",
        class_names=class_names, imbalance_ratio=imbalance_ratio, profile=profile,
        class_counts=class_counts, max_count=max_count, seed=seed, selection=selection,
        augment=None, mean=mean, std=std, size=None, batch_size=batch_size, sampler=sampler,
        cache=False, shuffle=shuffle, mix=mix, mix_alpha=mix_alpha, pipeline=pipeline,
        workers=workers, image_shape=tuple(x_train.shape[1:]), shuffle_seed=shuffle_seed,
        max_test_per_class=max_test_per_class)


# --------------------------------------------------------------------- split files
def split_file_dataset(list_file, image_root, *, training=True, num_classes=None,
                       class_names=None, image_size=224, augment="imagenet", mean=None,
                       std=None, batch_size=256, sampler=None, shuffle=True, seed=0,
                       cache=False, check_files=True, mix=None, mix_alpha=None,
                       pipeline="auto", workers=1):
    """One split of ImageNet-LT / Places-LT / iNaturalist from its list file.

    ``list_file``: ``relative/path label`` lines (plain or ``.gz``) or an
    iNaturalist-2018 COCO-style ``.json``. Images are decoded from
    ``image_root``; ``training`` picks the augmentation (random resized crop +
    flip) or the evaluation transform (resize + centre crop), and shuffles or
    re-samples. Every problem in the list raises a ``ValueError`` naming the
    file and line. On the NumPy path images are decoded per batch with Pillow
    (``cache`` is for tf.data); ``"arrays"`` gives ``(paths, labels)``.

    Returns:
        ``(dataset, info)``: ``info.class_counts`` are this split's counts.
    """
    pipeline = resolve_pipeline(pipeline)
    paths, labels, json_names = read_split(list_file, image_root, num_classes=num_classes,
                                           check_files=check_files)
    num = num_classes or int(labels.max()) + 1
    names = list(class_names or json_names or [str(i) for i in range(num)])
    if len(names) < num:
        raise ValueError(f"{list_file}: labels go up to {num - 1} but only {len(names)} "
                         f"class names were given.")
    counts = class_counts_of(labels, len(names))
    sampler = get_sampler(sampler, seed) if training else None
    if pipeline == "tfdata":
        transform = augment_lib.get_transform(augment, training, mean, std, image_size, seed)
        mix_fn = None
        if training and mix is not None:
            mix_fn = augment_lib.mix_transform(len(names), kind=mix, alpha=mix_alpha,
                                               seed=seed)
        ds = make_pipeline(paths, labels, load=decode_image_fn(3), transform=transform,
                           training=training, batch_size=batch_size, shuffle=shuffle,
                           sampler=sampler, cache=cache, seed=seed, mix=mix_fn)
    elif pipeline == "numpy":
        _numpy_has_no_mix(mix if training else None)
        ds = ArrayBatches(paths, labels, batch_size, shuffle=training and shuffle,
                          sampler=sampler, seed=seed, workers=workers,
                          transform=get_numpy_transform(augment, training, mean, std,
                                                        image_size))
    else:
        ds = (paths, labels)
    info = LongTailInfo(name=os.path.basename(os.fspath(list_file)), class_names=names,
                        class_counts=counts, imbalance_ratio=max(counts) / max(min(counts), 1),
                        seed=seed, image_shape=(image_size, image_size, 3),
                        batch_size=batch_size, train_files=tuple(str(p) for p in paths))
    return ds, info


def split_file_lt(train_list, test_list, image_root, *, num_classes=None, **kwargs):
    """``(train, test, info)`` from a training and a test list (same ``image_root``).

    ``info.class_counts`` are the training counts, ``info.test_counts`` the test
    counts; other keyword arguments (``pipeline`` too) go to ``split_file_dataset``.
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
