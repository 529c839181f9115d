"""Sharpness-aware minimisation (SAM) and its adaptive variant (ASAM).

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

The gradient norm is that of the batch on one device; multi-device
distribution is not supported.

References: Foret et al., "Sharpness-Aware Minimization for Efficiently
Improving Generalization", ICLR 2021 (Algorithm 1); Kwon et al., "ASAM:
Adaptive Sharpness-Aware Minimization for Scale-Invariant Learning of Deep
Neural Networks", ICML 2021.
"""

import numbers

import keras
from keras.src.trainers.data_adapters import data_adapter_utils

__all__ = ["SAMModel", "sam_model"]

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
    non-trainable updates are kept.

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

    def train_step(self, *args, **kwargs):
        if self.rho == 0:
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

    def _jax_train_step(self, state, data):
        import jax

        trainable, non_trainable, optimizer_vars, metrics_vars = state
        x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
        grad_fn = jax.value_and_grad(self.compute_loss_and_updates, has_aux=True)
        (_, aux), grads = grad_fn(trainable, non_trainable, metrics_vars, x, y,
                                  sample_weight, training=True,
                                  optimizer_variables=optimizer_vars)
        unscaled_loss, y_pred, new_non_trainable, new_metrics_vars = aux
        eps = self.perturbation(grads, trainable)
        perturbed = [w if e is None else w + e for w, e in zip(trainable, eps)]
        # Second pass: same non-trainable state as the first; its updates dropped.
        _, sam_grads = grad_fn(perturbed, non_trainable, metrics_vars, x, y,
                               sample_weight, training=True,
                               optimizer_variables=optimizer_vars)
        trainable, optimizer_vars = self.optimizer.stateless_apply(
            optimizer_vars, sam_grads, trainable)
        logs, new_metrics_vars = self._update_metrics_variables(
            new_metrics_vars, unscaled_loss, x, y, y_pred, sample_weight)
        return logs, (trainable, new_non_trainable, optimizer_vars, new_metrics_vars)

    def _tensorflow_train_step(self, data):
        import tensorflow as tf
        from keras.src.losses import loss as loss_module

        x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
        weights = list(self.trainable_weights)
        kept = list(self.non_trainable_variables)
        metric_vars = list(self.metrics_variables)
        before = [tf.identity(v.value) for v in kept]
        with tf.GradientTape() as tape:
            y_pred = self._forward(x)
            loss = self._compute_loss(x=x, y=y, y_pred=y_pred,
                                      sample_weight=sample_weight, training=True)
            self._loss_tracker.update_state(
                loss_module.unscale_loss_for_distribution(loss),
                sample_weight=tf.shape(
                    next(i for i in keras.tree.flatten(x) if i is not None))[0])
            if self.optimizer is not None:
                loss = self.optimizer.scale_loss(loss)
        grads = tape.gradient(loss, weights)
        after = [tf.identity(v.value) for v in kept + metric_vars]
        saved = [tf.identity(v.value) for v in weights]
        for v, w, e in zip(weights, saved, self.perturbation(grads, saved)):
            if e is not None:
                v.assign(w + e)
        for v, value in zip(kept, before):
            v.assign(value)
        with tf.GradientTape() as tape:
            y_pred_perturbed = self._forward(x)
            sam_loss = self._compute_loss(x=x, y=y, y_pred=y_pred_perturbed,
                                          sample_weight=sample_weight, training=True)
            if self.optimizer is not None:
                sam_loss = self.optimizer.scale_loss(sam_loss)
        sam_grads = tape.gradient(sam_loss, weights)
        for v, value in zip(weights, saved):
            v.assign(value)
        for v, value in zip(kept + metric_vars, after):
            v.assign(value)
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
        loss.backward()
        with torch.no_grad():
            grads = [None if v.value.grad is None else v.value.grad.clone() for v in weights]
            after = [v.value.clone() for v in kept + metric_vars]
            saved = [v.value.clone() for v in weights]
            for v, w, e in zip(weights, saved, self.perturbation(grads, saved)):
                if e is not None:
                    v.assign(w + e)
            for v, value in zip(kept, before):
                v.assign(value)
        _set_torch_rng_state(rng_state)
        self.zero_grad()
        sam_loss = self._compute_loss(x=x, y=y, y_pred=self._forward(x),
                                      sample_weight=sample_weight, training=True)
        if self.optimizer is not None:
            sam_loss = self.optimizer.scale_loss(sam_loss)
        sam_loss.backward()
        sam_grads = [v.value.grad for v in weights]
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


def sam_model(model, rho=0.05, adaptive=False, eta=0.01):
    """A ``SAMModel`` sharing the layers (and weights) of a built functional or
    ``Sequential`` model.

    Args:
        model: a ``keras.Model`` with defined ``inputs`` and ``outputs``
            (functional, or ``Sequential`` built with an ``Input``).
        rho, adaptive, eta: see ``SAMModel``.
    """
    graph = getattr(model, "_functional", None) or model  # Sequential keeps its graph here
    inputs = getattr(graph, "_inputs_struct", None)
    outputs = getattr(graph, "_outputs_struct", None)
    if inputs is None or outputs is None:
        raise ValueError(
            f"sam_model needs a functional or built Sequential model with defined inputs "
            f"and outputs; received {type(model).__name__} without them. Subclassed "
            f"models can instead subclass SAMModel's train_step.")
    return SAMModel(inputs, outputs, rho=rho, adaptive=adaptive, eta=eta,
                    name=f"sam_{model.name}")
