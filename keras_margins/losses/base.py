"""The one pipeline every loss runs through, and the Keras wrapper around it.

Every loss of this package is a *rule*: a small function of a ``Batch`` that
returns per-sample losses. The pipeline is written once, in
``per_sample_losses``::

    y_pred -> float32 scores, checked (batch, classes)
    y_true -> int32 labels (sparse (B,), (B, 1) or one-hot (B, C)); soft
              (B, C) labels q (MixUp, CutMix) -> the two largest entries per
              row, each a label with its coefficient (``ops.label_mixture``)
           -> Batch: target mask, target scores, per-class look-ups and the
              non-target maximum, each built at most once
           -> rule(batch, ...): the loss's hooks (adjusted target score, row
              scale, target in or out of the denominator, transformed scores)
              handed to ``Batch.cross_entropy`` (the core op
              ``keras_margins.ops.margin_softmax_cross_entropy``), or its own
              sigmoid terms
           -> NaN for labels outside [0, C) under ``jit`` (eager: ValueError)
           -> soft labels: the mixture ``q_a l(x, a) + q_b l(x, b)`` of the rule
              run once per label (NaN under ``jit`` for rows mixing 3+ classes)
           -> times the class weight ``w_y`` (functional forms only; see below);
              for soft labels ``w(q) = q_a w_a + q_b w_b``

The public functional forms (``ldam_loss``, ``kps_loss``, ...) are this
pipeline with one rule each. ``MarginLoss`` is the ``keras.losses.Loss``
around it:

* it computes in float32 whatever the dtype policy (float64 when asked), so a
  ``mixed_float16`` / ``mixed_bfloat16`` model gets a float32 loss;
* its ``call`` runs the pipeline with the loss's rule and per-class vectors;
* class weights have one mechanism: ``class_weights`` (a per-class vector,
  switched by ``DeferredReweighting`` on the losses that accept it, or derived
  from the counts by the class-balanced and influence-balanced losses) become
  Keras sample weights in ``__call__``, so ``reduction="mean_with_sample_weight"``
  is the papers' weighted mean ``sum_i w[y_i] l_i / sum_i w[y_i]`` (PyTorch's
  rule), ``"sum_over_batch_size"`` the plain mean of weighted losses, and
  ``reduction=None`` the weighted per-sample values ``w[y_i] l_i`` (which the
  functional forms return). A rule may also read ``w_y`` as a parameter
  (``Batch.class_weight``): the focal and influence-balanced losses modulate
  by the *weighted* cross-entropy, as the reference code does.

Soft labels: a (B, C) ``y_true`` with rows ``q`` (non-negative, summing to 1)
gives the mixture of Zhang et al. 2018 (the mixup criterion),
``l(x, q) = sum_k q_k l(x, k)``, with each component using its own class's
margin, scale and weight, and the class weight ``w(q) = sum_k q_k w_k``. Rows
may mix at most two classes (MixUp, CutMix); rows mixing more (label
smoothing) raise ``ValueError`` in eager mode and give NaN under ``jit``.
Losses defined for hard labels only (``accepts_soft_labels = False``) accept
one-hot rows and reject any other (B, C) rows the same way.
"""

import keras
import numpy as np
from keras import ops

from keras_margins import ops as km_ops
from keras_margins.validation import validate_class_counts, validate_class_vector

__all__ = ["MarginLoss", "Batch", "per_sample_losses", "counts_or_vector", "loss_dtype",
           "mixed_class_weights"]


def loss_dtype(dtype):
    """float64 if the requested policy computes in float64, else float32."""
    policy = keras.dtype_policies.get(dtype or keras.backend.floatx())
    return "float64" if policy.compute_dtype == "float64" else "float32"


def _check_sizes(num_classes, vectors, shape):
    """``ValueError`` naming the first per-class vector whose length is not C."""
    for name, vector in vectors.items():
        if vector is None or num_classes is None:
            continue
        size = vector.shape[0]
        if size is not None and size != num_classes:
            raise ValueError(f"`{name}` has {size} entries but y_pred has {num_classes} "
                             f"classes (shape {tuple(shape)}).")


class Batch:
    """Scores and labels of one batch, with everything indexed by the labels.

    Built once per call by ``per_sample_losses``; each property is computed on
    first use and reused, so a rule never builds a mask, clips labels or looks
    up a per-class vector itself.

    Attributes:
        scores: (batch, classes) float scores in the compute dtype.
        labels: (batch,) int32 labels (possibly invalid under ``jit``).
        num_classes: static number of classes (None if unknown).
        dtype: the compute dtype.
    """

    def __init__(self, scores, labels, per_class=None, class_weights=None):
        self.scores = scores
        self.labels = labels
        self.num_classes = scores.shape[-1]
        self.dtype = ops.dtype(scores)
        self._vectors = {name: self._tensor(vector) for name, vector in (per_class or {}).items()}
        self._class_weights = self._tensor(class_weights)
        self._cache = {}

    def with_labels(self, labels):
        """A ``Batch`` of the same scores and per-class vectors with other labels
        (the vectors are already tensors of the compute dtype: no new conversion)."""
        return Batch(self.scores, labels, self._vectors, self._class_weights)

    def _tensor(self, vector):
        if vector is None:
            return None
        if isinstance(vector, (list, tuple, np.ndarray)):
            return km_ops.constant(vector, self.dtype)
        return ops.cast(vector, self.dtype)

    def _cached(self, key, build):
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    @property
    def mask(self):
        """(batch, classes) boolean, True at each sample's label."""
        return self._cached("mask", lambda: km_ops.target_mask(self.labels, self.num_classes))

    @property
    def target(self):
        """The target scores ``scores[i, y_i]``, shape (batch,)."""
        return self._cached("target", lambda: self.gather(self.scores))

    def gather(self, scores):
        """``scores[i, y_i]`` of another (batch, classes) tensor."""
        return km_ops.gather_target(scores, self.labels)

    def sum_by_label(self, values):
        """``(classes,)`` sums of the per-sample ``values`` (batch,) over each label's
        samples (0 for a class absent from the batch): O(batch), no (batch, classes)
        mask."""
        # scatter_update(..., "add") adds repeated indices in one vectorised op on
        # every backend (Keras' torch ``ops.scatter`` loops over the batch in Python;
        # torch's segment_sum rounds float64 sums through float32)
        labels = km_ops.safe_labels(self.labels, self.num_classes)
        return ops.scatter_update(ops.zeros((self.num_classes,), dtype=ops.dtype(values)),
                                  ops.expand_dims(labels, -1), values, reduction="add")

    def has(self, name):
        """Whether the per-class vector ``name`` was given."""
        return name in self._vectors

    def vector(self, name):
        """The per-class vector ``name`` as a (classes,) tensor of the compute dtype."""
        return self._vectors[name]

    def lookup(self, name):
        """``vector[y_i]`` for every sample, shape (batch,)."""
        return self._cached(("lookup", name),
                            lambda: km_ops.take_per_class(self._vectors[name], self.labels))

    @property
    def class_weight(self):
        """Per-sample class weights ``w[y_i]``, shape (batch,), or None."""
        if self._class_weights is None:
            return None
        return self._cached("class_weight", lambda: km_ops.take_per_class(
            self._class_weights, self.labels))

    def non_target_max(self, stop_gradient=True, indices=True):
        """``(max_{j != y} c_j, argmax)`` of the scores (cached); the argmax is
        None with ``indices=False``.

        Without gradient by default (a margin chosen from the scores); with
        ``stop_gradient=False`` the maximum carries the gradient of ``max``.
        Once computed, ``cross_entropy`` on the same scores reuses the maximum
        to shift its log-sum-exp (one (batch, classes) reduction fewer).
        """
        key = ("non_target", bool(stop_gradient))
        if key in self._cache and (self._cache[key][1] is not None or not indices):
            return self._cache[key]
        scores = ops.stop_gradient(self.scores) if stop_gradient else self.scores
        self._cache[key] = km_ops.max_non_target(scores, self.labels, self.mask,
                                                 indices=indices)
        return self._cache[key]

    def cross_entropy(self, target=None, scale=1.0, exclude_target=False, scores=None,
                      target_shift=None, gathered_target=None):
        """The core op with the loss's hooks: per-sample ``logsumexp(s z) - s t``.

        Args:
            target: adjusted target scores ``t`` (batch,); default unchanged.
            scale: python float or (batch,) per-sample scale ``s`` (> 0).
            exclude_target: drop the target from the denominator.
            scores: transformed (batch, classes) scores (e.g. KPS radii,
                logit-adjustment offsets); default the batch's scores.
            target_shift: instead of ``target``, a constant additive margin:
                ``t = scores_y + shift`` (cheaper on PyTorch; see the core op).
            gathered_target: the (batch,) ``scores_y`` that ``target`` was
                computed from; default ``self.target`` when it was used
                (saves a gather on PyTorch; see the core op).
        """
        shift = None
        if scores is None:
            scores = self.scores
            if gathered_target is None:
                gathered_target = self._cache.get("target")
            for key in (("non_target", True), ("non_target", False)):
                if key in self._cache and not exclude_target:
                    shift = self._cache[key][0]  # the core stops its gradient
        return km_ops.margin_softmax_cross_entropy(
            self.labels, scores, target_scores=target, scale=scale,
            exclude_target=exclude_target, mask=self._cache.get("mask"), non_target_max=shift,
            target_shift=target_shift, gathered_target=gathered_target)


def counts_or_vector(name, vector, class_counts, derive):
    """A functional form's per-class vector: ``vector`` itself, or ``derive(class_counts)``.

    Exactly one of the two must be given (``ValueError`` otherwise).
    """
    if (vector is None) == (class_counts is None):
        given = "both" if vector is not None else "neither"
        raise ValueError(f"Pass exactly one of `class_counts` and `{name}`, received {given}.")
    if vector is not None:
        return validate_class_vector(vector, name)
    return derive(class_counts)


def _mixture(terms):
    """``sum_k q_k v_k`` over ``(values, q)`` terms (``q`` None: 1; ``q = 0``: 0,
    whatever ``v``)."""
    total = None
    for values, coefficient in terms:
        if coefficient is not None:
            coefficient = ops.cast(coefficient, ops.dtype(values))
            values = ops.where(coefficient > 0, coefficient * values,
                               ops.zeros_like(values))
        total = values if total is None else total + values
    return total


def mixed_class_weights(class_weights, components):
    """Per-sample class weights ``w(q) = sum_k q_k w_k`` of ``label_mixture``'s
    components (``w[y_i]`` for hard labels), shape (batch,)."""
    return _mixture([(km_ops.take_per_class(class_weights, labels), coefficient)
                     for labels, coefficient in components])


def per_sample_losses(rule, y_true, y_pred, *, per_class=None, class_weights=None,
                      weigh=True, soft_labels=True, **arguments):
    """Runs ``rule`` on a ``Batch`` of ``(y_true, y_pred)``: the one pipeline.

    Soft (B, C) labels ``q`` give the mixture ``sum_k q_k l(x, k)`` over the
    (at most two) classes of each row, weighted by ``w(q) = sum_k q_k w_k``.

    Args:
        rule: function ``rule(batch, **arguments)`` returning (batch,) losses.
        y_true: sparse (B,), (B, 1), one-hot (B, C) or soft (B, C) labels
            (rows mixing at most two classes, see ``ops.label_mixture``).
        y_pred: (B, C) scores (logits or cosines), any float dtype.
        per_class: dict of per-class vectors (numpy or tensors) the rule reads
            through ``Batch.vector`` / ``Batch.lookup``; their lengths must be C.
        class_weights: optional per-class weights ``w_j``.
        weigh: multiply the losses by ``w[y_i]`` (``MarginLoss.call`` passes
            False: Keras' reduction applies them as sample weights).
        soft_labels: False for a loss defined for hard labels only: (B, C)
            labels must then be one-hot (``ValueError`` in eager mode, NaN
            rows under ``jit``).
        **arguments: passed to ``rule``.

    Returns:
        (B,) per-sample losses in float32 (float64 for float64 inputs).
    """
    scores = km_ops.to_compute_dtype(y_pred)
    num_classes = km_ops.check_scores(scores)
    vectors = {name: np.asarray(vector) if isinstance(vector, (list, tuple)) else vector
               for name, vector in (per_class or {}).items()}
    if isinstance(class_weights, (list, tuple, np.ndarray)) and not km_ops.torch_compiling():
        class_weights = validate_class_vector(class_weights, "class_weights")
    _check_sizes(num_classes, {**vectors, "class_weights": class_weights}, scores.shape)
    components, valid = km_ops.label_mixture(y_true, num_classes, soft=soft_labels)
    batch = Batch(scores, components[0][0], vectors, class_weights)
    batches = [batch] + [batch.with_labels(labels) for labels, _ in components[1:]]
    losses = _mixture([
        (km_ops.nan_for_invalid_labels(rule(part, **arguments), part.labels, num_classes),
         coefficient) for part, (_, coefficient) in zip(batches, components)])
    if valid is not None:
        losses = ops.where(valid, losses, ops.cast(np.nan, ops.dtype(losses)))
    if weigh and batch.class_weight is not None:
        losses = losses * _mixture([(part.class_weight, coefficient)
                                    for part, (_, coefficient) in zip(batches, components)])
    return losses


class MarginLoss(keras.losses.Loss):
    """Base class: the pipeline's ``call`` plus class weights merged into reduction.

    A subclass sets ``rule`` (a function of a ``Batch``), names the attributes
    passed to it (``rule_parameters``) and saved in its config
    (``config_parameters``), and overrides ``rule_arguments()`` only to add
    per-class vectors (margins, scales, ...). ``call`` runs
    ``per_sample_losses(rule, ...)`` with them, so its per-sample values are the
    functional form's; ``w_y`` multiplies them through the reduction. Soft
    (B, C) labels ``q`` (MixUp, CutMix) give the mixture ``sum_k q_k l(x, k)``
    with the weight ``w(q) = sum_k q_k w_k``; a subclass defined for hard
    labels only sets ``accepts_soft_labels = False``.

    Args:
        class_counts: optional per-class training counts (validated, kept in the
            config; subclasses derive margins from them).
        class_weights: optional per-class weights ``w_j`` (e.g. DRW's
            class-balanced weights); ``None`` means all ones.
        reduction: Keras reduction. The default ``"mean_with_sample_weight"``
            gives ``sum w_y l / sum w_y``; ``"sum_over_batch_size"`` gives
            ``sum w_y l / B``.
        name, dtype: as in ``keras.losses.Loss``; 16-bit dtypes compute in float32.
    """

    #: Whether ``class_weights`` is a constructor argument (saved in the config)
    #: that ``DeferredReweighting`` may switch.
    accepts_class_weights = True
    #: Whether soft (B, C) labels (MixUp / CutMix mixtures) are accepted; False
    #: for a loss defined for hard labels only (one-hot rows still accepted).
    accepts_soft_labels = True
    #: The loss's rule, ``rule(batch, **arguments) -> (batch,) losses``.
    rule = None
    #: Attributes passed to ``rule`` as keyword arguments of the same names.
    rule_parameters = ()
    #: Attributes written to ``get_config`` (constructor arguments of the same
    #: names), besides ``reduction``, ``name``, ``dtype`` and ``class_weights``.
    config_parameters = ()

    def __init__(self, class_counts=None, class_weights=None,
                 reduction="mean_with_sample_weight", name=None, dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=loss_dtype(dtype))
        self._class_counts = (None if class_counts is None
                              else validate_class_counts(class_counts))
        self.class_weights = class_weights

    @property
    def num_classes(self):
        """Number of classes fixed at construction (None if not known yet)."""
        return None if self._class_counts is None else self._class_counts.size

    @property
    def class_counts(self):
        return None if self._class_counts is None else self._class_counts.copy()

    @property
    def class_weights(self):
        return self._class_weights

    @class_weights.setter
    def class_weights(self, value):
        self._class_weights = (None if value is None else validate_class_vector(
            value, "class_weights", num_classes=self.num_classes))

    def split_inputs(self, y_pred):
        """``(scores, arguments)``: the (batch, classes) scores inside ``y_pred``
        (all of it here) and extra per-sample inputs for ``rule`` (none here)."""
        return km_ops.to_compute_dtype(y_pred), {}

    def _check_num_classes(self, scores):
        num_classes = km_ops.check_scores(scores)
        _check_sizes(num_classes, {"class_counts": self._class_counts,
                                   "class_weights": self._class_weights}, scores.shape)
        return num_classes

    def __call__(self, y_true, y_pred, sample_weight=None):
        if self._class_weights is not None:
            # The one place class weights act: as Keras sample weights.
            scores, _ = self.split_inputs(y_pred)
            components, _ = km_ops.label_mixture(
                y_true, self._check_num_classes(scores),
                soft=type(self).accepts_soft_labels)
            weights = mixed_class_weights(
                km_ops.constant(self._class_weights, self.dtype), components)
            if sample_weight is not None:
                sample_weight = ops.convert_to_tensor(sample_weight, dtype=self.dtype)
                if len(sample_weight.shape) == 2 and sample_weight.shape[-1] == 1:
                    sample_weight = ops.squeeze(sample_weight, -1)
                weights = weights * sample_weight
            sample_weight = weights
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def rule_arguments(self):
        """``(per_class, arguments)`` for ``rule``: per-class vectors and parameters."""
        return {}, {name: getattr(self, name) for name in type(self).rule_parameters}

    def call(self, y_true, y_pred):
        if type(self).rule is None:
            raise NotImplementedError(f"{type(self).__name__} must set `rule`.")
        scores, inputs = self.split_inputs(y_pred)
        self._check_num_classes(scores)
        per_class, arguments = self.rule_arguments()
        return per_sample_losses(type(self).rule, y_true, scores, per_class=per_class,
                                 class_weights=self._class_weights, weigh=False,
                                 soft_labels=type(self).accepts_soft_labels,
                                 **inputs, **arguments)

    def get_config(self):
        config = super().get_config()
        config["dtype"] = self.dtype
        if type(self).accepts_class_weights:
            config["class_weights"] = (None if self._class_weights is None
                                       else self._class_weights.tolist())
        for name in type(self).config_parameters:
            value = getattr(self, name)
            config[name] = value.tolist() if isinstance(value, np.ndarray) else value
        return config
