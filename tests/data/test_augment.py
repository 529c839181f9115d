"""Augmentation recipes (Keras preprocessing layers inside tf.data)."""

import numpy as np
import pytest

from keras_margins import data


def _image(shape, seed=0):
    return np.random.RandomState(seed).randint(0, 256, shape).astype("uint8")


def _run(transform, image, repeats=1):
    import tensorflow as tf
    ds = tf.data.Dataset.from_tensors(image).repeat(repeats).map(transform)
    return np.stack(list(ds.as_numpy_iterator()))


def test_cifar_training_transform_is_a_padded_crop_with_optional_flip():
    image = _image((32, 32, 3))
    mean, std = np.array(data.CIFAR10_MEAN), np.array(data.CIFAR10_STD)
    padded = np.pad(image, [(4, 4), (4, 4), (0, 0)]).astype("float64") / 255
    outputs = _run(data.cifar_transform(training=True, seed=1), image, repeats=24)
    assert outputs.shape == (24, 32, 32, 3) and outputs.dtype == np.float32
    offsets = set()
    for out in outputs:
        restored = out * std + mean
        matches = [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (0, 1)
                   if np.allclose((padded[dy:dy + 32, dx:dx + 32][:, ::-1] if flip else
                                   padded[dy:dy + 32, dx:dx + 32]), restored, atol=1e-4)]
        assert matches, "not a 32x32 crop of the zero-padded image"
        offsets.add(matches[0])
    assert len(offsets) > 5  # random offsets and flips


def test_cifar_evaluation_normalises_per_channel():
    image = _image((32, 32, 3), 1)
    out = _run(data.cifar_transform(training=False), image)[0]
    expected = (image / 255.0 - np.array(data.CIFAR10_MEAN)) / np.array(data.CIFAR10_STD)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_imagenet_transforms_sizes():
    image = _image((60, 90, 3), 2)
    train = _run(data.imagenet_transform(training=True, size=24), image, repeats=6)
    assert train.shape == (6, 24, 24, 3)
    assert not np.allclose(train[0], train[1])  # random crops
    evaluation = _run(data.imagenet_transform(training=False, size=24), image, repeats=2)
    assert evaluation.shape == (2, 24, 24, 3)
    np.testing.assert_array_equal(evaluation[0], evaluation[1])  # deterministic


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mix_transforms_give_soft_labels(kind):
    import tensorflow as tf
    images = tf.constant(np.random.RandomState(0).rand(8, 16, 16, 3).astype("float32"))
    labels = tf.constant(np.arange(8) % 4)
    ds = tf.data.Dataset.from_tensors((images, labels)).map(data.mix_transform(4, kind, seed=0))
    mixed_images, soft = next(iter(ds))
    assert tuple(mixed_images.shape) == (8, 16, 16, 3) and tuple(soft.shape) == (8, 4)
    np.testing.assert_allclose(np.sum(np.asarray(soft), axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="kind"):
        data.mix_transform(4, "augmix")


def test_normalizer_rejects_bad_std():
    with pytest.raises(ValueError, match="std"):
        data.normalizer(mean=(0.5, 0.5), std=(0.1, 0.0))
