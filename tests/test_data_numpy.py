"""The TensorFlow-free data path: NumPy transforms, ArrayBatches, samplers, readers, errors.

Synthetic data only (images written with Pillow in temporary folders); the
real-data comparisons and the no-TensorFlow subprocess are in
``test_data_numpy_real.py``.
"""

import concurrent.futures
import pickle
import socket

import keras
import numpy as np
import pytest

from keras_margins import data
from keras_margins.data import builders, numpy_augment

COUNTS = [500, 300, 180, 100, 60, 40, 20, 10]
LABELS = np.repeat(np.arange(len(COUNTS)), COUNTS)


def _images(n, shape=(6, 6, 3), seed=0):
    return np.random.RandomState(seed).randint(0, 256, (n, *shape)).astype("uint8")


def _write_image(path, pixels):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(path)


def _all_batches(batches):
    xs, ys = zip(*(batches[i] for i in range(len(batches))))
    return np.concatenate(xs), np.concatenate(ys)


def _tf_batches(ds):
    xs, ys = zip(*ds.as_numpy_iterator())
    return np.concatenate(xs), np.concatenate(ys)


def _sorted_rows(images):
    flat = np.asarray(images).reshape(len(images), -1)
    return flat[np.lexsort(flat.T[::-1])]


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


def test_normalisation_and_cifar_evaluation_match_the_tf_recipe():
    import tensorflow as tf
    images = _images(4, (32, 32, 3), seed=3)
    ds = tf.data.Dataset.from_tensor_slices(images).map(data.cifar_transform(training=False))
    expected = np.stack(list(ds.as_numpy_iterator()))  # Keras layers run as tf ops in tf.data
    got = data.numpy_cifar_transform(training=False)(images, None)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(data.numpy_normalizer()(images), images / 255.0, atol=1e-7)


# --------------------------------------------------------------- the CIFAR recipe
def _position_image():
    """Channel 0 holds row + 1, channel 1 column + 1 (zero padding reads as 0)."""
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    return np.stack([rows + 1, cols + 1, np.full((32, 32), 200)], axis=-1).astype("uint8")


def test_cifar_crops_and_flips_are_random_per_image_with_the_right_distributions():
    n = 8100
    batches = data.ArrayBatches(
        np.repeat(_position_image()[None], n, axis=0), np.zeros(n, int), batch_size=810,
        transform=data.numpy_cifar_transform(mean=(0, 0, 0), std=(1, 1, 1)), seed=5)
    out, _ = _all_batches(batches)
    pixels = np.round(out * 255).astype(int)
    top = pixels[:, 16, 16, 0] - 13                     # padded row 16 + top is image row top + 12
    step = pixels[:, 16, 17, 1] - pixels[:, 16, 16, 1]  # +1 kept, -1 flipped
    flipped = step == -1
    left = pixels[:, 16, 16, 1] - np.where(flipped, 12, 13)
    assert set(step.tolist()) == {1, -1}
    assert top.min() == 0 and top.max() == 8 and left.min() == 0 and left.max() == 8
    # Every image is exactly its crop of the zero-padded image, flipped or not.
    padded = np.pad(_position_image(), [(4, 4), (4, 4), (0, 0)])
    for k in range(0, n, 97):
        crop = padded[top[k]:top[k] + 32, left[k]:left[k] + 32]
        np.testing.assert_array_equal(pixels[k], crop[:, ::-1] if flipped[k] else crop)
    # Offsets uniform over the 81 positions (chi-square, 80 degrees of freedom) ...
    counts = np.bincount(top * 9 + left, minlength=81)
    expected = n / 81
    assert counts.min() > 0 and np.sum((counts - expected) ** 2 / expected) < 80 + 6 * np.sqrt(160)
    # ... flips with probability 1/2, independent of the offset.
    assert abs(flipped.mean() - 0.5) < 5 * np.sqrt(0.25 / n)
    assert abs(flipped[top < 4].mean() - flipped[top >= 4].mean()) < 0.06
    # Per image, not per batch: images of one batch get different offsets and flips.
    assert len(set(zip(top[:810], left[:810]))) > 60 and 0 < flipped[:810].mean() < 1
    # The rest of the image is the normalised input: channel 2 stays 200 or the padding 0.
    assert set(np.unique(pixels[..., 2]).tolist()) <= {0, 200}


def test_imagenet_transforms_on_images_of_different_sizes():
    images = [_images(1, shape, seed=k)[0] for k, shape in
              enumerate([(60, 90, 3), (40, 30, 3), (100, 100, 3)])]
    train = data.numpy_imagenet_transform(training=True, size=24)
    first = train(images, np.random.default_rng(0))
    assert first.shape == (3, 24, 24, 3) and first.dtype == np.float32
    assert not np.allclose(first, train(images, np.random.default_rng(1)))  # random crops
    np.testing.assert_array_equal(first, train(images, np.random.default_rng(0)))
    evaluate = data.numpy_imagenet_transform(training=False, size=24)
    out = evaluate(images)
    np.testing.assert_array_equal(out, evaluate(images))  # deterministic
    # Evaluation: shorter side to round(24 * 256 / 224) = 27, then the centre 24x24.
    from PIL import Image
    resized = np.asarray(Image.fromarray(images[2]).resize((27, 27), Image.BILINEAR))
    mean, std = np.array(data.IMAGENET_MEAN), np.array(data.IMAGENET_STD)
    np.testing.assert_allclose(out[2], (resized[1:25, 1:25] / 255.0 - mean) / std, atol=1e-5)
    grey = data.numpy_imagenet_transform(size=8, mean=(0.5,), std=(0.25,))(
        [_images(1, (20, 30, 1))[0]], np.random.default_rng(0))
    assert grey.shape == (1, 8, 8, 1)


def test_random_resized_crop_boxes_follow_the_area_and_aspect_ranges():
    rng = np.random.default_rng(0)
    boxes = np.array([numpy_augment._crop_box(500, 500, rng, (0.08, 1.0), (3 / 4, 4 / 3))
                      for _ in range(3000)])
    top, left, h, w = boxes.T
    assert np.all(top >= 0) and np.all(left >= 0)
    assert np.all(top + h <= 500) and np.all(left + w <= 500)
    area = h * w / (500 * 500)
    aspect = w / h
    assert area.min() >= 0.07 and area.max() <= 1.0 and np.median(area) > 0.3
    assert aspect.min() > 0.74 and aspect.max() < 1.35
    assert np.mean(aspect > 1) == pytest.approx(0.5, abs=0.05)  # log-uniform: symmetric
    # No box of the ranges fits a thin strip: the whole image is the crop.
    assert numpy_augment._crop_box(4, 1000, rng, (0.08, 1.0), (3 / 4, 4 / 3)) == (0, 0, 4, 1000)


# ------------------------------------------------------------------- ArrayBatches
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


# ----------------------------------------------------------------- image folders
def _make_folder(root, classes, per_class=3, size=(8, 8)):
    for c, name in enumerate(classes):
        for i in range(per_class):
            _write_image(root / name / f"{i:02d}.png", _images(1, (*size, 3), seed=10 * c + i)[0])


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


# ------------------------------------------------------------------------ CIFAR
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
