"""tfds builders, offline with tfds.testing.mock_data (never reaching the network)."""

import numpy as np
import pytest


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
