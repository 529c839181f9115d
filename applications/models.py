"""Models of the seed papers' experiments, as Keras functional models.

* ``resnet32``: the CIFAR ResNet-32 of LDAM-DRW / ELM / MM / KPS (3 stages of 5
  basic blocks, 16/32/64 channels, option-A shortcuts, He-normal init). With a
  plain 10-way ``Dense`` head it has exactly 464,154 trainable parameters.
* ``small_cnn``: a fast three-convolution network for Fashion-MNIST-LT (and
  other small grey or colour images).
* ``backbone_classifier``: any ``keras.applications`` backbone (ResNet-50 by
  default, ``weights=None``: nothing is downloaded) with a cosine head, for
  ImageNet-LT / Places-LT / iNaturalist-style training.

Every builder names the penultimate (embedding) layer ``"features"`` and the
head ``"logits"``; ``feature_model(model)`` returns the embedding network and
``return_features=True`` builds a two-output model ``[logits, features]``.

Heads (``head=``):
  ``"dense"``   plain ``Dense(num_classes)`` logits (CE, Focal, LA, LMSCE, ...);
  ``"cosine"``  ``keras_margins.layers.CosineDense`` cosines in [-1, 1]
                (LDAM, ELM, MM, KPS, LM-Softmax, NormFace/CosFace/ArcFace);
  ``"dense_l1"`` logits plus the L1 norm of the features as a last column
                (the y_pred layout of ``InfluenceBalancedLoss``).
"""

import keras
from keras import ops

from keras_margins.layers import AppendFeatureNorm, CosineDense

__all__ = ["resnet32", "small_cnn", "backbone_classifier", "feature_model",
           "OptionAShortcut", "CosineDense", "HEADS", "he_normal"]

HEADS = ("dense", "cosine", "dense_l1")


def he_normal(seed=None):
    """PyTorch's ``kaiming_normal_`` (fan-in, gain sqrt(2), untruncated normal)."""
    return keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal", seed=seed)


@keras.saving.register_keras_serializable(package="applications")
class OptionAShortcut(keras.layers.Layer):
    """The option-A shortcut of the CIFAR ResNets: subsample by ``stride`` and
    zero-pad ``pad`` channels on each side (no parameters).

    ``x[:, ::stride, ::stride, :]`` padded to ``channels + 2 * pad`` channels,
    as ``LambdaLayer(lambda x: F.pad(x[:, :, ::2, ::2], ...))`` in the
    LDAM-DRW code.
    """

    def __init__(self, pad, stride=2, **kwargs):
        super().__init__(**kwargs)
        self.pad = int(pad)
        self.stride = int(stride)

    def call(self, inputs):
        x = inputs[:, ::self.stride, ::self.stride, :]
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [self.pad, self.pad]])

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape

        def down(size):
            return None if size is None else -(-size // self.stride)

        return (batch, down(height), down(width), channels + 2 * self.pad)

    def get_config(self):
        config = super().get_config()
        config.update(pad=self.pad, stride=self.stride)
        return config


def _head(features, num_classes, head, head_regularizer=None, seed=None):
    if head not in HEADS:
        raise ValueError(f"`head` must be one of {HEADS}, received {head!r}.")
    if head == "cosine":
        return CosineDense(num_classes, kernel_regularizer=head_regularizer, name="logits")(
            features)
    logits = keras.layers.Dense(num_classes, kernel_initializer=he_normal(seed),
                                kernel_regularizer=head_regularizer,
                                name="logits" if head == "dense" else "dense_logits")(features)
    if head == "dense_l1":
        return AppendFeatureNorm(name="logits")([logits, features])
    return logits


def _finish(inputs, features, num_classes, head, head_regularizer, return_features, name,
            seed=None):
    outputs = _head(features, num_classes, head, head_regularizer, seed)
    if return_features:
        outputs = [outputs, features]
    return keras.Model(inputs, outputs, name=name)


def _check(num_classes):
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"`num_classes` must be an integer >= 2, received {num_classes!r}.")


def _bn(name):
    # PyTorch BatchNorm2d defaults: momentum 0.1 (Keras 0.9), eps 1e-5.
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)


def _basic_block(x, filters, stride, name, seed):
    in_channels = x.shape[-1]
    out = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                              kernel_initializer=he_normal(seed), name=f"{name}_conv1")(x)
    out = _bn(f"{name}_bn1")(out)
    out = keras.layers.ReLU(name=f"{name}_relu1")(out)
    out = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                              kernel_initializer=he_normal(seed), name=f"{name}_conv2")(out)
    out = _bn(f"{name}_bn2")(out)
    shortcut = x
    if stride != 1 or in_channels != filters:
        shortcut = OptionAShortcut((filters - in_channels) // 2, stride,
                                   name=f"{name}_shortcut")(x)
    out = keras.layers.Add(name=f"{name}_add")([out, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(out)


def resnet32(num_classes=10, head="dense", input_shape=(32, 32, 3), head_regularizer=None,
             return_features=False, blocks_per_stage=5, widths=(16, 32, 64), seed=None,
             name="resnet32", input_layer=None):
    """ResNet-32 for CIFAR (He et al. 2016, as in the LDAM-DRW code).

    conv3x3(16)-BN-ReLU, then 3 stages of ``blocks_per_stage`` basic blocks
    with 16/32/64 channels (stride 2 at the start of stages 2 and 3, option-A
    shortcuts that subsample and zero-pad channels), global average pooling
    (the 64-d ``"features"``), then the head. Convolutions have no bias;
    convolution and Dense kernels use He-normal (fan-in) initialisation.
    With ``head="dense"`` and 10 classes: 464,154 trainable parameters.

    Args:
        num_classes: number of classes.
        head: ``"dense"``, ``"cosine"`` or ``"dense_l1"`` (module docstring).
        input_shape: (32, 32, 3) for CIFAR.
        head_regularizer: kernel regularizer of the head (e.g. ZeroCentroid).
        return_features: outputs ``[logits, features]`` instead of logits.
        blocks_per_stage: 5 for ResNet-32 (n = 6 * blocks + 2 layers).
        widths: channels of the three stages.
        seed: initializer seed (``keras.utils.set_random_seed`` also works).
        input_layer: optional layer applied to the images first (e.g. the
            on-device augmentation ``keras_margins.data.RandomPadCropFlip``).
    """
    _check(num_classes)
    inputs = keras.Input(input_shape, name="images")
    x = inputs if input_layer is None else input_layer(inputs)
    x = keras.layers.Conv2D(widths[0], 3, padding="same", use_bias=False,
                            kernel_initializer=he_normal(seed), name="stem_conv")(x)
    x = _bn("stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage, filters in enumerate(widths):
        for block in range(blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, filters, stride, f"stage{stage + 1}_block{block + 1}", seed)
    features = keras.layers.GlobalAveragePooling2D(name="features")(x)
    return _finish(inputs, features, num_classes, head, head_regularizer, return_features,
                   name, seed)


def small_cnn(num_classes=10, head="dense", input_shape=(28, 28, 1), head_regularizer=None,
              return_features=False, widths=(16, 32, 64), seed=None, name="small_cnn"):
    """A small, fast CNN for Fashion-MNIST-LT (28x28 grey images).

    Three ``conv3x3-BN-ReLU`` blocks with ``widths`` channels, 2x2 max-pooling
    after the first two, global average pooling (the ``"features"``,
    ``widths[-1]``-dimensional), then the head. Inputs in [0, 1].
    """
    _check(num_classes)
    inputs = keras.Input(input_shape, name="images")
    x = inputs
    for index, filters in enumerate(widths):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                                kernel_initializer=he_normal(seed),
                                name=f"conv{index + 1}")(x)
        x = _bn(f"bn{index + 1}")(x)
        x = keras.layers.ReLU(name=f"relu{index + 1}")(x)
        if index < len(widths) - 1:
            x = keras.layers.MaxPooling2D(2, name=f"pool{index + 1}")(x)
    features = keras.layers.GlobalAveragePooling2D(name="features")(x)
    return _finish(inputs, features, num_classes, head, head_regularizer, return_features,
                   name, seed)


def backbone_classifier(num_classes, backbone="ResNet50", head="cosine",
                        input_shape=(224, 224, 3), weights=None, head_regularizer=None,
                        return_features=False, name=None, **backbone_kwargs):
    """A ``keras.applications`` backbone with a cosine (or dense) head.

    ``backbone`` is the name of a ``keras.applications`` constructor
    (``"ResNet50"``, ``"ResNet101"``, ``"MobileNetV3Small"``, ...) or a
    callable returning a Keras model; it is built with ``include_top=False``,
    ``pooling="avg"`` and ``weights=weights`` (``None`` by default: random
    init, no download; ``"imagenet"`` downloads the pre-trained weights).
    Inputs are images as the backbone expects them (apply the backbone's
    ``preprocess_input`` in the data pipeline).
    """
    _check(num_classes)
    if isinstance(backbone, str):
        constructor = getattr(keras.applications, backbone, None)
        if constructor is None:
            raise ValueError(f"`backbone` must name a keras.applications model (e.g. "
                             f"'ResNet50'), received {backbone!r}.")
    else:
        constructor = backbone
    base = constructor(include_top=False, weights=weights, input_shape=input_shape,
                       pooling="avg", **backbone_kwargs)
    inputs = keras.Input(input_shape, name="images")
    features = keras.layers.Identity(name="features")(base(inputs))
    name = name or f"{getattr(base, 'name', 'backbone')}_{head}"
    return _finish(inputs, features, num_classes, head, head_regularizer, return_features,
                   name)


def feature_model(model):
    """The embedding network of a model built here: inputs -> ``"features"``."""
    return keras.Model(model.inputs, model.get_layer("features").output,
                       name=f"{model.name}_features")
