"""The augmentation recipes of ``augment`` in NumPy (and Pillow), for ``ArrayBatches``.

A NumPy transform is a callable ``transform(images, rng) -> float32 images``:
``images`` is one batch, a uint8 array ``(B, H, W, C)`` (or a list of
``(H, W, C)`` arrays when images of a batch may differ in size), and ``rng``
a ``numpy.random.Generator`` from which every random choice is drawn, per
image. ``ArrayBatches`` seeds ``rng`` from ``(seed, epoch, batch index)``, so a
batch does not depend on which thread computes it.

- CIFAR (LDAM-DRW): zero-pad 4, a random 32x32 crop (offsets uniform in
  ``0..8`` per image and axis), horizontal flip with probability 1/2 per
  image, then ``/255`` and per-channel ``(x - mean) / std``; one vectorised
  gather per batch. Evaluation: normalisation only.
- ImageNet (Decoupling / OLTR): random resized crop (area 8-100 % of the
  image, aspect ratio 3/4-4/3 drawn log-uniformly, 10 tries, else the whole
  image), resized to 224 with Pillow (bilinear), horizontal flip; evaluation:
  shorter side to 256, centre crop 224.
"""

import numpy as np

from keras_margins.data._imports import import_pil_image
from keras_margins.data.augment import (CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN,
                                        IMAGENET_STD, check_mean_std, select_transform)

__all__ = ["numpy_normalizer", "numpy_cifar_transform", "numpy_imagenet_transform",
           "get_numpy_transform", "stack_images"]


def stack_images(images):
    """A batch as one uint8 array; a ``ValueError`` when its images differ in size."""
    if isinstance(images, np.ndarray):
        return images
    shapes = sorted({tuple(np.shape(image)) for image in images})
    if len(shapes) > 1:
        raise ValueError(f"the images of a batch differ in size ({shapes[:4]}): pass an "
                         f"image size to resize them on decoding, or a transform that crops "
                         f"them to one size (augment='imagenet').")
    return np.stack(images)


def numpy_normalizer(mean=None, std=None):
    """``uint8 -> float32``: ``x / 255``, then ``(x - mean) / std`` per channel when given."""
    mean, std = check_mean_std(mean, std)

    def normalize(images, rng=None):
        images = stack_images(images).astype(np.float32) * np.float32(1.0 / 255.0)
        return images if mean is None else (images - mean) / std
    return normalize


def numpy_cifar_transform(training=True, mean=CIFAR10_MEAN, std=CIFAR10_STD, size=32,
                          padding=4):
    """The CIFAR recipe on a batch: pad, random ``size`` crop and flip per image, normalise.

    ``training=False`` gives the evaluation transform (normalisation only).
    """
    normalize = numpy_normalizer(mean, std)
    if not training:
        return normalize

    def apply(images, rng):
        images = stack_images(images)
        batch, height, width = images.shape[:3]
        padded = np.pad(images, [(0, 0), (padding, padding), (padding, padding), (0, 0)])
        top = rng.integers(0, height + 2 * padding - size + 1, size=batch)
        left = rng.integers(0, width + 2 * padding - size + 1, size=batch)
        flip = rng.random(batch) < 0.5
        steps = np.arange(size)
        rows = top[:, None] + steps                                    # (B, size)
        cols = left[:, None] + np.where(flip[:, None], steps[::-1], steps)
        crops = padded[np.arange(batch)[:, None, None], rows[:, :, None], cols[:, None, :]]
        return normalize(crops)
    return apply


def _pil(image):
    image_lib = import_pil_image("the ImageNet transform")
    return image_lib, image_lib.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def _pixels(image, channels):
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels.reshape(pixels.shape[:2] + (channels,))


def _crop_box(height, width, rng, scale, ratio, attempts=10):
    """``(top, left, h, w)`` of a random resized crop (the whole image if no try fits)."""
    area = height * width
    log_ratio = np.log(ratio)
    for _ in range(attempts):
        target = area * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(*log_ratio))
        w = int(round(np.sqrt(target * aspect)))
        h = int(round(np.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    return 0, 0, height, width


def numpy_imagenet_transform(training=True, size=224, resize_size=None, mean=IMAGENET_MEAN,
                             std=IMAGENET_STD, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """The ImageNet recipe per image: random resized crop + flip; or resize 256 + centre crop."""
    normalize = numpy_normalizer(mean, std)

    def train_one(image, rng):
        image_lib, pil = _pil(image)
        top, left, h, w = _crop_box(image.shape[0], image.shape[1], rng, scale, ratio)
        pil = pil.resize((size, size), image_lib.BILINEAR, box=(left, top, left + w, top + h))
        pixels = _pixels(pil, image.shape[-1])
        return pixels[:, ::-1] if rng.random() < 0.5 else pixels

    def eval_one(image, rng):
        image_lib, pil = _pil(image)
        shorter = resize_size or int(round(size * 256 / 224))
        height, width = image.shape[:2]
        factor = shorter / min(height, width)
        new_h, new_w = max(size, round(height * factor)), max(size, round(width * factor))
        pixels = _pixels(pil.resize((new_w, new_h), image_lib.BILINEAR), image.shape[-1])
        top, left = (new_h - size) // 2, (new_w - size) // 2
        return pixels[top:top + size, left:left + size]

    one = train_one if training else eval_one

    def apply(images, rng=None):
        return normalize(np.stack([one(np.asarray(image), rng) for image in images]))
    return apply


def get_numpy_transform(augment, training, mean=None, std=None, size=None):
    """``augment`` ("cifar", "imagenet", None or a callable) -> a NumPy batch transform.

    A callable is returned as it is: ``augment(images, rng) -> float32 images``.
    """
    return select_transform(augment, training, mean, std, size, cifar=numpy_cifar_transform,
                            imagenet=numpy_imagenet_transform, normalize=numpy_normalizer)
