"""Builders (keras_margins.data.builders): tfds builders offline with
tfds.testing.mock_data (never reaching the network), the same subset from every
pipeline, image folders on the NumPy path, bad arrays and arguments, the network
check.
"""

import socket

import keras
import numpy as np
import pytest

from keras_margins import data
from keras_margins.data import builders, numpy_augment
from .helpers import _all_batches, _images, _make_folder, _sorted_rows, _tf_batches, _write_image


@pytest.fixture(scope="module")
def tfds():
    import tensorflow_datasets
    return tensorflow_datasets


@pytest.mark.parametrize("builder, num_examples, max_count, ratio, num_classes, first_name", [
    ("cifar10_lt", 300, 10, 10, 10, "airplane"),
    ("cifar100_lt", 1200, 4, 4, 100, None),
    ("fashion_mnist_lt", 300, 10, 5, 10, "T-shirt/top"),
])
def test_tfds_builders_offline(tfds, tmp_path, builder, num_examples, max_count, ratio,
                               num_classes, first_name):
    from keras_margins import data

    with tfds.testing.mock_data(num_examples=num_examples):
        train_ds, test_ds, info = getattr(data, builder)(
            ratio, data_dir=str(tmp_path), download=False, max_count=max_count, batch_size=16)
        assert info.class_counts == data.long_tail_counts(num_classes, max_count, ratio)
        assert info.num_classes == num_classes and len(info.class_names) == num_classes
        assert first_name is None or info.class_names[0] == first_name
        assert info.test_size == num_examples
        assert int(train_ds.cardinality()) == -(-info.train_size // 16)
        assert int(test_ds.cardinality()) == -(-num_examples // 16)
        labels = np.concatenate([y for _, y in train_ds.as_numpy_iterator()])
        assert np.bincount(labels, minlength=num_classes).tolist() == info.class_counts
        x, _ = next(iter(test_ds))
        channels = 1 if builder == "fashion_mnist_lt" else 3
        size = 28 if builder == "fashion_mnist_lt" else 32
        assert tuple(x.shape) == (16, size, size, channels)
        assert np.all(np.isfinite(np.asarray(x)))


def test_arrays_lt_and_subsample_match(tfds):
    from keras_margins import data

    rng = np.random.RandomState(0)
    y = rng.permutation(np.repeat(np.arange(5), 40))
    x = rng.randint(0, 255, (200, 6, 6, 3)).astype("uint8")
    train_ds, test_ds, info = data.arrays_lt(x, y, x[:50], y[:50], imbalance_ratio=8,
                                             augment=None, batch_size=200, seed=4)
    assert info.class_counts == data.long_tail_counts(5, 40, 8)
    images, labels = next(iter(train_ds))
    expected_x, _ = data.subsample_arrays(x, y, info.class_counts, seed=4)
    got = np.sort(np.round(np.asarray(images) * 255).reshape(len(labels), -1), axis=0)
    np.testing.assert_array_equal(got, np.sort(expected_x.reshape(len(labels), -1), axis=0))


# ----------------------------------------------------------- same subset, any pipeline

def test_numpy_and_tfdata_pipelines_select_the_same_subset():
    rng = np.random.RandomState(0)
    y = rng.permutation(np.repeat(np.arange(5), 40))
    x = _images(200, seed=1)
    y_test = np.repeat(np.arange(5), 7)
    x_test = _images(35, seed=2)
    kwargs = dict(imbalance_ratio=8, augment=None, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.25),
                  batch_size=16, seed=4, max_test_per_class=5)
    tf_train, tf_test, tf_info = data.arrays_lt(x, y, x_test, y_test, pipeline="tfdata", **kwargs)
    np_train, np_test, np_info = data.arrays_lt(x, y, x_test, y_test, pipeline="numpy", **kwargs)
    (x_sel, y_sel), (x_kept, y_kept), info = data.arrays_lt(x, y, x_test, y_test,
                                                            pipeline="arrays", **kwargs)
    assert np_info == tf_info == info
    assert isinstance(np_train, data.ArrayBatches)
    assert isinstance(np_train, keras.utils.PyDataset)
    # The selection is subsample_indices' (the LDAM-DRW rule), in its order.
    keep = data.subsample_indices(y, info.class_counts, seed=4)
    np.testing.assert_array_equal(x_sel, x[keep])
    np.testing.assert_array_equal(y_sel, y[keep])
    # Training sets: the same images (in another order), normalised the same way.
    tf_x, tf_y = _tf_batches(tf_train)
    np_x, np_y = _all_batches(np_train)
    assert np_x.dtype == np.float32 and np_y.dtype == np.int32
    np.testing.assert_allclose(_sorted_rows(np_x), _sorted_rows(tf_x), atol=1e-5)
    assert sorted(np_y.tolist()) == sorted(tf_y.tolist()) == sorted(y_sel.tolist())
    # Test sets: the same images and labels in the same order (first 5 per class).
    tf_tx, tf_ty = _tf_batches(tf_test)
    np_tx, np_ty = _all_batches(np_test)
    np.testing.assert_array_equal(np_ty, tf_ty)
    np.testing.assert_array_equal(np_ty, y_kept)
    np.testing.assert_allclose(np_tx, tf_tx, atol=1e-5)
    assert len(np_test) == 2 and len(np_test[1][1]) == 25 - 16  # last partial batch kept


def test_auto_pipeline_is_tfdata_when_tensorflow_imports():
    assert data.resolve_pipeline("auto") == "tfdata"  # TensorFlow is installed for the suite
    assert data.resolve_pipeline("numpy") == "numpy"
    with pytest.raises(ValueError, match=r"`pipeline` must be one of .*received 'torch'"):
        data.resolve_pipeline("torch")


# ------------------------------------------------------------------ bad arrays

@pytest.mark.parametrize("x, y, message", [
    (np.zeros((10, 4, 4, 1), "uint8"), np.zeros(9, int),
     r"`x_train` and `y_train` differ in length: 10 images, 9 labels"),
    (np.zeros(10, "uint8"), np.zeros(10, int), r"`x_train` must be an array of images .*\(10,\)"),
    (np.zeros((10, 4, 4, 1), "uint8"), np.eye(5)[np.arange(10) % 5],
     r"`y_train` must hold integer class ids of shape \(N,\), received shape \(10, 5\) "
     r"\(one-hot labels\?"),
])
def test_arrays_lt_rejects_bad_arrays(x, y, message):
    for pipeline in ("numpy", "tfdata"):
        with pytest.raises(ValueError, match=message):
            data.arrays_lt(x, y, imbalance_ratio=1, pipeline=pipeline)


def test_bad_arguments_of_the_numpy_path(tmp_path):
    x, y = _images(8), np.arange(8) % 2
    with pytest.raises(ValueError, match="both `x_test` and `y_test`"):
        data.arrays_lt(x, y, x, None, imbalance_ratio=1, pipeline="numpy")
    with pytest.raises(ValueError, match=r"mix='mixup' .* only on the tf\.data pipeline"):
        data.arrays_lt(x, y, imbalance_ratio=1, mix="mixup", pipeline="numpy")
    with pytest.raises(ValueError, match="differ in length: 8 != 7"):
        data.ArrayBatches(x, y[:7])
    with pytest.raises(ValueError, match=r"`labels` must be integer class ids of shape \(N,\)"):
        data.ArrayBatches(x, np.eye(2)[y])
    with pytest.raises(ValueError, match="`batch_size` must be an integer >= 1"):
        data.ArrayBatches(x, y, 0)
    with pytest.raises(ValueError, match="`max_batches` must be an integer >= 1 or None"):
        data.ArrayBatches(x, y, max_batches=0)
    with pytest.raises(ValueError, match="`seed` must be an integer >= 0"):
        data.ArrayBatches(x, y, seed=-1)
    with pytest.raises(ValueError, match=r"image file not found: .*nothing\.jpg"):
        data.read_image(tmp_path / "nothing.jpg")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(ValueError, match=r"unreadable image file .*text\.jpg"):
        data.read_images([tmp_path / "text.jpg"])
    with pytest.raises(ValueError, match="differ in size"):
        numpy_augment.stack_images([_images(1)[0], _images(1, (5, 6, 3))[0]])


# ------------------------------------------------------------------- tfds offline

def test_tfds_download_without_network_fails_at_once(monkeypatch, tmp_path):
    import tensorflow_datasets as tfds

    def no_load(*args, **kwargs):
        raise AssertionError("tfds.load must not be reached")
    monkeypatch.setattr(tfds, "load", no_load)
    checked = []
    monkeypatch.setattr(builders, "_host_reachable",
                        lambda host, port, timeout=2.0: checked.append(host) or False)
    with pytest.raises(ConnectionError, match=r"has not prepared 'cifar10' in .*cannot download "
                                              r"it \(www\.cs\.toronto\.edu:443 is unreachable"
                                              r".*folder="):
        data.cifar10_lt(data_dir=str(tmp_path))
    with pytest.raises(ConnectionError, match=r"'fashion_mnist'.*idx_dir="):
        data.fashion_mnist_lt(data_dir=str(tmp_path))
    assert checked == ["www.cs.toronto.edu",
                       "fashion-mnist.s3-website.eu-central-1.amazonaws.com"]


def test_tfds_arrays_feed_the_numpy_path_when_tensorflow_is_there(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=60):
        results = [data.cifar10_lt(5, data_dir=str(tmp_path), download=False, max_count=5,
                                   batch_size=16, pipeline=pipeline)
                   for pipeline in ("tfdata", "numpy")]
    (tf_train, tf_test, tf_info), (np_train, np_test, np_info) = results
    assert np_info == tf_info and isinstance(np_train, data.ArrayBatches)
    assert len(np_train) == int(tf_train.cardinality()) and len(np_test) == 4
    np.testing.assert_array_equal(_all_batches(np_test)[1], _tf_batches(tf_test)[1])
    np.testing.assert_allclose(_all_batches(np_test)[0], _tf_batches(tf_test)[0], atol=1e-5)


def test_prepared_tfds_data_skips_the_network_check(monkeypatch):
    import tensorflow_datasets as tfds

    class Loaded(Exception):
        pass

    class Prepared:
        def is_prepared(self):
            return True

    def load(*args, **kwargs):
        raise Loaded()
    monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: Prepared())
    monkeypatch.setattr(tfds, "load", load)
    monkeypatch.setattr(builders, "_host_reachable", lambda *a, **k: pytest.fail("checked"))
    with pytest.raises(Loaded):
        data.cifar10_lt()


def test_host_reachable_on_a_local_socket():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        assert builders._host_reachable("127.0.0.1", port, timeout=2.0)
    finally:
        server.close()
    assert not builders._host_reachable("127.0.0.1", port, timeout=2.0)  # closed: refused


# ----------------------------------------------------------------- image folders

def test_image_folder_numpy_path_matches_tfdata(tmp_path):
    _make_folder(tmp_path / "train", ["a", "b", "c"], per_class=6)
    _make_folder(tmp_path / "test", ["a", "b", "c"], per_class=2)
    kwargs = dict(imbalance_ratio=3, image_size=(8, 8), augment=None, batch_size=4)
    tf_train, tf_test, tf_info = data.image_folder_lt(tmp_path, pipeline="tfdata", **kwargs)
    for cache in (True, False):
        np_train, np_test, np_info = data.image_folder_lt(tmp_path, pipeline="numpy",
                                                          cache=cache, **kwargs)
        assert np_info == tf_info and np_info.train_files == tf_info.train_files
        np.testing.assert_allclose(_all_batches(np_test)[0], _tf_batches(tf_test)[0], atol=1e-6)
        np.testing.assert_array_equal(_all_batches(np_test)[1], [0, 0, 1, 1, 2, 2])
        np.testing.assert_allclose(_sorted_rows(_all_batches(np_train)[0]),
                                   _sorted_rows(_tf_batches(tf_train)[0]), atol=1e-6)
    (x, y), (x_test, _), _ = data.image_folder_lt(tmp_path, pipeline="arrays", **kwargs)
    assert x.dtype == np.uint8 and x.shape == (6 + 3 + 2, 8, 8, 3) and len(x_test) == 6
    (paths, _), _, _ = data.image_folder_lt(tmp_path, pipeline="arrays", cache=False, **kwargs)
    assert [str(p) for p in paths] == list(tf_info.train_files)
    images, labels, names = data.read_image_folder(tmp_path / "test", size=(4, 5), workers=2)
    assert images.shape == (6, 4, 5, 3) and names == ["a", "b", "c"]
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_folder_with_different_train_and_test_classes(tmp_path):
    _make_folder(tmp_path / "train", ["cat", "dog", "owl"])
    _make_folder(tmp_path / "test", ["cat", "dog", "yak"])
    for pipeline in ("numpy", "tfdata"):
        with pytest.raises(ValueError, match=r"same class folders: .*test lacks \['owl'\].*"
                                             r"train lacks \['yak'\]"):
            data.image_folder_lt(tmp_path, imbalance_ratio=1, pipeline=pipeline)


def test_mixed_image_sizes_without_resize(tmp_path):
    _make_folder(tmp_path / "train", ["a", "b"])
    _write_image(tmp_path / "train" / "b" / "99.png", _images(1, (9, 7, 3))[0])
    with pytest.raises(ValueError, match=r"images of different sizes: .*a/0\d\.png is 8x8, "
                                         r".*b/99\.png is 9x7; pass a size"):
        data.image_folder_lt(tmp_path, class_counts=[3, 4], image_size=None, pipeline="numpy")
    x, y = data.image_folder_lt(tmp_path, class_counts=[3, 4], image_size=(5, 5),
                                pipeline="arrays")[0]
    assert x.shape == (7, 5, 5, 3)
