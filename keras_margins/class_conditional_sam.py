"""Class-conditional sharpness-aware training of a linear classifier head (CC-SAM).

``CCSAMModel`` is ``head(backbone(x))`` with a ``Dense`` head whose training
loss mixes the loss at the current weights with the loss under a per-class
perturbation (Zhou et al., CVPR 2023):

    L_total = (1 - beta) L(z) + beta L_flat + regularisation

``perturb="weights"`` (CC-SAM's first stage, whole network trained): each
sample's logits are computed with the head's parameters perturbed for its
class, ``z'_i = f_i (W + E_c) + (b + e_c)``, ``c = y_i``. For each head
parameter ``p`` (kernel, bias) and each class ``c`` in the batch,

    g_c = grad_p of the mean per-sample loss over the batch's samples of class c
    E_c = kappa * P^(1/4) * sqrt(||p|| / ||g_c||) / (sqrt(2) (n_c - 1)^(1/4)) * g_c / ||g_c||

with ``n_c`` the class's training count and ``P`` the head's parameter count:
the radius shrinks as ``(n_c - 1)^(-1/4)`` (the PAC-Bayesian characteristic
radius of the paper's analysis), larger for tail classes. ``L_flat = L(z')``.

``perturb="features"`` (CC-SAM's second stage, head re-trained on frozen
features with class-balanced batches): each sample's features are moved along
its class's feature gradient, weighted per class,

    u_i  = grad_{f_i} loss_i,   f'_i = f_i + lambda w_c u_i / sqrt(sum_{k in c} ||u_k||^2)
    w_c  = log(n_max / n_c + 0.01) / 2,   L_flat = sum_i w_{y_i} loss_i(f'_i W + b) / B

and ``beta`` is ramped from ``1 / epochs`` to 1 over the stage
(``FlatRatioRamp``). The perturbations are constants of the step (no
second-order terms): gradients are taken at the perturbed point and applied to
the unperturbed parameters, as in SAM; the backbone receives the gradient
through ``f``. The per-class constants (``kappa = 1e-6``, ``lambda = 1``,
``beta = 0.3``, the ``/ 2`` in ``w_c``) are those of the authors' released
CIFAR configuration.

A Dense head is linear in its parameters, so both perturbations are computed
for the whole batch at once, without a backward pass per class:
``f_i . g_c = sum_{k in c} (f_i . f_k) d_k / n_c`` and ``||g_c||^2 =
sum_{k,l in c} (f_k . f_l)(d_k . d_l) / n_c^2``, with ``d_k = dloss_k/dz_k``
(one gradient of the per-sample loss with respect to the logits). The cost is
a few ``(B, B)`` products, independent of the number of classes.

Reference: Zhou, Li, Zhao, Heng, Gong, "Class-Conditional Sharpness-Aware
Minimization for Deep Long-Tailed Recognition", CVPR 2023.
"""

import keras
import numpy as np

from keras_margins import ops as km_ops
from keras_margins.priors import cc_sam_feature_weights, cc_sam_weight_radii
from keras_margins.validation import validate_class_counts, validate_non_negative

__all__ = ["CCSAMModel", "FlatRatioRamp", "cc_sam_model"]

PERTURBATIONS = ("weights", "features")
BACKENDS = ("tensorflow", "jax", "torch")
# The authors' CIFAR configuration: weight radius scale, feature radius.
DEFAULT_RADIUS = {"weights": 1e-6, "features": 1.0}
# Added to gradient norms so that a zero gradient gives a finite perturbation.
_NORM_EPSILON = 1e-12


def _validate_perturb(perturb):
    if perturb not in PERTURBATIONS:
        raise ValueError(f"`perturb` must be one of {PERTURBATIONS}, received {perturb!r}.")
    return perturb


def _validate_head(head):
    if not isinstance(head, keras.layers.Dense):
        raise ValueError(f"CC-SAM perturbs a linear head: `head` must be a keras.layers.Dense "
                         f"layer, received {type(head).__name__}.")
    if head.activation is not keras.activations.linear:
        raise ValueError(f"`head` must output logits (no activation), received the Dense "
                         f"layer {head.name!r} with activation "
                         f"{getattr(head.activation, '__name__', head.activation)!r}.")
    return head


def _loss_gradient(per_sample_loss, y, logits):
    """``d sum_i loss_i / d logits`` (one backward pass on the logits alone), on one
    of ``BACKENDS`` (checked when the model is built)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        return jax.grad(lambda z: keras.ops.sum(per_sample_loss(y, z)))(logits)
    if backend == "tensorflow":
        import tensorflow as tf
        with tf.GradientTape() as tape:
            tape.watch(logits)
            total = tf.reduce_sum(per_sample_loss(y, logits))
        return tape.gradient(total, logits)
    import torch
    leaf = logits.detach().requires_grad_(True)
    with torch.enable_grad():
        total = torch.sum(per_sample_loss(y, leaf))
    return torch.autograd.grad(total, leaf)[0]


@keras.saving.register_keras_serializable(package="keras_margins")
class CCSAMModel(keras.Model):
    """``head(backbone(x))`` trained with class-conditional sharpness-aware
    minimisation (CC-SAM) of its ``Dense`` head.

    The training loss is ``(1 - flat_ratio) L(z) + flat_ratio L_flat`` plus the
    model's regularisation losses, with ``L`` the compiled loss and ``L_flat``
    the same loss under a class-conditional perturbation of the head's
    parameters (``perturb="weights"``) or of the features
    (``perturb="features"``); see the module docstring for the formulas. Only
    training steps are affected: ``predict``/``evaluate`` compute
    ``head(backbone(x))``. Works with ``compile``/``fit`` on TensorFlow, JAX and
    PyTorch, sample and class weights, soft labels (grouped by their largest
    entry) and mixed precision (the perturbation is computed in float32).

    Args:
        backbone: a layer or model mapping inputs to features ``(batch, D)``.
        head: a ``keras.layers.Dense`` layer without activation (the logits).
        class_counts: training samples per class (at least 2 per class with
            ``perturb="weights"``).
        perturb: ``"weights"`` (first stage) or ``"features"`` (second stage).
        radius: ``kappa`` (weights, default 1e-6) or ``lambda`` (features,
            default 1.0): the authors' CIFAR values.
        flat_ratio: ``beta`` in [0, 1] (0.3 in the authors' first stage; ramp
            it with ``FlatRatioRamp`` in the second). 0 is plain training.
        **kwargs: passed to ``keras.Model`` (e.g. ``name``).

    Example:
    ```python
    model = km.class_conditional_sam.cc_sam_model(network, counts)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    model.fit(mixed_batches, epochs=200)
    ```

    Reference: Zhou et al., "Class-Conditional Sharpness-Aware Minimization for
    Deep Long-Tailed Recognition", CVPR 2023.
    """

    def __init__(self, backbone, head, class_counts, perturb="weights", radius=None,
                 flat_ratio=0.3, **kwargs):
        backend = keras.backend.backend()
        if backend not in BACKENDS:
            raise ValueError(f"CCSAMModel trains on the {', '.join(BACKENDS)} backends; the "
                             f"current Keras backend is {backend!r}.")
        perturb = _validate_perturb(perturb)
        counts = validate_class_counts(class_counts)
        if perturb == "weights":
            cc_sam_weight_radii(counts, 1)  # ValueError for a class with fewer than 2
        radius = DEFAULT_RADIUS[perturb] if radius is None else radius
        radius = validate_non_negative(radius, "radius")
        flat_ratio = validate_non_negative(flat_ratio, "flat_ratio", upper=1.0)
        head = _validate_head(head)
        if len(counts) != head.units:
            raise ValueError(f"`class_counts` has {len(counts)} classes but the head "
                             f"{head.name!r} has {head.units} units.")
        super().__init__(**kwargs)
        self.backbone = backbone
        self.head = head
        self.class_counts = [int(c) for c in counts]
        self.perturb = perturb
        self.radius = radius
        self.flat_ratio = flat_ratio
        object.__setattr__(self, "_features", None)

    def call(self, inputs, training=None):
        features = self.backbone(inputs, training=training)
        logits = self.head(features)
        if training:
            # compute_loss of the same step reads them (one output, one label tensor).
            object.__setattr__(self, "_features", features)
        return logits

    def train_step(self, *args, **kwargs):
        try:
            return super().train_step(*args, **kwargs)
        finally:
            object.__setattr__(self, "_features", None)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        features = self._features
        object.__setattr__(self, "_features", None)
        if not training or features is None or self.flat_ratio == 0 or self.radius == 0:
            return loss
        if isinstance(y, (list, tuple, dict)) or not hasattr(y_pred, "shape"):
            raise ValueError("CCSAMModel supports one output and one label tensor.")
        flat_logits, flat_weight = self.flat_logits(features, y, y_pred)
        if flat_weight is not None and sample_weight is not None:
            flat_weight = keras.ops.multiply(
                flat_weight, keras.ops.reshape(keras.ops.cast(sample_weight, "float32"), (-1,)))
        elif flat_weight is None:
            flat_weight = sample_weight
        # L(z) again (inside ``loss`` with the regularisation terms): the same
        # expression, merged by XLA; on eager PyTorch one extra (batch, classes) CE.
        data = self._compile_loss(y, y_pred, sample_weight)
        dtype = keras.backend.standardize_dtype(y_pred.dtype)
        flat = self._compile_loss(y, keras.ops.cast(flat_logits, dtype), flat_weight)
        return loss + self.flat_ratio * (flat - data)

    # -- the perturbed logits (backend-agnostic) -------------------------------------

    def _per_sample_loss(self):
        loss = self.loss
        if isinstance(loss, keras.losses.Loss):
            return loss.call
        if isinstance(loss, str) or callable(loss):
            return keras.losses.get(loss)
        raise ValueError(f"CCSAMModel needs one loss passed to `compile()`, received "
                         f"{loss!r}.")

    def flat_logits(self, features, y, logits):
        """``(z', w)``: the logits under the class-conditional perturbation and the
        per-sample weights of ``L_flat`` (``None`` for the weights perturbation)."""
        ops = keras.ops
        if len(features.shape) != 2:
            raise ValueError(f"CCSAMModel needs features of shape (batch, dim) at the head; "
                             f"received shape {features.shape}.")
        labels = km_ops.sparse_labels(y, int(self.head.units))  # soft labels: largest entry
        same = ops.cast(ops.expand_dims(labels, -1) == ops.expand_dims(labels, 0),
                        "float32")                                            # (B, B) same class
        in_batch = ops.sum(same, axis=1)                                     # n_c in the batch
        z = ops.cast(logits, "float32")
        d = ops.stop_gradient(_loss_gradient(self._per_sample_loss(), ops.convert_to_tensor(y),
                                             ops.stop_gradient(z)))
        kernel = ops.cast(self.head.kernel, "float32")
        f = ops.cast(features, "float32")
        if self.perturb == "features":
            u = ops.matmul(d, ops.transpose(ops.stop_gradient(kernel)))    # dloss_i/df_i
            norm = ops.sqrt(ops.matmul(same, ops.sum(ops.square(u), axis=1)))
            weights = km_ops.take_per_class(km_ops.constant(
                cc_sam_feature_weights(self.class_counts), "float32"), labels)
            shift = ops.expand_dims(self.radius * weights / (norm + _NORM_EPSILON), -1) * u
            return z + ops.matmul(shift, kernel), weights
        d = d / ops.expand_dims(in_batch, -1)                                # class means
        f_const = ops.stop_gradient(f)
        gram = ops.matmul(f_const, ops.transpose(f_const))
        d_gram = ops.matmul(d, ops.transpose(d))
        sq_kernel_grad = ops.matmul(same, ops.sum(same * gram * d_gram, axis=1))
        num_parameters = int(np.prod(self.head.kernel.shape))
        bias = self.head.bias
        num_parameters += 0 if bias is None else int(np.prod(bias.shape))
        scales = km_ops.take_per_class(km_ops.constant(cc_sam_weight_radii(
            self.class_counts, num_parameters, self.radius), "float32"), labels)

        def coefficient(parameter, squared_grad_norm):
            """``rho_c / ||g_c||``: ``kappa' sqrt(||p||) / ||g_c||^(3/2)``."""
            size = ops.sqrt(ops.sum(ops.square(ops.stop_gradient(
                ops.cast(parameter, "float32")))))
            grad_norm = ops.sqrt(squared_grad_norm) + _NORM_EPSILON
            return ops.expand_dims(scales * ops.sqrt(size) / (grad_norm * ops.sqrt(grad_norm)),
                                   -1)

        # f_i . E_{y_i}: sum over the class's samples k of (f_i . f_k) d_k, f_i live.
        kernel_term = ops.matmul(ops.matmul(f, ops.transpose(f_const)) * same, d)
        out = z + coefficient(self.head.kernel, sq_kernel_grad) * kernel_term
        if bias is not None:
            sq_bias_grad = ops.matmul(same, ops.sum(same * d_gram, axis=1))
            out = out + coefficient(bias, sq_bias_grad) * ops.matmul(same, d)
        return out, None

    # -- serialisation ---------------------------------------------------------------

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "backbone": keras.saving.serialize_keras_object(self.backbone),
                "head": keras.saving.serialize_keras_object(self.head),
                "class_counts": list(self.class_counts), "perturb": self.perturb,
                "radius": self.radius, "flat_ratio": self.flat_ratio}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        backbone = keras.saving.deserialize_keras_object(config.pop("backbone"),
                                                         custom_objects=custom_objects)
        head = keras.saving.deserialize_keras_object(config.pop("head"),
                                                     custom_objects=custom_objects)
        return cls(backbone, head, **config)


def cc_sam_model(model, class_counts, perturb="weights", radius=None, flat_ratio=0.3,
                 layer=None):
    """A ``CCSAMModel`` sharing the layers (and weights) of a built functional or
    ``Sequential`` model: its head is ``layer`` (default the last layer, a
    ``Dense`` without activation), its backbone everything before it.

    Args:
        model: a built functional or ``Sequential`` model ending in its head.
        class_counts, perturb, radius, flat_ratio: see ``CCSAMModel``.
        layer: the head (name or layer); see ``keras_margins.decoupling.find_head``.
    """
    from keras_margins.decoupling import find_head

    head = _validate_head(find_head(model, layer))
    backbone = keras.Model(model.inputs, head.input, name=f"{model.name}_backbone")
    return CCSAMModel(backbone, head, class_counts, perturb=perturb, radius=radius,
                      flat_ratio=flat_ratio, name=f"cc_sam_{model.name}")


class FlatRatioRamp(keras.callbacks.Callback):
    """Sets a ``CCSAMModel``'s ``flat_ratio`` to ``min(limit, (epoch + 1) / epochs)``
    at each epoch's start (CC-SAM's second stage ramps it from ``1 / epochs`` to
    ``limit``), rebuilding the compiled train function when it changes (it is a
    trace-time constant)."""

    def __init__(self, epochs, limit=1.0):
        super().__init__()
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
            raise ValueError(f"`epochs` must be an integer >= 1, received {epochs!r}.")
        self.epochs = int(epochs)
        self.limit = validate_non_negative(limit, "limit", upper=1.0)

    def on_epoch_begin(self, epoch, logs=None):
        if not isinstance(self.model, CCSAMModel):
            raise ValueError(f"FlatRatioRamp needs a CCSAMModel, received "
                             f"{type(self.model).__name__}.")
        value = min(self.limit, (epoch + 1) / self.epochs)
        if value != self.model.flat_ratio:
            self.model.flat_ratio = value
            self.model.make_train_function(force=True)
