"""TensorFlow-free readers: image files (Pillow), image folders, CIFAR pickles, IDX files.

Everything here returns NumPy arrays: ``uint8`` images of shape
``(N, H, W, C)`` and ``int64`` labels, ready for ``keras_margins.data.arrays_lt``
or ``keras_margins.data.ArrayBatches``. Image files are decoded with Pillow
in a thread pool (Pillow releases the GIL while decoding); split lists
(``read_split``) and folder listings (``list_image_folder``) need no decoding.
"""

import concurrent.futures
import gzip
import os
import pathlib
import pickle

import numpy as np

from keras_margins.data._imports import import_pil_image
from keras_margins.data.folders import list_image_folder

__all__ = ["read_idx", "read_fashion_mnist", "read_image", "read_images", "read_image_folder",
           "read_cifar_batches", "image_size_of", "CIFAR_PICKLE_FILES"]

# The files of the python versions of CIFAR (cifar-10-batches-py, cifar-100-python).
CIFAR_PICKLE_FILES = {
    "cifar10": ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                "data_batch_5", "test_batch", "batches.meta"),
    "cifar100": ("train", "test", "meta"),
}
_FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_PIL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


# --------------------------------------------------------------------- IDX files
def read_idx(path):
    """Reads an IDX file (``.gz`` or plain) into a numpy array."""
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


def did_you_mean(folder, matches):
    """`` Did you mean <child>?`` for the children of ``folder`` that ``matches`` accepts."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        return ""
    hits = sorted(str(child) for child in folder.iterdir() if matches(child.name))
    return f" Did you mean {' or '.join(hits[:3])}?" if hits else ""


def read_fashion_mnist(idx_dir):
    """The four Fashion-MNIST IDX files of ``idx_dir`` (``.gz`` or plain).

    Returns:
        ``((x_train, y_train), (x_test, y_test))``: uint8 images
        ``(N, 28, 28, 1)`` and int64 labels.
    """
    idx_dir = os.fspath(idx_dir)

    def find(stem):
        for candidate in (stem + ".gz", stem):
            if os.path.isfile(os.path.join(idx_dir, candidate)):
                return os.path.join(idx_dir, candidate)
        hint = did_you_mean(idx_dir, lambda name: "fashion" in name.lower())
        raise ValueError(f"Fashion-MNIST file {stem}[.gz] not found in {idx_dir} (expected "
                         f"the four IDX files {', '.join(_FASHION_MNIST_FILES)}).{hint}")
    x_train, y_train, x_test, y_test = (read_idx(find(stem)) for stem in _FASHION_MNIST_FILES)
    return ((x_train[..., None], y_train.astype(np.int64)),
            (x_test[..., None], y_test.astype(np.int64)))


# ------------------------------------------------------------------- image files
def _size_pair(size):
    if size is None:
        return None
    height, width = (size, size) if np.isscalar(size) else size
    return int(height), int(width)


def image_size_of(path):
    """``(height, width)`` of an image file, from its header (Pillow, no decoding)."""
    image_lib = import_pil_image()
    try:
        with image_lib.open(path) as image:
            width, height = image.size
    except (OSError, SyntaxError) as error:
        raise ValueError(f"unreadable image file {path}: {error}") from None
    return height, width


def read_image(path, channels=3, size=None):
    """Decodes one image file with Pillow into ``uint8 (H, W, channels)``.

    Args:
        path: a JPEG/PNG/BMP/GIF file (the first frame of an animation).
        channels: 1 (grey), 3 (RGB) or 4 (RGBA); other modes are converted.
        size: ``(height, width)`` (or one int): resize (bilinear) when the image
            has another size; ``None`` keeps the decoded size.
    """
    if channels not in _PIL_MODES:
        raise ValueError(f"`channels` must be 1, 3 or 4, received {channels!r}.")
    image_lib = import_pil_image()
    size = _size_pair(size)
    try:
        with image_lib.open(path) as image:
            image = image.convert(_PIL_MODES[channels])
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), image_lib.BILINEAR)
            pixels = np.asarray(image, dtype=np.uint8)
    except FileNotFoundError:
        raise ValueError(f"image file not found: {path}") from None
    except (OSError, SyntaxError) as error:
        raise ValueError(f"unreadable image file {path}: {error}") from None
    return pixels[..., None] if pixels.ndim == 2 else pixels


def read_images(paths, channels=3, size=None, workers=None):
    """Decodes image files into one ``uint8 (N, H, W, channels)`` array, in threads.

    Args:
        paths: the image files (their order is the array's).
        channels, size: see ``read_image``; with ``size=None`` every image must
            have the size of the first, else a ``ValueError`` names both files.
        workers: decoding threads (default: the number of CPUs, at most 16).
    """
    paths = [os.fspath(p) for p in np.asarray(paths, dtype=object).reshape(-1)]
    if not paths:
        raise ValueError("no image files to read (received an empty list of paths).")
    first = read_image(paths[0], channels, size)
    out = np.empty((len(paths),) + first.shape, dtype=np.uint8)
    out[0] = first

    def decode(i):
        image = read_image(paths[i], channels, size)
        if image.shape != first.shape:
            raise ValueError(f"images of different sizes: {paths[0]} is "
                             f"{first.shape[0]}x{first.shape[1]}, {paths[i]} is "
                             f"{image.shape[0]}x{image.shape[1]}; pass a size "
                             f"(image_size=(height, width)) to resize them.")
        out[i] = image

    workers = workers or min(16, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(max(1, int(workers))) as pool:
        for _ in pool.map(decode, range(1, len(paths))):
            pass
    return out


def read_image_folder(root, class_names=None, channels=3, size=None, workers=None):
    """Decodes an image folder (``root/<class>/<image>``) into arrays.

    Classes and order are those of ``list_image_folder`` (sorted folder names,
    files sorted within a class). Returns ``(images, labels, class_names)``:
    uint8 ``(N, H, W, channels)``, int64 ``(N,)`` and the list of names.
    """
    paths, labels, names = list_image_folder(root, class_names=class_names)
    return read_images(paths, channels, size, workers), labels, names


# ----------------------------------------------------------------- CIFAR pickles
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and NumPy arrays only (no arbitrary code)."""

    _ALLOWED = {("multiarray", "_reconstruct"), ("multiarray", "scalar"),
                ("numeric", "_frombuffer"), ("numpy", "ndarray"), ("numpy", "dtype"),
                ("_codecs", "encode")}  # bytes pickled by Python 3 at protocol 2

    def find_class(self, module, name):
        # numpy 1 writes numpy.core.*, numpy 2 numpy._core.* (numpy.core warns there).
        tail = module.rsplit(".", 1)[-1]
        if module.startswith(("numpy.core", "numpy._core")) and (tail, name) in self._ALLOWED:
            core = "numpy._core" if hasattr(np, "_core") else "numpy.core"
            return super().find_class(f"{core}.{tail}", name)
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR batch file")


def _load_batch(path):
    try:
        with open(path, "rb") as handle:
            batch = _ArrayUnpickler(handle, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as error:
        raise ValueError(f"unreadable CIFAR batch file {path}: {error}") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a pickled dict, found {type(batch).__name__}.")
    return {key.decode() if isinstance(key, bytes) else key: value
            for key, value in batch.items()}


def _batch_arrays(path, label_key):
    batch = _load_batch(path)
    if "data" not in batch or label_key not in batch:
        raise ValueError(f"{path}: expected the keys 'data' and {label_key!r}, found "
                         f"{sorted(batch)}.")
    data = np.asarray(batch["data"], dtype=np.uint8)
    labels = np.asarray(batch[label_key], dtype=np.int64).reshape(-1)
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise ValueError(f"{path}: expected 'data' of shape (N, 3072) and N labels, found "
                         f"{data.shape} and {labels.shape}.")
    # Rows are 1024 red, 1024 green, 1024 blue values, each 32x32 in row order.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _names(values):
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def cifar_pickle_kind(folder):
    """``"cifar10"``, ``"cifar100"`` or ``None``: which python CIFAR ``folder`` holds."""
    folder = pathlib.Path(folder)
    for kind, files in CIFAR_PICKLE_FILES.items():
        if all((folder / name).is_file() for name in files):
            return kind
    return None


def read_cifar_batches(folder, label_mode="fine"):
    """Reads the python version of CIFAR-10 or CIFAR-100 (pickled batches).

    ``folder`` is ``cifar-10-batches-py`` (``data_batch_1`` ... ``data_batch_5``,
    ``test_batch``, ``batches.meta``) or ``cifar-100-python`` (``train``,
    ``test``, ``meta``). Only dicts, lists and arrays are unpickled.

    Args:
        folder: one of the two folders above.
        label_mode: CIFAR-100 labels, ``"fine"`` (100 classes) or ``"coarse"`` (20).

    Returns:
        ``((x_train, y_train), (x_test, y_test), class_names)``: uint8 images
        ``(N, 32, 32, 3)`` in the files' order, int64 labels.
    """
    folder = pathlib.Path(folder)
    kind = cifar_pickle_kind(folder)
    if kind is None:
        expected = " or ".join(", ".join(files) for files in CIFAR_PICKLE_FILES.values())
        found = sorted(p.name for p in folder.iterdir())[:10] if folder.is_dir() else "nothing"
        raise ValueError(f"{folder} is not a python CIFAR folder: expected the files "
                         f"{expected}; found {found}.")
    if label_mode not in ("fine", "coarse"):
        raise ValueError(f"`label_mode` must be 'fine' or 'coarse', received {label_mode!r}.")
    if kind == "cifar10":
        parts = [_batch_arrays(folder / f"data_batch_{i}", "labels") for i in range(1, 6)]
        x_train = np.concatenate([x for x, _ in parts])
        y_train = np.concatenate([y for _, y in parts])
        x_test, y_test = _batch_arrays(folder / "test_batch", "labels")
        names = _names(_load_batch(folder / "batches.meta").get("label_names", []))
    else:
        label_key = f"{label_mode}_labels"
        x_train, y_train = _batch_arrays(folder / "train", label_key)
        x_test, y_test = _batch_arrays(folder / "test", label_key)
        names = _names(_load_batch(folder / "meta").get(f"{label_mode}_label_names", []))
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    if len(names) < num_classes:
        names = [str(i) for i in range(num_classes)]
    return (x_train, y_train), (x_test, y_test), names
