"""The tf.data pipeline shared by every builder: load, cache, shuffle or re-sample,
augment, batch, prefetch, with a known ``cardinality``.

Training: ``(image or path, label)`` -> [re-sample indices | decode -> cache ->
shuffle] -> augment per image -> batch -> [MixUp/CutMix] -> prefetch.
A sampler draws new indices every epoch, so with one the decoded images are not
cached (a cache would replay the first epoch's order); arrays in memory need no
cache anyway.
"""

import numpy as np

from keras_margins.data._imports import import_tensorflow

__all__ = ["decode_image_fn", "make_pipeline"]


def decode_image_fn(channels=3, image_size=None):
    """``path -> uint8 (H, W, channels)`` with ``tf.io.decode_image`` (JPEG/PNG/BMP/GIF).

    With ``image_size=(h, w)``, images of another size are resized with
    ``keras.layers.Resizing`` and the output shape is static.
    """
    import keras
    tf = import_tensorflow("decode_image_fn (a tf.data decoder)")

    resize = None
    if image_size is not None:
        height, width = (image_size, image_size) if np.isscalar(image_size) else image_size
        resize = keras.layers.Resizing(int(height), int(width))

    def decode(path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=channels,
                                   expand_animations=False)
        if resize is None:
            return image
        same = tf.reduce_all(tf.equal(tf.shape(image)[:2], [height, width]))
        image = tf.cond(same, lambda: image,
                        lambda: tf.cast(tf.clip_by_value(tf.round(resize(tf.cast(
                            image, "float32"))), 0, 255), tf.uint8))
        return tf.ensure_shape(image, [height, width, channels])
    return decode


def make_pipeline(features, labels, *, transform, load=None, training=False, batch_size=128,
                  shuffle=True, sampler=None, cache=True, seed=0, mix=None,
                  drop_remainder=False, shuffle_buffer=None):
    """Builds a batched ``tf.data.Dataset`` of ``(float32 images, int32 labels)``.

    Args:
        features: uint8 image array (N, H, W, C) or a str array of file paths.
        labels: int class ids (N,).
        transform: per-image ``uint8 -> float32`` function (augmentation or
            evaluation transform).
        load: per-element ``feature -> uint8 image`` (e.g. ``decode_image_fn()``);
            ``None`` when ``features`` already are images.
        training: shuffle / re-sample and use ``mix`` only when True.
        sampler: a ``samplers.Sampler`` (training only), ``None`` shuffles.
        cache: cache the loaded images (ignored with a sampler).
        mix: batch-level ``(images, labels) -> (images, labels)`` (MixUp/CutMix).
        shuffle_buffer: defaults to the whole dataset (an exact shuffle).
    """
    tf = import_tensorflow("make_pipeline (a tf.data pipeline)")

    autotune = tf.data.AUTOTUNE
    labels = np.asarray(labels).reshape(-1).astype(np.int32)
    size = len(labels)
    if len(features) != size:
        raise ValueError(f"features and labels differ in length: {len(features)} != {size}.")
    if size == 0:
        raise ValueError("cannot build a pipeline over an empty dataset.")
    identity = load is None
    load = (lambda x: x) if identity else load
    if training and sampler is not None:
        features_t, labels_t = tf.constant(features), tf.constant(labels)
        ds = sampler.index_dataset(labels).map(
            lambda i: (load(tf.gather(features_t, i)), tf.gather(labels_t, i)),
            num_parallel_calls=autotune)
    else:
        ds = tf.data.Dataset.from_tensor_slices((features, labels))
        buffer = min(int(shuffle_buffer or size), size)
        if training and shuffle and not (cache and not identity):
            ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        if not identity:
            ds = ds.map(lambda x, y: (load(x), y), num_parallel_calls=autotune)
            if cache:
                ds = ds.cache()
                if training and shuffle:
                    ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda x, y: (transform(x), y), num_parallel_calls=autotune)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=autotune)
    if training and mix is not None:
        ds = ds.map(mix, num_parallel_calls=autotune)
    return ds.prefetch(autotune)
