"""ArrayBatches (the TensorFlow-free data path): determinism, epochs, length caps,
lazy decoding, and the samplers through it. Synthetic data only.
"""

import concurrent.futures

import keras
import numpy as np
import pytest

from keras_margins import data
from .helpers import COUNTS, LABELS, _all_batches, _images, _write_image


def test_array_batches_are_deterministic_whatever_the_fetch_order_or_thread():
    x = _images(300, (32, 32, 3), seed=6)
    y = np.arange(300) % 3

    def make(**kwargs):
        return data.ArrayBatches(x, y, 32, shuffle=True, seed=7, workers=4,
                                 transform=data.numpy_cifar_transform(), **kwargs)
    ref = make()
    in_order = [ref[i] for i in range(len(ref))]
    reverse = make()
    backwards = [reverse[i] for i in reversed(range(len(reverse)))][::-1]
    threaded = make()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        from_threads = list(pool.map(threaded.__getitem__, [7, 3, 9, 0, 1, 8, 2, 6, 5, 4]))
    from_threads = [from_threads[[7, 3, 9, 0, 1, 8, 2, 6, 5, 4].index(i)] for i in range(10)]
    for other in (backwards, from_threads):
        for (xa, ya), (xb, yb) in zip(in_order, other):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    # Each epoch: every image once, in a new order, with new augmentation.
    ref.on_epoch_end()
    second = [ref[i] for i in range(len(ref))]
    assert not np.array_equal(in_order[0][1], second[0][1])
    for epoch_batches in (in_order, second):
        labels = np.concatenate([b[1] for b in epoch_batches])
        assert np.bincount(labels).tolist() == [100, 100, 100]
    assert sorted(ref.epoch_order(0).tolist()) == list(range(300))
    # Resuming: a new object pinned to epoch 1 gives epoch 1's batches.
    resumed = make()
    resumed.set_epoch(1)
    np.testing.assert_array_equal(resumed[4][0], second[4][0])
    other_seed = data.ArrayBatches(x, y, 32, shuffle=True, seed=8,
                                   transform=data.numpy_cifar_transform())
    assert not np.array_equal(other_seed[0][1], in_order[0][1])


@pytest.mark.parametrize("workers", [1, 2])
def test_epochs_follow_fit_whatever_keras_calls_around_them(workers):
    x, y = _images(96, (4, 4, 1), seed=9), np.arange(96) % 3
    batches = data.ArrayBatches(x, y, 32, shuffle=True, seed=0, workers=workers,
                                transform=data.numpy_cifar_transform(mean=(0.5,), std=(0.25,),
                                                                     size=4, padding=1))
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs=None: seen.append((epoch, batches.epoch)))
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    model.compile(optimizer="sgd",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(batches, epochs=3, verbose=0, callbacks=[record])
    assert np.all(np.isfinite(history.history["loss"]))
    if workers == 1:
        # fit peeks at one batch, then calls on_epoch_end before epoch 0: not an epoch.
        assert seen == [(0, 0), (1, 1), (2, 2)] and batches.epoch == 3
    else:
        # Threads compute ahead: every on_epoch_end counts (deterministically).
        assert seen == [(0, 1), (1, 2), (2, 3)] and batches.epoch == 4
    # The callback pins the data epoch to fit's (and resumes at initial_epoch).
    seen.clear()
    model.fit(batches, initial_epoch=5, epochs=7, verbose=0,
              callbacks=[batches.callback(), record])
    assert seen == [(5, 5), (6, 6)] and batches.epoch == 7
    if workers == 1:  # an epoch ends only once all its batches were served
        batches[0]
        batches.on_epoch_end()
        assert batches.epoch == 7


def test_array_batches_length_cap_and_test_order():
    x, y = _images(100, seed=2), np.arange(100) % 4
    batches = data.ArrayBatches(x, y, 32)
    assert len(batches) == 4 and len(batches[3][1]) == 4  # ceil(100 / 32), partial kept
    assert len(data.ArrayBatches(x, y, 32, drop_remainder=True)) == 3
    capped = data.ArrayBatches(x, y, 32, max_batches=2)
    assert len(capped) == 2 and len(list(capped)) == 2
    assert len(batches.take(3)) == 3 and len(capped.take(5)) == 2 and len(batches) == 4
    assert len(data.limit_batches(batches, 1)) == 1
    with pytest.raises(IndexError):
        capped[2]
    sampled = data.ArrayBatches(x, y, 32, sampler=data.class_balanced(num_samples=1000))
    assert len(sampled) == 32
    # Not shuffled, no augmentation: the inputs in order, the same every epoch.
    images, labels = _all_batches(batches)
    np.testing.assert_array_equal(labels, y)
    np.testing.assert_allclose(images, x / 255.0, atol=1e-7)
    batches.on_epoch_end()
    np.testing.assert_array_equal(batches[1][0], images[32:64])


def test_array_batches_decode_files_lazily(tmp_path):
    x = _images(10, (8, 8, 3), seed=4)
    paths = []
    for i, image in enumerate(x):
        paths.append(tmp_path / f"{i}.png")
        _write_image(paths[-1], image)
    batches = data.ArrayBatches(paths, np.arange(10) % 2, 4)
    images, labels = _all_batches(batches)
    np.testing.assert_allclose(images, x / 255.0, atol=1e-7)  # PNG is lossless
    np.testing.assert_array_equal(labels, np.arange(10) % 2)
    np.testing.assert_array_equal(data.read_images(paths, workers=3), x)


# ------------------------------------------------------- samplers through ArrayBatches

@pytest.mark.parametrize("factory, q", [(data.class_balanced, 0.0), (data.square_root, 0.5)])
def test_samplers_class_frequencies_through_array_batches(factory, q):
    batches = data.ArrayBatches(np.zeros((len(LABELS), 1, 1, 1), "uint8"), LABELS, 5000,
                                sampler=factory(seed=1, num_samples=40000))
    _, labels = _all_batches(batches)
    assert len(labels) == 40000 and len(batches) == 8
    expected = np.power(COUNTS, q) / np.sum(np.power(COUNTS, q))
    np.testing.assert_allclose(expected, data.sampling_probabilities(COUNTS, q))
    freq = np.bincount(labels, minlength=len(COUNTS)) / len(labels)
    assert np.all(np.abs(freq - expected) <= 5 * np.sqrt(expected * (1 - expected) / 40000))


def test_progressive_and_deferred_sampling_change_with_the_epoch():
    ib = np.array(COUNTS) / sum(COUNTS)
    cb = np.full(len(COUNTS), 1 / len(COUNTS))
    for sampler, expected in [
            (data.progressive(total_epochs=2, num_samples=30000), [ib, (ib + cb) / 2, cb]),
            (data.deferred(defer_epoch=1, num_samples=30000), [ib, cb, cb])]:
        batches = data.ArrayBatches(np.zeros((len(LABELS), 1, 1, 1), "uint8"), LABELS, 10000,
                                    sampler=sampler)
        for epoch, probabilities in enumerate(expected):
            np.testing.assert_allclose(sampler.class_probabilities(COUNTS, epoch), probabilities)
            _, labels = _all_batches(batches)
            freq = np.bincount(labels, minlength=len(COUNTS)) / len(labels)
            bound = 5 * np.sqrt(probabilities * (1 - probabilities) / 30000) + 1e-4
            assert np.all(np.abs(freq - probabilities) <= bound), (epoch, freq, probabilities)
            batches.on_epoch_end()


def test_sampler_epoch_indices_are_seeded_by_seed_and_epoch():
    sampler = data.class_balanced(seed=3, num_samples=500)
    first = sampler.epoch_indices(LABELS, 0)
    np.testing.assert_array_equal(first, data.class_balanced(seed=3, num_samples=500)
                                  .epoch_indices(LABELS, 0))
    assert not np.array_equal(first, sampler.epoch_indices(LABELS, 1))
    assert first.dtype == np.int64 and first.min() >= 0 and first.max() < len(LABELS)
    plain = data.instance_balanced(seed=0).epoch_indices(LABELS, 2)
    assert sorted(plain.tolist()) == list(range(len(LABELS)))
