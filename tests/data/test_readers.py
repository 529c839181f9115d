"""Readers (keras_margins.data.readers): CIFAR pickles written in temporary folders."""

import pickle

import numpy as np
import pytest

from keras_margins import data
from .helpers import _all_batches, _make_folder, _sorted_rows, _tf_batches


def _write_cifar_pickles(folder, num_classes=10, per_class=6, cifar100=False):
    """Python-CIFAR-format files (dicts of bytes keys, (N, 3072) uint8 rows)."""
    folder.mkdir(parents=True)
    rng = np.random.RandomState(0)

    def batch(labels, offset):
        images = np.zeros((len(labels), 32, 32, 3), "uint8")
        images[..., 0] = (np.arange(len(labels)) + offset)[:, None, None] % 256  # red = id
        images[..., 1] = np.asarray(labels)[:, None, None]                        # green = label
        images[:, :, :, 2] = np.arange(32)[None, None, :]                         # blue = column
        rows = images.transpose(0, 3, 1, 2).reshape(len(labels), 3072)
        key = b"fine_labels" if cifar100 else b"labels"
        return {b"data": rows, key: list(map(int, labels)), b"coarse_labels": [0] * len(labels)}
    train = rng.permutation(np.repeat(np.arange(num_classes), per_class))
    test = np.repeat(np.arange(num_classes), 2)
    names = [f"class_{c}".encode() for c in range(num_classes)]
    if cifar100:
        files = {"train": batch(train, 0), "test": batch(test, 1000),
                 "meta": {b"fine_label_names": names, b"coarse_label_names": [b"all"]}}
    else:
        parts = np.array_split(train, 5)
        files = {f"data_batch_{i + 1}": batch(part, 100 * i) for i, part in enumerate(parts)}
        files.update(test_batch=batch(test, 1000), **{"batches.meta": {b"label_names": names}})
    for name, content in files.items():
        with open(folder / name, "wb") as handle:
            pickle.dump(content, handle, protocol=2)
    return train, test


def test_read_cifar_pickles_and_build_from_them(tmp_path):
    train, test = _write_cifar_pickles(tmp_path / "cifar-10-batches-py")
    (x, y), (x_test, y_test), names = data.read_cifar_batches(tmp_path / "cifar-10-batches-py")
    assert x.shape == (60, 32, 32, 3) and x.dtype == np.uint8 and names[3] == "class_3"
    np.testing.assert_array_equal(y, train)
    np.testing.assert_array_equal(x[:, 0, 0, 1], train)            # channels-last, in order
    np.testing.assert_array_equal(x[0, 5, :, 2], np.arange(32))    # rows of 32 columns
    np.testing.assert_array_equal(y_test, test)
    kwargs = dict(imbalance_ratio=3, max_count=6, augment=None, batch_size=8)
    tf_train, _, tf_info = data.cifar10_lt(folder=tmp_path / "cifar-10-batches-py",
                                           pipeline="tfdata", **kwargs)
    (x_sel, y_sel), (x_t, y_t), info = data.cifar10_lt(folder=tmp_path / "cifar-10-batches-py",
                                                       pipeline="arrays", **kwargs)
    assert info == tf_info and info.class_names[0] == "class_0" and info.name == "cifar10_lt"
    keep = data.subsample_indices(train, info.class_counts, seed=0)
    np.testing.assert_array_equal(x_sel, x[keep])
    np.testing.assert_array_equal(y_t, test)
    np_train, _, _ = data.cifar10_lt(folder=tmp_path / "cifar-10-batches-py",
                                     pipeline="numpy", **kwargs)
    np.testing.assert_allclose(_sorted_rows(_all_batches(np_train)[0]),
                               _sorted_rows(_tf_batches(tf_train)[0]), atol=1e-5)
    _write_cifar_pickles(tmp_path / "cifar-100-python", num_classes=100, per_class=2,
                         cifar100=True)
    _, _, info100 = data.cifar100_lt(folder=tmp_path / "cifar-100-python", imbalance_ratio=2,
                                     max_count=2, pipeline="numpy")
    assert info100.num_classes == 100 and info100.class_names[99] == "class_99"
    with pytest.raises(ValueError, match="holds the python CIFAR-10, expected CIFAR-100"):
        data.cifar100_lt(folder=tmp_path / "cifar-10-batches-py", pipeline="numpy")


def test_cifar_pickles_refuse_code_and_name_missing_files(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar_pickles(folder)

    class Payload:
        def __reduce__(self):
            return (print, ("unpickled code ran",))
    with open(folder / "data_batch_3", "wb") as handle:
        pickle.dump(Payload(), handle, protocol=2)
    with pytest.raises(ValueError, match=r"data_batch_3: .*unexpected object .*print"):
        data.read_cifar_batches(folder)
    (folder / "test_batch").unlink()
    with pytest.raises(ValueError, match=r"is not a python CIFAR folder: expected the files "
                                         r"data_batch_1, .*test_batch"):
        data.read_cifar_batches(folder)


def test_cifar_folder_errors(tmp_path):
    classes = [f"c{i}" for i in range(10)]
    small = tmp_path / "small"
    _make_folder(small / "train", classes, per_class=1)
    _make_folder(small / "test", classes, per_class=1)
    for pipeline in ("numpy", "tfdata"):
        with pytest.raises(ValueError, match=r"train is not CIFAR-10-shaped: expected 32x32 "
                                             r"images, .*00\.png is 8x8"):
            data.cifar10_lt(folder=small, pipeline=pipeline)
    flat = tmp_path / "flat"
    _make_folder(flat, classes, per_class=1, size=(32, 32))
    with pytest.raises(ValueError, match=r"flat is not a CIFAR-10 folder: expected train/<class>/"
                                         r" and test/<class>/ .*found \['c0', 'c1'"):
        data.cifar10_lt(folder=flat, pipeline="numpy")
    few = tmp_path / "few"
    _make_folder(few / "train", classes[:3], per_class=1, size=(32, 32))
    _make_folder(few / "test", classes[:3], per_class=1, size=(32, 32))
    with pytest.raises(ValueError, match="expected 10 class folders, found 3"):
        data.cifar10_lt(folder=few, pipeline="numpy")
    parent = tmp_path / "datasets"
    (parent / "cifar10").mkdir(parents=True)
    (parent / "fashion-mnist").mkdir()
    with pytest.raises(ValueError, match=r"Did you mean .*datasets/cifar10\?"):
        data.cifar10_lt(folder=parent, pipeline="numpy")
    with pytest.raises(ValueError, match=r"CIFAR-10 folder not found: .*missing"):
        data.cifar10_lt(folder=tmp_path / "missing", pipeline="numpy")
    with pytest.raises(ValueError, match=r"Fashion-MNIST file .* not found .*Did you mean "
                                         r".*fashion-mnist\?"):
        data.fashion_mnist_lt(idx_dir=parent, pipeline="numpy")
