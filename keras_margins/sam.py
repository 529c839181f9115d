"""Sharpness-aware minimisation (SAM), its adaptive variant (ASAM) and ImbSAM.

``SAMModel`` is a functional ``keras.Model`` whose ``train_step`` takes each
optimizer step at the gradient of the loss at adversarially perturbed weights:

    g  = grad L(w)
    e  = rho * g / ||g||                          (SAM)
    e  = rho * T_w^2 g / ||T_w g||,  T_w = |w| + eta   (ASAM)
    g' = grad L(w + e)
    w  <- optimizer step from w with g'

``||.||`` is the global L2 norm over all trainable variables. Every step costs
two forward and two backward passes. It runs on the TensorFlow, JAX
(stateless, under ``jit``) and PyTorch backends and works with
``compile``/``fit``, sample and class weights, loss scaling (mixed precision)
and the stage callbacks of ``keras_margins.callbacks`` (which rebuild the train
function when the stage changes).

What a step keeps from each pass:

* the reported loss and the compiled metrics come from the first pass
  (predictions and loss at ``w``, before the step);
* the second pass sees the same non-trainable state as the first (BatchNorm
  statistics, random seed state, hence the same dropout masks), and the
  non-trainable updates (BatchNorm moving statistics, seed state) of the first
  pass only are kept. On PyTorch, unseeded dropout draws from torch's global
  generator, whose state is replayed for the second pass.

Data parallelism: under ``keras.distribution.DataParallel`` (JAX) the step
works on the global batch, so ``g`` is the global-batch gradient. Under a
multi-replica ``tf.distribute`` strategy (TensorFlow) the replicas' ``g`` are
summed (an all-reduce; Keras divides each replica's loss by the number of
replicas) before the perturbation, so every replica perturbs with the same
``e``, from the gradient that a plain step would apply; the optimizer sums
the replicas' ``g'`` as usual.

``ImbSAMModel`` (Zhou et al., ICCV 2023) applies the perturbation to the loss
of the tail classes only:

    g = grad L_head(w) + grad L_tail(w + e_tail),
    e_tail = rho * grad L_tail(w) / ||grad L_tail(w)||

References: Foret et al., "Sharpness-Aware Minimization for Efficiently
Improving Generalization", ICLR 2021 (Algorithm 1); Kwon et al., "ASAM:
Adaptive Sharpness-Aware Minimization for Scale-Invariant Learning of Deep
Neural Networks", ICML 2021; Zhou et al., "ImbSAM: A Closer Look at
Sharpness-Aware Minimization in Class-Imbalanced Recognition", ICCV 2023.
"""

import numbers

import keras
import numpy as np
from keras.src.trainers.data_adapters import data_adapter_utils

from keras_margins import ops as km_ops

__all__ = ["SAMModel", "ImbSAMModel", "sam_model", "tail_classes_below"]

# Added to the gradient norm so that a zero gradient gives a zero perturbation.
_NORM_EPSILON = 1e-12


def _validate_rho(rho):
    if isinstance(rho, bool) or not isinstance(rho, numbers.Real) or not rho >= 0 \
            or rho == float("inf"):
        raise ValueError(f"`rho` must be a finite number >= 0, received {rho!r}.")
    return float(rho)


def _validate_eta(eta):
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not eta >= 0 \
            or eta == float("inf"):
        raise ValueError(f"`eta` must be a finite number >= 0, received {eta!r}.")
    return float(eta)


@keras.saving.register_keras_serializable(package="keras_margins")
class SAMModel(keras.Model):
    """A functional model trained with sharpness-aware minimisation (SAM / ASAM).

    Each training step computes ``g = grad L(w)``, the perturbation
    ``e = rho * g / ||g||`` (SAM) or ``e = rho * T_w^2 g / ||T_w g||`` with
    ``T_w = |w| + eta`` elementwise (ASAM, ``adaptive=True``), the gradient
    ``g' = grad L(w + e)``, and lets the compiled optimizer step from ``w``
    with ``g'``. ``||.||`` is the L2 norm over all trainable variables
    together. ``rho = 0`` is exactly the base optimizer (one pass).

    The loss and metrics that ``fit`` reports are those of the first pass (at
    ``w``, before the step). The second pass sees the same non-trainable state
    (BatchNorm statistics, dropout seeds) as the first; only the first pass's
    non-trainable updates are kept. Under ``keras.distribution.DataParallel``
    (JAX) and ``tf.distribute`` strategies (TensorFlow), ``g`` and ``e`` are
    those of the global batch.

    Args:
        inputs, outputs: as for ``keras.Model``.
        rho: radius of the perturbation (>= 0); 0.05 in Foret et al. ASAM
            usually needs a larger radius (0.5-2 in Kwon et al.).
        adaptive: ASAM instead of SAM.
        eta: ASAM's offset in ``T_w = |w| + eta`` (0.01). ``T_w`` is applied to
            every trainable variable, biases included (the ASAM reference code
            leaves biases unscaled).
        **kwargs: passed to ``keras.Model`` (e.g. ``name``).

    Example:
    ```python
    inputs = keras.Input((32,))
    outputs = keras.layers.Dense(10)(inputs)
    model = km.sam.SAMModel(inputs, outputs, rho=0.05)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=km.losses.LDAMLoss(counts))
    model.fit(x, y, epochs=200,
              callbacks=[km.callbacks.DeferredReweighting(start_epoch=160)])
    ```

    References: Foret et al., ICLR 2021, Algorithm 1; Kwon et al., ICML 2021.
    """

    def __init__(self, *args, rho=0.05, adaptive=False, eta=0.01, **kwargs):
        rho = _validate_rho(rho)
        if not isinstance(adaptive, bool):
            raise ValueError(f"`adaptive` must be True or False, received {adaptive!r}.")
        eta = _validate_eta(eta)
        super().__init__(*args, **kwargs)
        self.rho = rho
        self.adaptive = adaptive
        self.eta = eta

    # -- the perturbation (backend-agnostic) ------------------------------------

    def perturbation(self, gradients, weights):
        """``e`` for each variable (``None`` where its gradient is ``None``)."""
        ops = keras.ops
        pairs = [(g, w) for g, w in zip(gradients, weights) if g is not None]
        if not pairs:
            return [None] * len(gradients)
        if self.adaptive:
            scales = [ops.add(ops.abs(ops.cast(w, "float32")), self.eta) for _, w in pairs]
            directions = [ops.multiply(s, ops.cast(g, "float32"))
                          for s, (g, _) in zip(scales, pairs)]
        else:
            scales = [None] * len(pairs)
            directions = [ops.cast(g, "float32") for g, _ in pairs]
        norm = ops.sqrt(sum(ops.sum(ops.square(d)) for d in directions))
        factor = self.rho / (norm + _NORM_EPSILON)
        out = iter([ops.cast(ops.multiply(factor, d if s is None else ops.multiply(s, d)),
                             w.dtype)
                    for s, d, (_, w) in zip(scales, directions, pairs)])
        return [None if g is None else next(out) for g in gradients]

    # -- train steps -------------------------------------------------------------

    # ``ImbSAMModel`` perturbs only part of the loss (its ``_sharp_loss``); for
    # SAM the sharp part is the whole loss.
    _splits_loss = False

    def _plain_step(self):
        """Whether a step is exactly the base optimizer's (one pass)."""
        return self.rho == 0

    def train_step(self, *args, **kwargs):
        if self._plain_step():
            return super().train_step(*args, **kwargs)
        backend = keras.backend.backend()
        if backend == "jax":
            return self._jax_train_step(*args, **kwargs)
        if backend == "tensorflow":
            return self._tensorflow_train_step(*args, **kwargs)
        if backend == "torch":
            return self._torch_train_step(*args, **kwargs)
        raise NotImplementedError(f"SAMModel does not support the {backend!r} backend.")

    def _forward(self, x):
        if self._call_has_training_arg:
            return self(x, training=True)
        return self(x)

    @staticmethod
    def _batch_size(x):
        return next(i for i in keras.tree.flatten(x) if i is not None).shape[0]

    @staticmethod
    def _combine(grads, sharp_grads, perturbed_sharp_grads):
        """``g - g_sharp(w) + g_sharp(w + e)``: the rest of the loss at ``w``
        plus the sharp part at ``w + e``."""
        out = []
        for g, s, p in zip(grads, sharp_grads, perturbed_sharp_grads):
            rest = g if s is None or g is None else g - s
            out.append(p if rest is None else rest if p is None else rest + p)
        return out

    def _jax_train_step(self, state, data):
        import jax

        trainable, non_trainable, optimizer_vars, metrics_vars = state
        x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
        grad_fn = jax.value_and_grad(self.compute_loss_and_updates, has_aux=True)
        (_, aux), grads = grad_fn(trainable, non_trainable, metrics_vars, x, y,
                                  sample_weight, training=True,
                                  optimizer_variables=optimizer_vars)
        unscaled_loss, y_pred, new_non_trainable, new_metrics_vars = aux
        if self._splits_loss:
            # The sharp part alone, at w and at w + e (its updates dropped).
            sharp_fn = jax.grad(self._stateless_sharp_loss)
            args = (non_trainable, metrics_vars, optimizer_vars, x, y, sample_weight)
            sharp_grads = sharp_fn(trainable, *args)
        else:
            sharp_grads = grads
        eps = self.perturbation(sharp_grads, trainable)
        perturbed = [w if e is None else w + e for w, e in zip(trainable, eps)]
        # Second pass: same non-trainable state as the first; its updates dropped.
        if self._splits_loss:
            sam_grads = self._combine(grads, sharp_grads, sharp_fn(perturbed, *args))
        else:
            _, sam_grads = grad_fn(perturbed, non_trainable, metrics_vars, x, y,
                                   sample_weight, training=True,
                                   optimizer_variables=optimizer_vars)
        trainable, optimizer_vars = self.optimizer.stateless_apply(
            optimizer_vars, sam_grads, trainable)
        logs, new_metrics_vars = self._update_metrics_variables(
            new_metrics_vars, unscaled_loss, x, y, y_pred, sample_weight)
        return logs, (trainable, new_non_trainable, optimizer_vars, new_metrics_vars)

    def _stateless_sharp_loss(self, trainable, non_trainable, metrics_vars,
                              optimizer_vars, x, y, sample_weight):
        """The (loss-scaled) sharp part of the loss, for ``jax.grad``."""
        kwargs = {"training": True} if self._call_has_training_arg else {}
        y_pred, _ = self.stateless_call(trainable, non_trainable, x, **kwargs)
        mapping = list(zip(self.metrics_variables, metrics_vars))
        if self.optimizer is not None:
            mapping += list(zip(self.optimizer.variables, optimizer_vars))
        with keras.StatelessScope(state_mapping=mapping):
            loss = self._sharp_loss(y, y_pred, sample_weight)
            if self.optimizer is not None:
                loss = self.optimizer.scale_loss(loss)
        return loss

    def _tensorflow_train_step(self, data):
        import tensorflow as tf
        from keras.src.losses import loss as loss_module

        x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
        weights = list(self.trainable_weights)
        kept = list(self.non_trainable_variables)
        before = [tf.identity(v.value) for v in kept]
        with tf.GradientTape(persistent=self._splits_loss) as tape:
            y_pred = self._forward(x)
            loss = self._compute_loss(x=x, y=y, y_pred=y_pred,
                                      sample_weight=sample_weight, training=True)
            self._loss_tracker.update_state(
                loss_module.unscale_loss_for_distribution(loss),
                sample_weight=tf.shape(
                    next(i for i in keras.tree.flatten(x) if i is not None))[0])
            if self.optimizer is not None:
                loss = self.optimizer.scale_loss(loss)
            if self._splits_loss:
                with keras.StatelessScope():  # drops metric updates
                    sharp_loss = self._sharp_loss(y, y_pred, sample_weight)
                if self.optimizer is not None:
                    sharp_loss = self.optimizer.scale_loss(sharp_loss)
        grads = tape.gradient(loss, weights)
        sharp_grads = tape.gradient(sharp_loss, weights) if self._splits_loss else grads
        del tape
        # Each replica's loss is scaled by 1 / replicas: the sum over replicas is
        # the gradient of the step (the same on every replica).
        global_sharp_grads = _tf_all_reduce_sum(sharp_grads)
        saved = [tf.identity(v.value) for v in weights]
        eps = self.perturbation(global_sharp_grads, saved)
        perturbed = [w if e is None else w + e for w, e in zip(saved, eps)]
        # Second pass at w + e, without assigning any variable: the same
        # non-trainable state as the first pass; its updates are dropped.
        mapping = list(zip(weights, perturbed)) + list(zip(kept, before))
        with tf.GradientTape() as tape:
            tape.watch(perturbed)
            with keras.StatelessScope(state_mapping=mapping, collect_losses=True):
                y_pred_perturbed = self._forward(x)
                if self._splits_loss:
                    sam_loss = self._sharp_loss(y, y_pred_perturbed, sample_weight)
                else:
                    sam_loss = self._compute_loss(
                        x=x, y=y, y_pred=y_pred_perturbed, sample_weight=sample_weight,
                        training=True)
                if self.optimizer is not None:
                    sam_loss = self.optimizer.scale_loss(sam_loss)
        sam_grads = tape.gradient(sam_loss, perturbed)
        if self._splits_loss:
            sam_grads = self._combine(grads, sharp_grads, sam_grads)
        self.optimizer.apply_gradients(zip(sam_grads, weights))
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _torch_train_step(self, data):
        import torch

        x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
        weights = self.trainable_weights[:]
        kept = list(self.non_trainable_variables)
        metric_vars = list(self.metrics_variables)
        with torch.no_grad():
            before = [v.value.clone() for v in kept]
        # Unseeded dropout draws from torch's global generators: replay them in
        # the second pass so that it uses the same masks.
        rng_state = _torch_rng_state()
        y_pred = self._forward(x)
        self.zero_grad()
        loss = self._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                  training=True)
        self._loss_tracker.update_state(loss, sample_weight=self._batch_size(x))
        if self.optimizer is not None:
            loss = self.optimizer.scale_loss(loss)
        loss.backward(retain_graph=self._splits_loss)
        grads = _torch_grads(weights)
        sharp_grads = grads
        if self._splits_loss:
            self.zero_grad()
            with keras.StatelessScope():  # drops metric updates
                sharp_loss = self._sharp_loss(y, y_pred, sample_weight)
            if self.optimizer is not None:
                sharp_loss = self.optimizer.scale_loss(sharp_loss)
            sharp_loss.backward()
            sharp_grads = _torch_grads(weights)
        with torch.no_grad():
            after = [v.value.clone() for v in kept + metric_vars]
            saved = [v.value.clone() for v in weights]
            for v, w, e in zip(weights, saved, self.perturbation(sharp_grads, saved)):
                if e is not None:
                    v.assign(w + e)
            for v, value in zip(kept, before):
                v.assign(value)
        _set_torch_rng_state(rng_state)
        self.zero_grad()
        y_pred_perturbed = self._forward(x)
        if self._splits_loss:
            sam_loss = self._sharp_loss(y, y_pred_perturbed, sample_weight)
        else:
            sam_loss = self._compute_loss(x=x, y=y, y_pred=y_pred_perturbed,
                                          sample_weight=sample_weight, training=True)
        if self.optimizer is not None:
            sam_loss = self.optimizer.scale_loss(sam_loss)
        sam_loss.backward()
        sam_grads = [v.value.grad for v in weights]
        if self._splits_loss:
            sam_grads = self._combine(grads, sharp_grads, sam_grads)
        with torch.no_grad():
            for v, value in zip(weights, saved):
                v.assign(value)
            for v, value in zip(kept + metric_vars, after):
                v.assign(value)
            self.optimizer.apply(sam_grads, weights)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    # -- serialisation -----------------------------------------------------------

    def get_config(self):
        config = super().get_config()
        config.update({"rho": self.rho, "adaptive": self.adaptive, "eta": self.eta})
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        from keras.src.models.functional import functional_from_config

        config = dict(config)
        rho = config.pop("rho", 0.05)
        adaptive = config.pop("adaptive", False)
        eta = config.pop("eta", 0.01)
        model = functional_from_config(cls, config, custom_objects=custom_objects)
        model.rho = _validate_rho(rho)
        model.adaptive = bool(adaptive)
        model.eta = _validate_eta(eta)
        return model


def _validate_tail_classes(tail_classes):
    """Sorted class ids from a list of ids or a per-class boolean mask."""
    if tail_classes is None or isinstance(tail_classes, (str, bytes, dict)):
        raise ValueError("`tail_classes` must be a list of class ids or a per-class "
                         f"boolean mask, received {tail_classes!r}.")
    values = np.asarray(tail_classes)
    if values.ndim != 1:
        raise ValueError("`tail_classes` must be a list of class ids or a per-class "
                         f"boolean mask, received {tail_classes!r}.")
    if values.dtype == bool:
        return [int(i) for i in np.flatnonzero(values)]
    if values.size and (not np.issubdtype(values.dtype, np.integer) or values.min() < 0):
        raise ValueError("`tail_classes` must be a list of class ids (integers >= 0) or "
                         f"a per-class boolean mask, received {tail_classes!r}.")
    return sorted({int(i) for i in values})


def tail_classes_below(class_counts, threshold):
    """The ids of the classes with fewer than ``threshold`` training samples
    (ImbSAM's tail classes).

    Args:
        class_counts: samples per class.
        threshold: a class is a tail class when its count is below it.
    """
    counts = np.asarray(class_counts)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"`class_counts` must be a non-empty list, received {class_counts!r}.")
    return [int(i) for i in np.flatnonzero(counts < threshold)]


@keras.saving.register_keras_serializable(package="keras_margins")
class ImbSAMModel(SAMModel):
    """A functional model trained with ImbSAM: SAM on the tail classes' loss only.

    The loss of a batch splits over its samples into the part of the head-class
    samples and the part of the tail-class samples, ``L = L_head + L_tail``
    (the same normalisation as ``L``: the compiled loss's reduction over the
    whole batch, sample and class weights included). Each step takes

        e_tail = rho * grad L_tail(w) / ||grad L_tail(w)||
        g      = grad L_head(w) + grad L_tail(w + e_tail)

    and lets the compiled optimizer step from ``w`` with ``g``; ``add_loss`` and
    regularisation terms belong to the head part (not perturbed). A step costs
    three gradient evaluations (two forward passes on TensorFlow and PyTorch).
    Without tail classes (or with
    ``rho = 0``) it is the base optimizer; with every class a tail class it is
    SAM. ``adaptive=True`` perturbs the tail part with ASAM's ``e`` instead.

    The labels select the part of each sample: sparse ``y`` of shape
    ``(batch,)`` or ``(batch, 1)``, or one-hot ``(batch, classes)`` (soft labels
    count for the class of their largest entry). The model has one output and
    needs a loss passed to ``compile``.

    Args:
        inputs, outputs: as for ``keras.Model``.
        tail_classes: the tail classes, as a list of class ids or a per-class
            boolean mask (e.g. ``tail_classes_below(counts, 100)``).
        rho, adaptive, eta: see ``SAMModel``.
        **kwargs: passed to ``keras.Model``.

    Example:
    ```python
    model = km.sam.ImbSAMModel(inputs, outputs, rho=0.1,
                               tail_classes=km.sam.tail_classes_below(counts, 100))
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=km.losses.LDAMLoss(counts))
    ```

    Reference: Zhou et al., "ImbSAM: A Closer Look at Sharpness-Aware
    Minimization in Class-Imbalanced Recognition", ICCV 2023.
    """

    _splits_loss = True

    def __init__(self, *args, tail_classes=None, **kwargs):
        tail_classes = _validate_tail_classes(tail_classes)
        super().__init__(*args, **kwargs)
        self.tail_classes = tail_classes

    def _plain_step(self):
        return self.rho == 0 or not self.tail_classes

    def _sharp_loss(self, y, y_pred, sample_weight):
        """The compiled loss with gradients through the tail samples only: the
        head samples' predictions are held constant, so the value is ``L`` and
        the gradient ``grad L_tail``."""
        ops = keras.ops
        if self._compile_loss is None:
            raise ValueError("ImbSAMModel needs a loss passed to `compile()`.")
        if not hasattr(y_pred, "shape") or isinstance(y, (list, tuple, dict)):
            raise ValueError("ImbSAMModel supports models with one output and one "
                             "label tensor.")
        labels = km_ops.sparse_labels(y, y_pred.shape[-1])
        ids = km_ops.constant(self.tail_classes, "int32")
        tail = ops.any(ops.equal(ops.expand_dims(labels, -1), ids), axis=-1)
        tail = ops.reshape(tail, (-1,) + (1,) * (len(y_pred.shape) - 1))
        y_pred = ops.where(tail, y_pred, ops.stop_gradient(y_pred))
        return self._compile_loss(y, y_pred, sample_weight)

    def get_config(self):
        config = super().get_config()
        config["tail_classes"] = list(self.tail_classes)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        from keras.src.models.functional import functional_from_config

        # rho, adaptive, eta and tail_classes go to the constructor (validated).
        return functional_from_config(cls, dict(config), custom_objects=custom_objects)


def _torch_grads(weights):
    import torch

    with torch.no_grad():
        return [None if v.value.grad is None else v.value.grad.clone() for v in weights]


def _tf_all_reduce_sum(grads):
    """Sums the gradients over the replicas of a ``tf.distribute`` strategy
    (unchanged on one replica)."""
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return grads
    present = [i for i, g in enumerate(grads) if g is not None]
    reduced = context.all_reduce(
        "sum", [tf.convert_to_tensor(grads[i]) for i in present])
    out = list(grads)
    for i, g in zip(present, reduced):
        out[i] = g
    return out


def _torch_rng_state():
    import torch

    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_torch_rng_state(state):
    import torch

    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def sam_model(model, rho=0.05, adaptive=False, eta=0.01, tail_classes=None):
    """A ``SAMModel`` sharing the layers (and weights) of a built functional or
    ``Sequential`` model; with ``tail_classes``, an ``ImbSAMModel``.

    Args:
        model: a ``keras.Model`` with defined ``inputs`` and ``outputs``
            (functional, or ``Sequential`` built with an ``Input``).
        rho, adaptive, eta: see ``SAMModel``.
        tail_classes: None (SAM on the whole loss), or the tail classes (class
            ids or a per-class boolean mask, e.g. ``tail_classes_below(counts,
            100)``): ImbSAM, SAM on the tail classes' loss only.
    """
    graph = getattr(model, "_functional", None) or model  # Sequential keeps its graph here
    inputs = getattr(graph, "_inputs_struct", None)
    outputs = getattr(graph, "_outputs_struct", None)
    if inputs is None or outputs is None:
        raise ValueError(
            f"sam_model needs a functional or built Sequential model with defined inputs "
            f"and outputs; received {type(model).__name__} without them. Subclassed "
            f"models can instead subclass SAMModel's train_step.")
    if tail_classes is not None:
        return ImbSAMModel(inputs, outputs, rho=rho, adaptive=adaptive, eta=eta,
                           tail_classes=tail_classes, name=f"imbsam_{model.name}")
    return SAMModel(inputs, outputs, rho=rho, adaptive=adaptive, eta=eta,
                    name=f"sam_{model.name}")
