"""Second stages of the two-stage recipes: re-balancing the classifier of a trained model.

Each function takes the ``Run`` that ``applications.train`` fitted (stage 1,
instance-balanced, the whole network) and returns the model to evaluate and
the name of its logits layer. The stage-2 batches come from the same data
builder as stage 1 (same augmentation), with the ``class_balanced`` sampler
where the method samples class-balanced.

* ``crt`` — classifier re-training (Kang et al., ICLR 2020): the head drawn
  again and trained alone, class-balanced batches, cross-entropy.
* ``tau-norm`` — ``w_j / ||w_j||^tau`` with the bias dropped (Kang et al.),
  no training.
* ``lws`` — learnable weight scaling (Kang et al.): per-class scales of the
  frozen head, class-balanced batches.
* ``weight-balancing`` — Alshammari et al., CVPR 2022: stage 1 with a tuned
  (larger) weight decay; stage 2 trains the head alone with the class-balanced
  loss, weight decay and a per-class ``MaxNorm`` cap, instance-balanced batches.
* ``mislas`` — Zhong et al., CVPR 2021: stage 1 with mixup; stage 2 fine-tunes
  the head and every BatchNormalization layer ("shift learning") with
  label-aware smoothing, class-balanced batches.
* ``cc-sam`` — Zhou et al., CVPR 2023: stage 1 with MixUp and CC-SAM's
  class-conditional head perturbation; stage 2 trains the head alone on
  class-conditional adversarial features (``CCSAMModel(perturb="features")``),
  its flat ratio ramped from ``1 / epochs`` to 1, class-balanced batches.

Stage 2 runs ``HYPERPARAMETERS["second-stage"]["epochs"]`` epochs (10, as in
Kang et al.) of SGD with momentum 0.9 and a cosine-decayed rate: 0.1 for a
re-drawn head, 0.01 when fine-tuning (our choice for the reduced protocol).
"""

from applications.hyperparameters import hyperparameters

__all__ = ["SECOND_STAGES", "second_stage"]

SECOND_STAGES = ("crt", "tau-norm", "lws", "weight-balancing", "mislas", "cc-sam")


def _optimizer(learning_rate, steps, weight_decay=None):
    import keras
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, steps))
    return keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=weight_decay)


def _batches(run, sampler):
    """Stage-2 training batches: the run's data builder with ``sampler``."""
    from applications.train import load_data
    data = load_data(run.args, run.config["batch_size"], run.seed, sampler=sampler)
    batches = data.train_batches(run.args.max_steps)
    return batches, data.steps(batches)


def second_stage(run, verbose=0):
    """Applies ``run.recipe.second_stage`` to ``run.model``.

    Returns:
        ``(model, logits_layer, details)``: the model to evaluate, the name of the
        layer whose output is the logits, and a dict for config.json.
    """
    import keras

    from keras_margins import decoupling
    from keras_margins import losses as km_losses

    kind = run.recipe.second_stage
    settings = hyperparameters("second-stage")
    epochs = settings["epochs"] if not run.args.smoke else 1
    counts = list(run.data.class_counts)
    model = run.model
    if kind == "tau-norm":
        tau = settings["tau"]
        model = decoupling.tau_normalize(model, tau=tau, drop_bias=True)
        return model, "logits", {"tau": tau, "drop_bias": True}
    balanced = kind in ("crt", "lws", "mislas", "cc-sam")
    if run.data.pipeline == "device":
        raise ValueError(f"the {kind} second stage needs the tfdata or numpy pipeline "
                         f'(class-balanced batches), received pipeline="device".')
    batches, steps_per_epoch = _batches(run, "class_balanced" if balanced else None)
    steps = epochs * steps_per_epoch
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    details = {"epochs": epochs, "sampler": "class_balanced" if balanced else "instance"}
    if kind == "crt":
        decoupling.classifier_retraining(model, batches, epochs=epochs, loss=ce, seed=run.seed,
                                         optimizer=_optimizer(0.1, steps), verbose=verbose)
        return model, "logits", {**details, "lr": 0.1}
    if kind == "lws":
        scaled = decoupling.learnable_weight_scaling(
            model, batches, epochs=epochs, loss=ce, optimizer=_optimizer(0.01, steps),
            verbose=verbose)
        return scaled, scaled.layers[-1].name, {**details, "lr": 0.01}
    if kind == "weight-balancing":
        wb = hyperparameters("weight-balancing")
        decoupling.max_norm_head(model, wb["max_norm"])
        loss = km_losses.ClassBalancedLoss(counts, loss_type="softmax",
                                           **hyperparameters("class-balanced"))
        decoupling.classifier_retraining(
            model, batches, epochs=epochs, loss=loss, reinitialize=False, seed=run.seed,
            optimizer=_optimizer(0.01, steps, weight_decay=wb["weight_decay"]),
            verbose=verbose)
        return model, "logits", {**details, "lr": 0.01, **wb}
    if kind == "mislas":
        loss = km_losses.LabelAwareSmoothingLoss(counts,
                                                 **hyperparameters("label-aware-smoothing"))
        decoupling.classifier_retraining(
            model, batches, epochs=epochs, loss=loss, reinitialize=False, seed=run.seed,
            train_batch_norm=True, optimizer=_optimizer(0.01, steps), verbose=verbose)
        return model, "logits", {**details, "lr": 0.01, "train_batch_norm": True}
    if kind == "cc-sam":
        return model, "logits", {**details, **_cc_sam_features(model, counts, batches, epochs,
                                                               steps, ce, verbose)}
    raise ValueError(f"Unknown second stage {kind!r}; choose from {SECOND_STAGES}.")


def _cc_sam_features(model, counts, batches, epochs, steps, loss, verbose):
    """CC-SAM's second stage: the head alone (backbone frozen, BatchNorm in inference
    mode) on class-conditional adversarial features, ``FlatRatioRamp(epochs)``."""
    from keras_margins.class_conditional_sam import FlatRatioRamp, cc_sam_model
    from keras_margins.decoupling import _Frozen

    radius = hyperparameters("cc-sam")["feature_radius"]
    wrapped = cc_sam_model(model, counts, perturb="features", radius=radius, flat_ratio=0.0)
    # Every layer but the head frozen (the wrapper shares them); flags restored after.
    with _Frozen(model, [wrapped.head]):
        wrapped.compile(optimizer=_optimizer(0.01, steps), loss=loss)
        wrapped.fit(batches, epochs=epochs, callbacks=[FlatRatioRamp(epochs)],
                    verbose=verbose)
    return {"lr": 0.01, "feature_radius": radius, "flat_ratio": "ramp 1/epochs -> 1"}

