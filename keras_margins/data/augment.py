"""Augmentation recipes built from Keras core preprocessing layers, run inside tf.data.

Keras preprocessing layers (``RandomCrop``, ``RandomFlip``, ``Resizing``,
``CenterCrop``, ``Rescaling``, ``Normalization``, ``MixUp``, ``CutMix``) switch
to TensorFlow ops inside a ``tf.data`` pipeline whatever ``KERAS_BACKEND`` is,
so the same pipeline feeds ``model.fit`` on TensorFlow, JAX and PyTorch.

- CIFAR (LDAM-DRW): zero-pad 4 (``tf.pad``; Keras has no padding layer that
  runs in tf.data), ``RandomCrop(32, 32)`` per image, ``RandomFlip("horizontal")``,
  then per-channel normalisation. Evaluation: normalisation only.
- ImageNet (Decoupling / OLTR): Inception-style random resized crop (box drawn
  by ``tf.image.sample_distorted_bounding_box``: area 8-100 %, aspect ratio
  3/4-4/3, then ``Resizing(224, 224)``) and ``RandomFlip``; evaluation
  ``Resizing(256, 256, crop_to_aspect_ratio=True)`` (shorter side to 256) and
  ``CenterCrop(224, 224)``.
- Batch-level MixUp / CutMix from ``keras.layers`` (labels become one-hot).

Every transform maps a ``uint8`` image (H, W, C) to a float32 normalised image.
TensorFlow is imported when a transform is built; ``numpy_augment`` holds the
same recipes in NumPy for the TensorFlow-free path.
"""

import numpy as np

from keras_margins.data._imports import import_tensorflow

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD",
           "IMAGENET_MEAN", "IMAGENET_STD", "normalizer", "cifar_transform",
           "imagenet_transform", "mix_transform", "get_transform", "check_mean_std",
           "select_transform"]

# The values used by LDAM-DRW's and the seeds' training scripts.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_mean_std(mean, std):
    """Per-channel ``(mean, std)`` as float32 arrays (``(None, None)`` without a mean)."""
    if mean is None:
        return None, None
    mean = np.asarray(mean, dtype="float32").reshape(-1)
    std = np.ones_like(mean) if std is None else np.asarray(std, dtype="float32").reshape(-1)
    if mean.shape != std.shape or np.any(std <= 0):
        raise ValueError(f"`mean` and `std` must be per-channel values of the same length "
                         f"with std > 0, received mean={mean.tolist()}, std={std.tolist()}.")
    return mean, std


def normalizer(mean=None, std=None):
    """``uint8 -> float32``: ``Rescaling(1/255)`` then per-channel ``Normalization``.

    With ``mean=None`` only the rescaling to ``[0, 1]`` is applied.
    """
    import keras
    tf = import_tensorflow("normalizer (a tf.data transform)")

    rescale = keras.layers.Rescaling(1.0 / 255.0)
    norm = None
    mean, std = check_mean_std(mean, std)
    if mean is not None:
        norm = keras.layers.Normalization(axis=-1, mean=mean, variance=std ** 2)
        norm.build((None, mean.shape[0]))  # eagerly: building inside tf.data is not allowed

    def apply(image):
        image = rescale(tf.cast(image, "float32"))
        return image if norm is None else norm(image)
    return apply


def cifar_transform(training=True, mean=CIFAR10_MEAN, std=CIFAR10_STD, size=32, padding=4,
                    seed=None):
    """The CIFAR recipe: pad 4, random ``size`` crop, horizontal flip, normalise.

    ``training=False`` gives the evaluation transform (normalisation only).
    """
    import keras
    tf = import_tensorflow("cifar_transform (a tf.data transform)")

    normalize = normalizer(mean, std)
    if not training:
        return normalize
    crop = keras.layers.RandomCrop(size, size, seed=seed)
    flip = keras.layers.RandomFlip("horizontal", seed=None if seed is None else seed + 1)

    def apply(image):
        image = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
        image = flip(crop(image, training=True), training=True)
        return normalize(image)
    return apply


def imagenet_transform(training=True, size=224, resize_size=None, mean=IMAGENET_MEAN,
                       std=IMAGENET_STD, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), seed=None):
    """The ImageNet recipe: random resized crop + flip; or resize 256 + centre crop 224."""
    import keras
    tf = import_tensorflow("imagenet_transform (a tf.data transform)")

    normalize = normalizer(mean, std)
    if not training:
        resize_size = resize_size or int(round(size * 256 / 224))
        resize = keras.layers.Resizing(resize_size, resize_size, crop_to_aspect_ratio=True)
        center = keras.layers.CenterCrop(size, size)

        def evaluate(image):
            return normalize(center(resize(tf.cast(image, "float32"))))
        return evaluate
    resize = keras.layers.Resizing(size, size)
    flip = keras.layers.RandomFlip("horizontal", seed=seed)

    def apply(image):
        begin, extent, _ = tf.image.sample_distorted_bounding_box(
            tf.shape(image), bounding_boxes=tf.zeros([1, 0, 4]), min_object_covered=0.0,
            aspect_ratio_range=ratio, area_range=scale, max_attempts=10,
            use_image_if_no_bounding_boxes=True, seed=seed or 0)
        image = resize(tf.cast(tf.slice(image, begin, extent), "float32"))
        return normalize(flip(image, training=True))
    return apply


def mix_transform(num_classes, kind="mixup", alpha=None, seed=None):
    """Batch-level ``keras.layers.MixUp`` / ``CutMix``: ``(images, labels) -> (images, soft labels)``.

    Integer labels are one-hot encoded first; apply after ``batch``.
    """
    import keras
    tf = import_tensorflow("mix_transform (a tf.data transform)")

    if kind == "mixup":
        layer = keras.layers.MixUp(alpha=0.2 if alpha is None else alpha, seed=seed)
    elif kind == "cutmix":
        layer = keras.layers.CutMix(factor=1.0 if alpha is None else alpha, seed=seed)
    else:
        raise ValueError(f"`kind` must be 'mixup' or 'cutmix', received {kind!r}.")

    def apply(images, labels):
        if labels.shape.rank == 1:
            labels = tf.one_hot(tf.cast(labels, tf.int32), num_classes)
        out = layer({"images": images, "labels": tf.cast(labels, "float32")}, training=True)
        return out["images"], out["labels"]
    return apply


def select_transform(augment, training, mean, std, size, *, cifar, imagenet, normalize,
                     **kwargs):
    """``augment`` ("cifar", "imagenet", None or a callable) -> one of the given recipes.

    The recipes' default statistics fill in ``mean`` / ``std``; ``kwargs`` go
    to the cifar and imagenet recipes. Shared by the tf.data and NumPy paths.
    """
    if callable(augment):
        return augment
    if size is not None:
        kwargs["size"] = size
    if augment == "cifar":
        return cifar(training, mean=CIFAR10_MEAN if mean is None else mean,
                     std=CIFAR10_STD if std is None else std, **kwargs)
    if augment == "imagenet":
        return imagenet(training, mean=IMAGENET_MEAN if mean is None else mean,
                        std=IMAGENET_STD if std is None else std, **kwargs)
    if augment is None:
        return normalize(mean, std)
    raise ValueError(f"`augment` must be 'cifar', 'imagenet', None or a callable, received "
                     f"{augment!r}.")


def get_transform(augment, training, mean=None, std=None, size=None, seed=None):
    """``augment`` ("cifar", "imagenet", None or a callable) -> an image transform."""
    return select_transform(augment, training, mean, std, size, cifar=cifar_transform,
                            imagenet=imagenet_transform, normalize=normalizer, seed=seed)
