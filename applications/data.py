"""Long-tailed data for the applications, as numpy arrays (backend-neutral).

Datasets (``load_dataset(name, ...)``):

* ``fashion-mnist-lt``: the IDX files in ``<data_dir>/fashion-mnist``
  (../shared/datasets), 28x28x1; ``img_max = 6000``.
* ``cifar10-lt``: the CIFAR-10 JPEG copy in ``<data_dir>/cifar10`` (the
  ``cifar10-jpeg.tar.gz`` archive, read in place, or its extracted
  ``train/`` and ``test/`` folders), 32x32x3; ``img_max = 5000``.
* ``digits-lt``: scikit-learn's bundled 8x8 digits (offline smoke runs),
  half of each class for training (before subsampling), half for testing.

Training sets are subsampled with the LDAM-DRW rule: per-class counts
``n_i = int(img_max * (1/ratio)^(i/(C-1)))`` (exponential) or the step profile,
and, per class in class order, ``idx = np.where(y == c)[0]; shuffle; idx[:n_c]``
with one ``RandomState(seed)`` (seed 0 reproduces the authors' subset on
class-ordered data). Test sets stay balanced. Images are float32, standardised
per channel with the training statistics of the full dataset.

``keras_margins.data.long_tail_counts`` is used for the counts when it is
available, so the applications and the library agree by construction.
"""

import gzip
import io
import os
import pathlib
import tarfile
from dataclasses import dataclass, field

import keras
import numpy as np

__all__ = ["LongTailedData", "load_dataset", "long_tail_counts", "ldam_subsample",
           "read_idx", "TrainSequence", "DATASETS", "default_data_dir"]

DATASETS = ("fashion-mnist-lt", "cifar10-lt", "digits-lt")

FASHION_MNIST_CLASSES = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal",
                         "shirt", "sneaker", "bag", "ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]
# Published per-channel statistics (the LDAM-DRW code's normalisation).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)


def default_data_dir():
    """``$KERAS_MARGINS_DATA`` or ``../shared/datasets`` beside the checkout."""
    env = os.environ.get("KERAS_MARGINS_DATA")
    if env:
        return pathlib.Path(env)
    shared = os.environ.get("KERAS_MARGINS_SHARED")
    if shared:
        return pathlib.Path(shared) / "datasets"
    return pathlib.Path(__file__).resolve().parents[2] / "shared" / "datasets"


@dataclass
class LongTailedData:
    """Arrays and metadata of one long-tailed dataset."""
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list
    class_counts: list
    augment: str = "none"          # "cifar" = pad 4, random crop, horizontal flip
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])


def long_tail_counts(num_classes, max_count, imbalance_ratio, profile="exp"):
    """Per-class counts of the LDAM-DRW generator (library version if present)."""
    try:
        from keras_margins.data import long_tail_counts as library_counts
    except ImportError:
        library_counts = None
    if library_counts is not None:
        return [int(n) for n in library_counts(num_classes, max_count, imbalance_ratio,
                                               profile=profile)]
    if imbalance_ratio < 1:
        raise ValueError(f"`imbalance_ratio` must be >= 1, received {imbalance_ratio!r}.")
    if profile == "exp":
        return [int(max_count * (1.0 / imbalance_ratio) ** (i / (num_classes - 1.0)))
                for i in range(num_classes)]
    if profile == "step":
        half = num_classes // 2
        return [int(max_count)] * half + [int(max_count / imbalance_ratio)] * (
            num_classes - half)
    raise ValueError(f"`profile` must be 'exp' or 'step', received {profile!r}.")


def ldam_subsample(labels, counts, seed=0):
    """Indices of the LDAM-DRW subset: per class (in class order) a shuffled
    ``np.where(labels == c)[0]`` cut to ``counts[c]``, one RandomState(seed)."""
    rng = np.random.RandomState(seed)
    chosen = []
    for c, n in enumerate(counts):
        idx = np.flatnonzero(labels == c)
        if n > idx.size:
            raise ValueError(f"class {c} has {idx.size} examples, fewer than the {n} "
                             f"requested by the long-tailed profile.")
        rng.shuffle(idx)
        chosen.append(idx[:n])
    return np.concatenate(chosen)


def read_idx(path):
    """An IDX (optionally gzip) file as a numpy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _standardise(x, mean, std):
    x = x.astype("float32") / 255.0
    return (x - np.asarray(mean, "float32")) / np.asarray(std, "float32")


def _cap(indices, labels, max_per_class):
    """The first ``max_per_class`` of each class among ``indices`` (smoke runs).

    For training sets (``max_per_class`` a float in (0, 1)) it keeps the first
    ``ceil(fraction * n_c)`` of each class instead, so the subset stays long-tailed.
    """
    if not max_per_class:
        return indices
    keep = []
    for c in np.unique(labels):
        members = indices[labels[indices] == c]
        if isinstance(max_per_class, float) and max_per_class < 1:
            keep.append(members[:int(np.ceil(max_per_class * members.size))])
        else:
            keep.append(members[:int(max_per_class)])
    return np.concatenate(keep)


def _require(path, what):
    if not pathlib.Path(path).exists():
        raise FileNotFoundError(f"{what} not found at {path}; pass --data-dir (the folder "
                                f"holding fashion-mnist/ and cifar10/, e.g. ../shared/datasets).")
    return pathlib.Path(path)


def _fashion_mnist(data_dir, counts, seed, max_per_class, train_fraction):
    folder = _require(pathlib.Path(data_dir) / "fashion-mnist", "Fashion-MNIST IDX files")
    x_train = read_idx(folder / "train-images-idx3-ubyte.gz")
    y_train = read_idx(folder / "train-labels-idx1-ubyte.gz").astype("int32")
    x_test = read_idx(folder / "t10k-images-idx3-ubyte.gz")
    y_test = read_idx(folder / "t10k-labels-idx1-ubyte.gz").astype("int32")
    train = _cap(ldam_subsample(y_train, counts, seed), y_train, train_fraction)
    test = _cap(np.arange(y_test.size), y_test, max_per_class)
    return (_standardise(x_train[train][..., None], FASHION_MNIST_MEAN, FASHION_MNIST_STD),
            y_train[train],
            _standardise(x_test[test][..., None], FASHION_MNIST_MEAN, FASHION_MNIST_STD),
            y_test[test])


def _cifar10_files(root):
    """``{split: [(class_index, number, key)]}`` and ``key -> reader`` from the
    extracted folders or the archive (read once, in place)."""
    root = pathlib.Path(root)
    rows = {"train": [], "test": []}
    if (root / "train").is_dir():
        for split in rows:
            for c, name in enumerate(CIFAR10_CLASSES):
                for path in sorted((root / split / name).glob("*.jpg")):
                    rows[split].append((c, int(path.stem), str(path)))
        return rows, lambda key: open(key, "rb").read()
    archive = _require(root / "cifar10-jpeg.tar.gz", "CIFAR-10 JPEG archive")
    contents = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 3 and parts[2].endswith(".jpg"):
                contents[member.name] = tar.extractfile(member).read()
                rows[parts[0]].append((CIFAR10_CLASSES.index(parts[1]),
                                       int(parts[2][:-4]), member.name))
    return rows, contents.__getitem__


def _cifar10(data_dir, counts, seed, max_per_class, train_fraction):
    from PIL import Image
    rows, read = _cifar10_files(pathlib.Path(data_dir) / "cifar10")
    arrays = []
    for split in ("train", "test"):
        ordered = sorted(rows[split])                         # class, then file number
        labels = np.asarray([c for c, _, _ in ordered], "int32")
        if split == "train":
            index = _cap(ldam_subsample(labels, counts, seed), labels, train_fraction)
        else:
            index = _cap(np.arange(labels.size), labels, max_per_class)
        images = np.stack([np.asarray(Image.open(io.BytesIO(read(ordered[i][2]))).convert(
            "RGB")) for i in index])
        arrays += [_standardise(images, CIFAR10_MEAN, CIFAR10_STD), labels[index]]
    return tuple(arrays)


def _digits(counts, seed, max_per_class, train_fraction):
    from sklearn.datasets import load_digits
    digits = load_digits()
    images = (digits.images.astype("float32") / 16.0)[..., None]
    labels = digits.target.astype("int32")
    rng = np.random.RandomState(1234)
    train_pool, test = [], []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        half = idx.size // 2
        train_pool.append(idx[:half])
        test.append(idx[half: half + 80])
    train_pool = np.concatenate(train_pool)
    test = _cap(np.concatenate(test), labels, max_per_class)
    train = train_pool[ldam_subsample(labels[train_pool], counts, seed)]
    train = _cap(train, labels, train_fraction)
    mean, std = float(images[train_pool].mean()), float(images[train_pool].std())
    return ((images[train] - mean) / std, labels[train], (images[test] - mean) / std,
            labels[test])


def load_dataset(name, data_dir=None, imbalance_ratio=100.0, profile="exp", seed=0,
                 max_per_class=None, train_fraction=None):
    """Loads a long-tailed training set and its balanced test set.

    Args:
        name: one of ``DATASETS``.
        data_dir: folder with ``fashion-mnist/`` and ``cifar10/`` (default
            ``default_data_dir()``).
        imbalance_ratio: largest / smallest class count (100).
        profile: ``"exp"`` or ``"step"``.
        seed: seed of the subset selection (0 = the LDAM-DRW code's subset).
        max_per_class: keep at most this many test images per class (smoke runs).
        train_fraction: keep the first ``ceil(fraction * n_c)`` training images
            of each class (smoke runs; the subset stays long-tailed). The
            returned ``class_counts`` are always the actual training counts.
    """
    data_dir = pathlib.Path(data_dir) if data_dir else default_data_dir()
    if name == "fashion-mnist-lt":
        counts = long_tail_counts(10, 6000, imbalance_ratio, profile)
        arrays = _fashion_mnist(data_dir, counts, seed, max_per_class, train_fraction)
        names, augment = FASHION_MNIST_CLASSES, "none"
    elif name == "cifar10-lt":
        counts = long_tail_counts(10, 5000, imbalance_ratio, profile)
        arrays = _cifar10(data_dir, counts, seed, max_per_class, train_fraction)
        names, augment = CIFAR10_CLASSES, "cifar"
    elif name == "digits-lt":
        counts = long_tail_counts(10, 87, imbalance_ratio, profile)
        if min(counts) < 1:
            raise ValueError(f"imbalance ratio {imbalance_ratio} leaves a class of {name} "
                             f"empty (counts {counts}); use a ratio <= 87 (10 is usual).")
        arrays = _digits(counts, seed, max_per_class, train_fraction)
        names, augment = [str(i) for i in range(10)], "none"
    else:
        raise ValueError(f"`dataset` must be one of {DATASETS}, received {name!r}.")
    if min(counts) < 1:
        raise ValueError(f"imbalance ratio {imbalance_ratio} leaves a class of {name} "
                         f"empty (counts {counts}); use a smaller ratio.")
    x_train, y_train, x_test, y_test = arrays
    actual = np.bincount(y_train, minlength=len(names)).astype(int).tolist()
    return LongTailedData(name, x_train, y_train, x_test, y_test, list(names), actual,
                          augment, info={"profile_counts": counts,
                                         "imbalance_ratio": imbalance_ratio,
                                         "profile": profile, "data_dir": str(data_dir)})


def cifar_augment(images, rng, pad=4):
    """Pad ``pad`` (zeros), random crop back to the input size, random
    horizontal flip: the CIFAR recipe of the papers, on a numpy batch."""
    batch, height, width, _ = images.shape
    padded = np.pad(images, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    tops = rng.randint(0, 2 * pad + 1, batch)
    lefts = rng.randint(0, 2 * pad + 1, batch)
    flips = rng.rand(batch) < 0.5
    out = np.empty_like(images)
    for i in range(batch):
        crop = padded[i, tops[i]:tops[i] + height, lefts[i]:lefts[i] + width]
        out[i] = crop[:, ::-1] if flips[i] else crop
    return out


class TrainSequence(keras.utils.PyDataset):
    """Shuffled (and optionally augmented) training batches from numpy arrays.

    Reshuffles every epoch from ``seed``; ``max_steps`` caps the batches per
    epoch (smoke runs). Works with ``fit`` on every backend.
    """

    def __init__(self, x, y, batch_size, seed=0, augment="none", max_steps=None, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.augment = augment
        self.rng = np.random.RandomState(seed)
        self.steps = int(np.ceil(len(x) / self.batch_size))
        if max_steps:
            self.steps = min(self.steps, int(max_steps))
        self.order = self.rng.permutation(len(x))

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        x = self.x[rows]
        if self.augment == "cifar":
            x = cifar_augment(x, self.rng)
        return x, self.y[rows]

    def on_epoch_end(self):
        self.order = self.rng.permutation(len(self.x))
