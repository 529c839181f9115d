"""The CIFAR crop-and-flip augmentation as a Keras layer, run on the accelerator.

``RandomPadCropFlip`` is written with ``keras.ops`` and ``keras.random`` only,
so it compiles into the training step on every backend (XLA on TensorFlow,
``jax.jit``, torch) and runs where the model runs: no per-step host work. It
draws, per image, a crop offset uniform over the ``(2 * padding + 1) ** 2``
positions and a horizontal flip with probability 1/2, exactly the distribution
of ``numpy_cifar_transform`` and ``cifar_transform``.
"""

import keras
from keras import ops

__all__ = ["RandomPadCropFlip"]


@keras.saving.register_keras_serializable(package="keras_margins")
class RandomPadCropFlip(keras.layers.Layer):
    """Pad, random crop back to the input size and random horizontal flip, per image.

    For a batch ``(B, H, W, C)`` (channels last) and ``training=True``, each
    image is padded by ``padding`` pixels on every side with ``fill_value``,
    an ``H x W`` window is cut at an offset drawn uniformly in
    ``0..2 * padding`` along each axis, and the window is mirrored left-right
    with probability 1/2 (when ``flip``). Offsets and flips are drawn
    independently for every image of the batch. With ``training`` false or
    unset the layer returns its input unchanged, so ``predict`` and
    ``evaluate`` see the plain images.

    The host pipelines pad the uint8 image with 0 before normalising. Placed
    after the normalisation, pass ``fill_value=[-m / s for m, s in
    zip(mean, std)]`` (the normalised black pixel) to reproduce them exactly;
    the default 0.0 pads with the mean colour of normalised data.

    The output has the input's shape and dtype (float32, bfloat16, float16 or
    an integer type): the layer gathers pixels and does no arithmetic on them.

    Args:
        padding: pixels added on each side before cropping (4 for CIFAR).
        flip: also flip horizontally with probability 1/2.
        fill_value: the padding value, a number or one value per channel.
        seed: seed of the layer's ``keras.random.SeedGenerator``; fixed, the
            sequence of augmentations is reproducible.

    Example:
        model = keras.Sequential([RandomPadCropFlip(padding=4), backbone])
    """

    def __init__(self, padding=4, flip=True, fill_value=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        padding = int(padding)
        if padding < 0:
            raise ValueError(f"`padding` must be >= 0, received {padding}.")
        self.padding = padding
        self.flip = bool(flip)
        if isinstance(fill_value, (list, tuple)):
            fill_value = [float(v) for v in fill_value]
        else:
            fill_value = float(fill_value)
        self.fill_value = fill_value
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        # Keep the input's dtype (no cast to the layer's compute dtype).
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        self.supports_jit = True

    def _pad(self, images):
        p = self.padding
        pads = [[0, 0], [p, p], [p, p], [0, 0]]
        fill = self.fill_value
        if isinstance(fill, float):
            return ops.pad(images, pads, constant_values=fill)
        # Per-channel fill: pad with 0, then put the fill where the padding is.
        padded = ops.pad(images, pads)
        inside = ops.pad(ops.ones_like(images[:1, :, :, :1], dtype="bool"), pads)
        fill = ops.cast(ops.reshape(ops.convert_to_tensor(fill), (1, 1, 1, -1)), images.dtype)
        return ops.where(inside, padded, fill)

    def call(self, inputs, training=None):
        images = ops.convert_to_tensor(inputs)
        if not training or (self.padding == 0 and not self.flip):
            return images
        if len(images.shape) != 4:
            raise ValueError(f"RandomPadCropFlip expects a batch (B, H, W, C), received an "
                             f"input of shape {images.shape}.")
        shape = ops.shape(images)
        batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
        p = self.padding
        positions = 2 * p + 1
        top = keras.random.randint((batch,), 0, positions, dtype="int32",
                                   seed=self.seed_generator)
        left = keras.random.randint((batch,), 0, positions, dtype="int32",
                                    seed=self.seed_generator)
        rows = ops.expand_dims(top, 1) + ops.expand_dims(ops.arange(height, dtype="int32"), 0)
        steps = ops.expand_dims(ops.arange(width, dtype="int32"), 0)  # (1, W)
        if self.flip:
            flipped = keras.random.uniform((batch,), seed=self.seed_generator) < 0.5
            steps = ops.where(ops.expand_dims(flipped, 1), (width - 1) - steps, steps)
        cols = ops.expand_dims(left, 1) + steps                               # (B, W)
        padded = self._pad(images) if p else images
        # Rows, then columns: two gathers with per-image index grids.
        row_index = ops.broadcast_to(ops.reshape(rows, (batch, height, 1, 1)),
                                     (batch, height, width + 2 * p, channels))
        out = ops.take_along_axis(padded, row_index, axis=1)
        col_index = ops.broadcast_to(ops.reshape(cols, (batch, 1, width, 1)),
                                     (batch, height, width, channels))
        return ops.take_along_axis(out, col_index, axis=2)

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, inputs, training=None):
        return keras.KerasTensor(inputs.shape, dtype=inputs.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(padding=self.padding, flip=self.flip, fill_value=self.fill_value,
                      seed=self.seed)
        return config
