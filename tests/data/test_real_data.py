"""The TensorFlow-free data path on the real data of ../shared/datasets.

The NumPy path selects exactly what the tf.data path selects (Fashion-MNIST IDX
files, the CIFAR-10 JPEG copy), and a process in which TensorFlow cannot be
imported trains a small model from it on JAX and on PyTorch.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from keras_margins import data

pytestmark = pytest.mark.real_data


def _batches(dataset):
    """All ``(x, y)`` of a tf.data pipeline or an ``ArrayBatches``, concatenated."""
    if isinstance(dataset, data.ArrayBatches):
        pairs = [dataset[i] for i in range(len(dataset))]
    else:
        pairs = list(dataset.as_numpy_iterator())
    return np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs])


def _as_uint8_rows(images):
    """Images in ``[0, 1]`` back to sorted uint8 rows (an order-free comparison)."""
    pixels = np.round(np.asarray(images) * 255).astype(np.uint8)
    return sorted(row.tobytes() for row in pixels.reshape(len(pixels), -1))


def test_fashion_mnist_numpy_path_selects_what_tfdata_selects(datasets_dir):
    idx_dir = datasets_dir / "fashion-mnist"
    kwargs = dict(imbalance_ratio=100, idx_dir=idx_dir, batch_size=500, seed=0,
                  max_test_per_class=300)
    tf_train, tf_test, tf_info = data.fashion_mnist_lt(pipeline="tfdata", **kwargs)
    np_train, np_test, np_info = data.fashion_mnist_lt(pipeline="numpy", **kwargs)
    (x_sel, y_sel), (x_test, y_test), info = data.fashion_mnist_lt(pipeline="arrays", **kwargs)
    assert np_info == tf_info == info
    assert info.class_counts == data.long_tail_counts(10, 6000, 100)
    assert info.test_counts == [300] * 10
    assert len(np_train) == -(-info.train_size // 500) == int(tf_train.cardinality())
    assert len(np_test) == 6 == int(tf_test.cardinality())
    # The arrays are the LDAM-DRW subset of the IDX files.
    (x_all, y_all), _ = data.read_fashion_mnist(idx_dir)
    keep = data.subsample_indices(y_all, info.class_counts, seed=0)
    np.testing.assert_array_equal(x_sel, x_all[keep])
    np.testing.assert_array_equal(y_sel, y_all[keep])
    # Training: the same images and labels (shuffled differently).
    np_x, np_y = _batches(np_train)
    tf_x, tf_y = _batches(tf_train)
    assert np_x.shape == tf_x.shape == (info.train_size, 28, 28, 1)
    assert _as_uint8_rows(np_x) == _as_uint8_rows(tf_x) == _as_uint8_rows(x_sel / 255.0)
    assert np.bincount(np_y).tolist() == np.bincount(tf_y).tolist() == info.class_counts
    # Test: identical batches, in order, not shuffled.
    np_tx, np_ty = _batches(np_test)
    tf_tx, tf_ty = _batches(tf_test)
    np.testing.assert_array_equal(np_ty, tf_ty)
    np.testing.assert_array_equal(np_ty, y_test)
    np.testing.assert_allclose(np_tx, tf_tx, atol=1e-6)


def test_cifar10_jpeg_numpy_path_selects_what_tfdata_selects(datasets_dir):
    folder = datasets_dir / "cifar10"
    kwargs = dict(imbalance_ratio=100, batch_size=128, max_test_per_class=40, cache=False)
    tf_train, tf_test, tf_info = data.image_folder_lt(folder, pipeline="tfdata", **kwargs)
    np_train, np_test, np_info = data.image_folder_lt(folder, pipeline="numpy", **kwargs)
    (paths, labels), (test_paths, test_labels), info = data.image_folder_lt(
        folder, pipeline="arrays", **kwargs)
    assert np_info == tf_info == info
    assert info.class_counts == data.long_tail_counts(10, 5000, 100)
    assert [str(p) for p in paths] == list(tf_info.train_files)  # the same 12,406 files
    assert len(np_train) == 97 == int(tf_train.cardinality())
    assert len(np_test) == 4 == int(tf_test.cardinality())
    # Test images: same files in the same order; Pillow and TensorFlow decode the JPEGs
    # alike (their decoders differ by a few grey levels at most).
    np_tx, np_ty = _batches(np_test)
    tf_tx, tf_ty = _batches(tf_test)
    np.testing.assert_array_equal(np_ty, tf_ty)
    np.testing.assert_array_equal(np_ty, np.repeat(np.arange(10), 40))
    grey_levels = np.abs(np_tx - tf_tx) * np.array(data.CIFAR10_STD) * 255
    assert grey_levels.max() <= 8 and grey_levels.mean() < 1
    # Training batches: augmented CIFAR images, normalised.
    x, y = np_train[0]
    assert x.shape == (128, 32, 32, 3) and x.dtype == np.float32 and y.dtype == np.int32
    assert abs(float(x.mean())) < 1.0 and np.all(np.isfinite(x))


def test_cifar10_lt_names_the_folder_it_expected(datasets_dir):
    with pytest.raises(ValueError, match=rf"{datasets_dir} is not a CIFAR-10 folder: .*"
                                         rf"Did you mean {datasets_dir / 'cifar10'}\?"):
        data.cifar10_lt(folder=datasets_dir, pipeline="numpy")


_NO_TENSORFLOW_RUN = textwrap.dedent("""
    import json, sys
    import numpy as np
    import keras
    import keras_margins as km
    import keras_margins.data as d

    train, test, info = d.fashion_mnist_lt(100, idx_dir=sys.argv[1], max_count=300,
                                           batch_size=64, max_test_per_class=20)
    errors = {}
    for name, call in [("tfdata", lambda: d.fashion_mnist_lt(idx_dir=sys.argv[1],
                                                              pipeline="tfdata")),
                       ("cifar_transform", d.cifar_transform),
                       ("tfds", lambda: d.cifar10_lt())]:
        try:
            call()
            errors[name] = None
        except ImportError as error:
            errors[name] = str(error)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    features = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, km.layers.CosineDense(10)(features))
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=km.losses.LDAMLoss(info.class_counts))
    capped = train.take(5)
    history = model.fit(capped, epochs=2, verbose=0)
    x, y = test[0]
    print(json.dumps({
        "backend": keras.backend.backend(),
        "tensorflow_imported": "tensorflow" in sys.modules,
        "train_type": type(train).__name__,
        "is_py_dataset": isinstance(train, keras.utils.PyDataset),
        "lengths": [len(train), len(capped), len(test)],
        "epoch_after_fit": capped.epoch,
        "losses": history.history["loss"],
        "test_loss": model.evaluate(test, verbose=0),
        "test_batch": [list(x.shape), str(x.dtype), y[:3].tolist()],
        "errors": errors,
    }))
""")


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_training_without_tensorflow(datasets_dir, tmp_path, backend):
    """TensorFlow and tensorflow-datasets fail to import; the NumPy path trains anyway."""
    for module in ("tensorflow", "tensorflow_datasets"):
        (tmp_path / module).mkdir()
        (tmp_path / module / "__init__.py").write_text('raise ImportError("blocked for test")\n')
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, KERAS_BACKEND=backend,
               PYTHONPATH=os.pathsep.join([str(tmp_path), repo]))
    run = subprocess.run([sys.executable, "-c", _NO_TENSORFLOW_RUN,
                          str(datasets_dir / "fashion-mnist")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend and not result["tensorflow_imported"]
    assert result["train_type"] == "ArrayBatches" and result["is_py_dataset"]
    counts = data.long_tail_counts(10, 300, 100)
    assert result["lengths"] == [-(-sum(counts) // 64), 5, -(-200 // 64)]
    assert result["epoch_after_fit"] == 2
    assert len(result["losses"]) == 2 and np.all(np.isfinite(result["losses"]))
    assert np.isfinite(result["test_loss"])
    assert result["test_batch"] == [[64, 28, 28, 1], "float32", [0, 0, 0]]
    errors = result["errors"]
    for name, message in errors.items():
        assert message is not None and 'pip install "keras-margins[data]"' in message, name
    assert "blocked for test" in errors["tfdata"] and "blocked for test" in errors["cifar_transform"]
    assert "pass folder=" in errors["tfds"]
