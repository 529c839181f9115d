"""NumPy transforms (keras_margins.data.numpy_augment): the CIFAR and ImageNet recipes."""

import numpy as np
import pytest

from keras_margins import data
from keras_margins.data import numpy_augment
from .helpers import _all_batches, _images


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
