"""Samplers: the class frequencies each one produces."""

import numpy as np
import pytest

from keras_margins import data

COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
LABELS = np.repeat(np.arange(10), COUNTS)


def _frequencies(sampler, labels=LABELS):
    indices = np.concatenate(list(sampler.index_dataset(labels).batch(1 << 20).as_numpy_iterator()))
    return indices, np.bincount(labels[indices], minlength=10) / len(indices)


def _assert_close(freq, expected, n):
    expected = np.asarray(expected)
    tolerance = 5 * np.sqrt(expected * (1 - expected) / n) + 1e-4
    assert np.all(np.abs(freq - expected) <= tolerance), (freq.round(4), expected.round(4))


def test_instance_balanced_visits_every_image_once_per_epoch():
    sampler = data.instance_balanced(seed=0)
    first, freq = _frequencies(sampler)
    np.testing.assert_array_equal(np.sort(first), np.arange(len(LABELS)))
    np.testing.assert_allclose(freq, np.array(COUNTS) / sum(COUNTS))
    second, _ = _frequencies(sampler)
    assert not np.array_equal(first, second)  # reshuffled each epoch


@pytest.mark.parametrize("factory, q", [(data.class_balanced, 0.0), (data.square_root, 0.5)])
def test_resampling_frequencies(factory, q):
    sampler = factory(seed=1, num_samples=40000)
    indices, freq = _frequencies(sampler)
    assert len(indices) == 40000
    expected = np.power(COUNTS, q) / np.sum(np.power(COUNTS, q))
    _assert_close(freq, expected, 40000)
    if q == 0.0:
        # Tail images are all used and repeated (sampling with replacement).
        tail = indices[LABELS[indices] == 9]
        assert len(np.unique(tail)) == 50 and len(tail) > 3000


def test_progressive_moves_from_instance_to_class_balanced():
    sampler = data.progressive(total_epochs=4, seed=0, num_samples=30000)
    ib = np.array(COUNTS) / sum(COUNTS)
    cb = np.full(10, 0.1)
    for epoch in range(5):
        assert sampler.epoch == epoch
        _, freq = _frequencies(sampler)
        a = min(epoch / 4, 1.0)
        _assert_close(freq, (1 - a) * ib + a * cb, 30000)
        np.testing.assert_allclose(sampler.class_probabilities(COUNTS, epoch), (1 - a) * ib + a * cb)


def test_deferred_resampling_switches_at_the_deferred_epoch():
    sampler = data.deferred(defer_epoch=2, seed=0, num_samples=30000)
    ib = np.array(COUNTS) / sum(COUNTS)
    for epoch, expected in [(0, ib), (1, ib), (2, np.full(10, 0.1)), (3, np.full(10, 0.1))]:
        _, freq = _frequencies(sampler)
        _assert_close(freq, expected, 30000)
    sampler.set_epoch(0)  # resuming / the callback pins the epoch
    _, freq = _frequencies(sampler)
    _assert_close(freq, ib, 30000)
    assert sampler.epoch == 1


def test_sampler_is_a_dataset_transformation_with_cardinality():
    import tensorflow as tf

    paths = np.array([f"img_{i}.jpg" for i in range(len(LABELS))])
    ds = tf.data.Dataset.from_tensor_slices((paths, LABELS)).apply(
        data.class_balanced(seed=0, num_samples=5000))
    assert int(ds.cardinality()) == 5000
    (got_paths, got_labels), = ds.batch(1 << 20).as_numpy_iterator()
    _assert_close(np.bincount(got_labels, minlength=10) / 5000, np.full(10, 0.1), 5000)
    # Each element stays consistent: the path belongs to its label.
    index = np.array([int(p.decode()[4:-4]) for p in got_paths])
    np.testing.assert_array_equal(LABELS[index], got_labels)


def test_sampler_errors():
    with pytest.raises(ValueError, match="total_epochs"):
        data.progressive(total_epochs=0)
    with pytest.raises(ValueError, match="defer_epoch"):
        data.deferred(defer_epoch=-1)
    with pytest.raises(ValueError, match="class_counts"):
        data.sampling_probabilities([0, 0], 0.5)
