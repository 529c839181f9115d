"""Decoupled classifiers: re-balancing the head of a trained model.

Kang et al. (2020), "Decoupling Representation and Classifier for Long-Tailed
Recognition" (ICLR): train the whole model with instance-balanced sampling,
then re-balance only the classifier:

- ``tau_normalize``: post-hoc ``w_j <- w_j / ||w_j||^tau`` (no training);
- ``classifier_retraining`` (cRT): re-initialise the head and re-train it
  with class-balanced sampling, the backbone frozen;
- ``learnable_weight_scaling`` (LWS): learn one scale ``f_j`` per class on
  the frozen head's logits, with class-balanced sampling.

``max_norm_head`` adds the MaxNorm half of weight balancing (Alshammari et
al., 2022, "Long-Tailed Recognition via Weight Balancing", CVPR).

Every function takes a functional or ``Sequential`` Keras model (one input,
one output) whose head is a top-level ``Dense`` or ``CosineDense`` layer: by
default its last layer, or the one named by ``layer``. Class-balanced batches
come from ``keras_margins.data``'s ``class_balanced`` sampler through
``ArrayBatches`` (NumPy only, every backend).
"""

import keras
import numpy as np

from keras_margins.layers import CosineDense
from keras_margins.validation import validate_labels, validate_positive

__all__ = ["LearnableWeightScaling", "find_head", "tau_normalize", "class_balanced_batches",
           "classifier_retraining", "learnable_weight_scaling", "max_norm_head"]


def _describe_layer(layer):
    return f"{type(layer).__name__} {layer.name!r}"


def find_head(model, layer=None):
    """The classifier head of ``model``: a top-level ``Dense`` or ``CosineDense`` layer.

    Args:
        model: a built functional or ``Sequential`` ``keras.Model``.
        layer: ``None`` (the model's last layer), a layer name, or a layer of ``model``.

    Raises:
        ValueError: ``model`` is not a Keras model, or the chosen layer is not a
            ``Dense``/``CosineDense`` layer of it.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a keras.Model, received "
                         f"{type(model).__name__}.")
    layers = list(model.layers)
    if not layers:
        raise ValueError("`model` has no layers: expected a model ending in a Dense or "
                         "CosineDense head.")
    if layer is None:
        head = layers[-1]
    elif isinstance(layer, str):
        matches = [candidate for candidate in layers if candidate.name == layer]
        if not matches:
            raise ValueError(f"`layer` must name a top-level layer of the model, received "
                             f"{layer!r}; the model's layers are "
                             f"{[candidate.name for candidate in layers]}.")
        head = matches[0]
    elif any(candidate is layer for candidate in layers):
        head = layer
    else:
        raise ValueError(f"`layer` must be None, a layer name or a top-level layer of the "
                         f"model, received {layer!r}.")
    if not isinstance(head, (keras.layers.Dense, CosineDense)):
        raise ValueError(f"expected a Dense or CosineDense classifier head, received "
                         f"{_describe_layer(head)}"
                         f"{' (the last layer of the model)' if layer is None else ''}.")
    if not head.built:
        raise ValueError(f"the head {_describe_layer(head)} is not built: build the model "
                         f"(call it on data or give it an Input) first.")
    return head


def _int_at_least(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, received {value!r}.")
    return int(value)


def _num_classes(head):
    return int(head.units)


def _is_linear(head):
    return (isinstance(head, CosineDense)
            or head.activation is keras.activations.linear)


def _clone(model):
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


# -- tau-normalisation ---------------------------------------------------------------
def tau_normalize(model, tau=1.0, layer=None, drop_bias=False):
    """A copy of ``model`` whose head's class weights are τ-normalised.

    ``w_j <- w_j / ||w_j||_2 ** tau`` for every class ``j`` (column ``j`` of the
    ``Dense`` kernel), which evens out the larger weight norms that head classes
    get from instance-balanced training (Kang et al., 2020, Eq. 3). ``tau = 0``
    changes nothing, ``tau = 1`` gives unit-norm classes; the paper picks ``tau``
    in (0, 1) on a validation set. All-zero columns are left as they are.

    The bias is kept by default, so ``tau = 0`` reproduces the model exactly;
    ``drop_bias=True`` zeroes it, as the authors' τ-norm evaluation does
    (logits ``h . w_j / ||w_j||^tau`` without bias).

    Args:
        model: a functional or ``Sequential`` model with a ``Dense`` head.
        tau: the exponent, ``>= 0``.
        layer: the head (default: the last layer); see ``find_head``.
        drop_bias: zero the head's bias.

    Returns:
        A new, uncompiled model (``keras.models.clone_model`` with copied
        weights); ``model`` itself is left untouched.

    Raises:
        ValueError: ``tau < 0`` or not a number, no ``Dense`` head, or a
            ``CosineDense`` head (it divides by ``||w_j||`` itself, so τ-norm
            cannot change its outputs).
    """
    head = find_head(model, layer)
    tau_value = _non_negative(tau, "tau")
    if isinstance(head, CosineDense):
        raise ValueError(f"tau_normalize expects a Dense head, received "
                         f"{_describe_layer(head)}: a CosineDense head already uses "
                         f"unit-norm class weights, so τ-normalisation would not change "
                         f"its outputs.")
    clone = _clone(model)
    new_head = clone.layers[[id(item) for item in model.layers].index(id(head))]
    kernel = np.asarray(keras.ops.convert_to_numpy(new_head.kernel))
    values = kernel.astype(np.float64)
    norms = np.linalg.norm(values, axis=0)
    scale = np.where(norms > 0, np.power(np.where(norms > 0, norms, 1.0), tau_value), 1.0)
    new_head.kernel.assign((values / scale).astype(kernel.dtype))
    if drop_bias and getattr(new_head, "bias", None) is not None:
        new_head.bias.assign(np.zeros(tuple(new_head.bias.shape), new_head.bias.dtype))
    return clone


def _non_negative(value, name):
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number >= 0, received {value!r}.") from None
    if not np.isfinite(number) or number < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0, received {value!r}.")
    return number


# -- class-balanced data -------------------------------------------------------------
def _as_float32(images, rng):
    del rng
    return np.asarray(images, dtype=np.float32)


def class_balanced_batches(x, y, batch_size=128, seed=0, num_samples=None, transform=None):
    """``ArrayBatches`` of ``(x, y)`` drawn with the ``class_balanced`` sampler.

    Each epoch draws ``num_samples`` (default ``len(y)``) indices, a class
    uniformly then one of its samples uniformly (Kang et al., 2020, Eq. 1 with
    ``q = 0``). ``x`` is fed as float32 as given unless ``transform(x_batch, rng)``
    (e.g. an augmentation from ``keras_margins.data.numpy_augment``) is passed.

    Raises:
        ValueError: ``x`` and ``y`` differ in length, ``y`` is not integer
            class ids, or a bad ``batch_size``/``seed``/``num_samples``.
    """
    from keras_margins.data.batches import ArrayBatches
    from keras_margins.data.samplers import class_balanced

    x, y = _check_arrays(x, y)
    sampler = class_balanced(seed=seed, num_samples=num_samples)
    return ArrayBatches(x, y, batch_size, transform=transform or _as_float32,
                        sampler=sampler, seed=seed)


def _check_arrays(x, y):
    """``(x, y)`` as arrays; ``ArrayBatches`` checks the rest (shapes, integer labels)."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
        raise ValueError(f"`x` and `y` must hold the same number of samples, received "
                         f"shapes {x.shape} and {y.shape}.")
    return x, y


# -- training only part of the model -------------------------------------------------
def _all_layers(layer):
    for child in getattr(layer, "layers", None) or []:
        yield child
        yield from _all_layers(child)


class _Frozen:
    """Freezes every layer of ``model`` but ``trainable``; restores the flags on exit."""

    def __init__(self, model, trainable):
        self.model, self.trainable = model, trainable

    def __enter__(self):
        # Pre-order: a parent's flag is restored before its children's own flags.
        # (A model with trainable=False has no trainable weights at all, whatever its
        # layers' flags, so the model stays trainable and its layers are frozen.)
        self.saved = [(self.model, self.model.trainable)]
        self.saved += [(item, item.trainable) for item in _all_layers(self.model)]
        self.model.trainable = True
        for item in self.model.layers:
            item.trainable = False
        for item in self.trainable:
            item.trainable = True
        return self

    def __exit__(self, *exc_info):
        for item, flag in self.saved:
            item.trainable = flag
        return False


def _is_batch_source(x, y):
    """Whether ``x`` is a source of ``(inputs, labels)`` batches (``y`` not given)."""
    return y is None and not isinstance(x, (np.ndarray, list, tuple))


def _batch_norm_layers(model):
    return [item for item in _all_layers(model)
            if isinstance(item, keras.layers.BatchNormalization)]


def _fit(model, head, trained, x, y, epochs, batch_size, optimizer, loss, seed, num_samples,
         transform, verbose, **fit_kwargs):
    """Fits ``model`` with only the layers ``trained`` trainable, on class-balanced
    batches of the arrays ``(x, y)`` or on the batch source ``x`` as it is."""
    epochs = _int_at_least(epochs, "epochs", 1)
    batch_size = _int_at_least(batch_size, "batch_size", 1)
    if _is_batch_source(x, y):
        batches = x
    else:
        x, y = _check_arrays(x, y)
        y = validate_labels(y, _num_classes(head), name="y")
        batches = class_balanced_batches(x, y, batch_size, seed=seed,
                                         num_samples=num_samples, transform=transform)
    if loss is None:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=_is_linear(head))
    if optimizer is None:
        optimizer = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)
    with _Frozen(model, trained):
        model.compile(optimizer=optimizer, loss=loss)
        model.fit(batches, epochs=epochs, verbose=verbose, **fit_kwargs)
    return model


def _check_inputs(x, y):
    """Arrays ``(x, y)`` of the same length, or a batch source ``x`` with ``y=None``."""
    if not _is_batch_source(x, y):
        if y is None:
            raise ValueError(f"`y` is required with array inputs `x` (received an array of "
                             f"shape {np.asarray(x).shape} and y=None); pass labels, or a "
                             f"dataset of (inputs, labels) batches as `x`.")
        _check_arrays(x, y)


def _reinitialize(head, seed):
    """Draws the head's weights again from its initialisers (seeded when ``seed`` is set)."""
    for attribute in ("kernel", "bias"):
        variable = getattr(head, attribute, None)
        if variable is None:
            continue
        initializer = getattr(head, f"{attribute}_initializer")
        config = initializer.get_config()
        if seed is not None and "seed" in config:
            initializer = type(initializer).from_config({**config, "seed": seed})
        variable.assign(initializer(tuple(variable.shape), dtype=variable.dtype))


def classifier_retraining(model, x, y=None, epochs=10, *, batch_size=128, optimizer=None,
                          loss=None, layer=None, reinitialize=True, seed=0, num_samples=None,
                          transform=None, train_batch_norm=False, verbose=0, **fit_kwargs):
    """Classifier re-training (cRT): re-train only the head, class-balanced, backbone frozen.

    The head's weights are drawn again from its initialisers, then ``model`` is
    fitted with every other layer ``trainable=False`` (so BatchNorm layers run
    in inference mode) on class-balanced batches of ``(x, y)``
    (``class_balanced_batches``), minimising ``loss`` (Kang et al., 2020, §4).

    Args:
        model: a functional or ``Sequential`` model with a ``Dense`` or
            ``CosineDense`` head; modified in place.
        x: training inputs, ``(N, ...)``; or, with ``y=None``, a batch source
            (``tf.data.Dataset``, ``keras.utils.PyDataset``) of ``(inputs,
            labels)`` batches, used as it is (make it class-balanced, e.g. with
            the ``class_balanced`` sampler of ``keras_margins.data``).
        y: integer class ids (sparse, ``(N, 1)`` or one-hot); ``None`` with a
            batch source.
        epochs: epochs of re-training, ``>= 1``.
        batch_size: samples per batch.
        optimizer: default ``SGD(0.01, momentum=0.9)``.
        loss: default sparse categorical cross-entropy (``from_logits`` unless the
            ``Dense`` head has an activation). With a ``CosineDense`` head pass the
            loss the model was trained with (e.g. a scaled-cosine margin loss).
        layer: the head (default: the last layer); see ``find_head``.
        reinitialize: draw the head's weights again before training.
        seed: seed of the sampler and of the re-initialisation.
        num_samples: samples per epoch (default ``len(y)``).
        transform: ``transform(x_batch, rng)`` applied to each batch (augmentation).
        train_batch_norm: also train every ``BatchNormalization`` layer (its scale,
            offset and moving statistics, in training mode): the "shift learning"
            of MiSLAS (Zhong et al., CVPR 2021, "shifted batch normalization").
        verbose: ``model.fit``'s verbosity.
        **fit_kwargs: further ``model.fit`` arguments (e.g. ``callbacks``).

    Returns:
        ``model``, left compiled for head-only training (its ``history``
        attribute holds the fit's ``History``); every layer's ``trainable`` flag
        is restored on return, so compile again before training further.

    Raises:
        ValueError: no ``Dense``/``CosineDense`` head, ``epochs < 1``, ``x``/``y``
            of different lengths, or labels outside the head's classes.
    """
    head = find_head(model, layer)
    _int_at_least(epochs, "epochs", 1)
    _check_inputs(x, y)
    if reinitialize:
        _reinitialize(head, seed)
    trained = [head] + (_batch_norm_layers(model) if train_batch_norm else [])
    return _fit(model, head, trained, x, y, epochs, batch_size, optimizer, loss, seed,
                num_samples, transform, verbose, **fit_kwargs)


# -- learnable weight scaling --------------------------------------------------------
@keras.saving.register_keras_serializable(package="keras_margins")
class LearnableWeightScaling(keras.layers.Layer):
    """Per-class learnable scales on logits: ``y_j = f_j * z_j``, ``f`` initialised to 1.

    With ``z_j = w_j . h + b_j`` this is the LWS classifier of Kang et al.
    (2020), ``w_j <- f_j w_j`` (the bias scales with it, as in the authors'
    code). Input: logits ``(..., C)``; output: the same shape.

    Args:
        scale_initializer: initialiser of the ``(C,)`` scales (default ones).
        scale_constraint: optional Keras constraint on the scales.
    """

    def __init__(self, scale_initializer="ones", scale_constraint=None, **kwargs):
        super().__init__(**kwargs)
        self.scale_initializer = keras.initializers.get(scale_initializer)
        self.scale_constraint = keras.constraints.get(scale_constraint)

    def build(self, input_shape):
        if input_shape[-1] is None:
            raise ValueError(f"LearnableWeightScaling needs a known number of classes (last "
                             f"dimension), received input shape {input_shape}.")
        self.scales = self.add_weight(name="scales", shape=(int(input_shape[-1]),),
                                      initializer=self.scale_initializer,
                                      constraint=self.scale_constraint)

    def call(self, inputs):
        return inputs * keras.ops.cast(self.scales, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            scale_initializer=keras.initializers.serialize(self.scale_initializer),
            scale_constraint=keras.constraints.serialize(self.scale_constraint))
        return config


def learnable_weight_scaling(model, x, y=None, epochs=10, *, batch_size=128, optimizer=None,
                             loss=None, seed=0, num_samples=None, transform=None, verbose=0,
                             **fit_kwargs):
    """Learnable weight scaling (LWS): learn per-class scales ``f_j`` of the frozen head.

    Appends a ``LearnableWeightScaling`` layer (scales 1, so the new model
    starts with ``model``'s predictions) to the last layer's output and fits
    only the scales, every layer of ``model`` frozen, on class-balanced
    batches of ``(x, y)`` (Kang et al., 2020, §4).

    Args:
        model: a functional or ``Sequential`` model whose last layer is a
            ``Dense`` (linear activation: logits) or ``CosineDense`` head.
        x: training inputs, ``(N, ...)``, or a batch source (with ``y=None``), as
            in ``classifier_retraining``.
        y: integer class ids (sparse, ``(N, 1)`` or one-hot).
        epochs: epochs of training, ``>= 1``.
        optimizer: default ``SGD(0.01, momentum=0.9)``.
        loss: default sparse categorical cross-entropy from logits.
        **kwargs: ``batch_size``, ``seed``, ``num_samples``, ``transform``,
            ``verbose`` and ``model.fit`` arguments, as in ``classifier_retraining``.

    Returns:
        A new model ``LearnableWeightScaling(model(inputs))`` sharing
        ``model``'s layers (whose weights do not change), compiled for the
        scales only; ``trainable`` flags are restored on return.

    Raises:
        ValueError: the last layer is not a ``Dense``/``CosineDense`` head or has a
            non-linear activation, ``epochs < 1``, or ``x``/``y`` of different lengths.
    """
    head = find_head(model)
    if not _is_linear(head):
        activation = getattr(head.activation, "__name__", repr(head.activation))
        raise ValueError(f"learnable_weight_scaling scales logits: expected a head with a "
                         f"linear activation, received {_describe_layer(head)} with "
                         f"activation {activation!r}.")
    _int_at_least(epochs, "epochs", 1)
    _check_inputs(x, y)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"expected a model with one input and one output, received "
                         f"{len(model.inputs)} inputs and {len(model.outputs)} outputs.")
    scaling = LearnableWeightScaling(name=f"{head.name}_lws")
    scaled = keras.Model(model.inputs[0], scaling(model.outputs[0]),
                         name=f"{model.name}_lws")
    return _fit(scaled, head, [scaling], x, y, epochs, batch_size, optimizer, loss, seed,
                num_samples, transform, verbose, **fit_kwargs)


# -- weight balancing ----------------------------------------------------------------
def max_norm_head(model, max_value, layer=None):
    """Caps every class weight norm of the head: ``||w_j||_2 <= max_value`` after each step.

    Sets ``keras.constraints.MaxNorm(max_value, axis=0)`` (one norm per class
    column of the kernel) as the head's kernel constraint, which the optimizer
    applies after every update: the MaxNorm half of weight balancing
    (Alshammari et al., 2022), used with weight decay (e.g.
    ``keras.optimizers.SGD(..., weight_decay=5e-4)``) when re-training the
    classifier. Current weights are not projected until the next step.

    Args:
        model: a functional or ``Sequential`` model with a ``Dense`` or
            ``CosineDense`` head; modified in place. Call before ``compile``.
        max_value: the norm cap, ``> 0``.
        layer: the head (default: the last layer); see ``find_head``.

    Returns:
        ``model``.

    Raises:
        ValueError: no ``Dense``/``CosineDense`` head, or ``max_value <= 0``.
    """
    head = find_head(model, layer)
    max_value = validate_positive(max_value, "max_value")
    constraint = keras.constraints.MaxNorm(max_value=max_value, axis=0)
    head.kernel_constraint = constraint
    head.kernel.constraint = constraint
    return model
