"""Train and evaluate the seed papers' methods on long-tailed data.

Examples:
    # Every Fashion-MNIST-LT recipe comparison starts like this (small CNN):
    python -m applications.train --dataset fashion-mnist-lt --recipe ce ldam-drw \\
        --epochs 10 --seed 0 1 2
    # CIFAR-10-LT (ratio 100, exponential), ResNet-32, the papers' schedule
    # rescaled to 30 epochs, on JAX:
    python -m applications.train --dataset cifar10-lt --recipe ldam-drw --epochs 30 \\
        --backend jax
    # A few steps on real data (CI):
    python -m applications.train --smoke --recipe ce ldam-drw
    # Offline, no data folder needed:
    python -m applications.train --dataset digits-lt --imbalance-ratio 10 --smoke
    python -m applications.train --list-recipes

Protocol (the LDAM-DRW and KPS papers): SGD momentum 0.9 with PyTorch's coupled
L2 weight decay 2e-4 (``applications.optimizers.CoupledSGD``), lr 0.1,
batch 128 (KPS 64), linear warm-up over the first 5 of 200 epochs, the rate
times 0.01 from epoch 160 and 0.0001 from 180 (KPS: 0.1 and 0.01), DRW at 160,
GA at 120, IB at 100 (``applications.protocol.PAPER_PROTOCOL``). Every one
of these epochs is rescaled to ``--epochs`` with ``PAPER_PROTOCOL.rescaled``
(``keras_margins.schedules.scaled_epochs``; 30 epochs: warm-up 1 epoch,
DRW at 24, decays at 24 and 27). Reported numbers are those of the last
epoch (never best-on-test).

Each run writes ``<results-dir>/<dataset>-<profile><ratio>-e<epochs>[-<tag>]/
<recipe>/seed<seed>/`` with config.json, history.csv and history.json (per
epoch: loss, accuracy, val_loss, val_accuracy, learning_rate, seconds),
report.json (``keras_margins.evaluate_long_tailed`` on the test set, last
epoch), summary.json, model.keras and plots/*.png. ``python -m
applications.aggregate <results-dir>`` turns the folders into the papers'
Markdown table (mean ± std over seeds).
"""

import argparse
import dataclasses
import json
import pathlib
import sys
import time

from applications.cli import add_backend_argument, add_data_dir_argument, use_backend
from applications.protocol import PAPER_PROTOCOL

__all__ = ["build_parser", "main", "run_recipe", "build_run", "fit_run", "report_run",
           "Run", "resolve_schedule"]

DEFAULT_RESULTS = pathlib.Path("results")


def _loss_arg(text):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--loss-arg expects key=value, received {text!r}")
    key, value = text.split("=", 1)
    try:
        value = json.loads(value)
    except json.JSONDecodeError:
        pass
    return key.strip(), value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m applications.train",
        description=__doc__.split("\n\n")[0] + " Recipes reproduce each paper's protocol; "
        "see --list-recipes.",
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_argument_group("what to run")
    what.add_argument("--recipe", nargs="+", default=["ce"], metavar="NAME",
                      help="one or more recipes (default: ce); --list-recipes shows them")
    what.add_argument("--list-recipes", action="store_true",
                      help="print the recipe table (Markdown) and exit")
    what.add_argument("--seed", nargs="+", type=int, default=[0],
                      help="training seeds (initialisation, shuffling, augmentation); "
                           "several seeds run one after the other (default: 0)")
    add_backend_argument(what)
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="fashion-mnist-lt",
                      choices=["fashion-mnist-lt", "cifar10-lt", "digits-lt"],
                      help="fashion-mnist-lt (IDX files), cifar10-lt (JPEG copy), "
                           "digits-lt (scikit-learn, offline); default fashion-mnist-lt")
    add_data_dir_argument(data, "; not read by digits-lt")
    data.add_argument("--imbalance-ratio", type=float,
                      help="largest/smallest class size (default 100; 10 for digits-lt)")
    data.add_argument("--profile", choices=["exp", "step"], default="exp",
                      help="long-tailed profile (default exp)")
    data.add_argument("--pipeline", choices=["auto", "numpy", "tfdata", "device"],
                      default="auto",
                      help="input pipeline: tfdata (tf.data), numpy (keras.utils.PyDataset "
                           "with NumPy/Pillow, no TensorFlow needed), auto (tfdata when "
                           "TensorFlow imports, else numpy; default) or device (cifar10-lt: "
                           "the normalised training array fed to fit whole, pad-4 crops and "
                           "flips per image inside the compiled step with "
                           "keras_margins.data.RandomPadCropFlip; for GPUs)")
    data.add_argument("--subset-seed", type=int, default=0,
                      help="seed of the long-tailed subset selection (default 0 = the "
                           "LDAM-DRW code's subset); kept fixed across training seeds")
    train = parser.add_argument_group("training")
    train.add_argument("--model", choices=["auto", "resnet32", "small-cnn", "resnet50"],
                       default="auto", help="auto: resnet32 for cifar10-lt, small-cnn "
                       "otherwise; resnet50 = keras.applications ResNet-50 (no weights)")
    train.add_argument("--epochs", type=int, help="epochs (default 200 for cifar10-lt, 10 "
                       "otherwise); warm-up, decays and stage switches scale with it")
    train.add_argument("--batch-size", type=int, help="default: the recipe's (128; KPS 64)")
    train.add_argument("--lr", type=float, default=0.1, help="base learning rate (0.1)")
    train.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (0.9)")
    train.add_argument("--weight-decay", type=float,
                       help="coupled L2 weight decay as in torch.optim.SGD (default: the "
                            "recipe's, 2e-4 for all but weight-balancing): adds wd*w to "
                            "every gradient before momentum")
    train.add_argument("--loss-arg", action="append", type=_loss_arg, default=[],
                       metavar="KEY=VALUE", help="override a loss hyper-parameter, e.g. "
                       "--loss-arg scale=16 (repeatable; values parsed as JSON)")
    train.add_argument("--sam-rho", type=float,
                       help="train with sharpness-aware minimisation of this radius "
                            "(default: the recipe's; 0 turns SAM off)")
    train.add_argument("--dtype-policy", default=None,
                       help="Keras dtype policy of the model, e.g. mixed_bfloat16 (the losses "
                            "compute in float32); default float32")
    train.add_argument("--steps-per-execution", type=int, default=1,
                       help="training steps per compiled call (Keras compile; default 1)")
    train.add_argument("--stage1-from", type=pathlib.Path, metavar="FOLDER",
                       help="two-stage recipes (crt, tau-norm, lws): take stage 1 from an "
                            "earlier run's folder (its model.keras and history.json, e.g. "
                            "of the ce recipe with the same data and seed) instead of "
                            "training it again")
    train.add_argument("--zero-centroid-weight", type=float, default=1.0,
                       help="weight of the zero-centroid regulariser of -zc recipes (1.0)")
    train.add_argument("--max-steps", type=int,
                       help="cap on optimizer steps per epoch (CI / quick checks)")
    train.add_argument("--smoke", action="store_true",
                       help="CI mode: 2 epochs of at most 3 steps on a 2.5%% long-tailed "
                            "subset of the training set and 64 test images per class, "
                            "stage switches at epoch 1, PCA embedding")
    train.add_argument("--jit-compile", default="auto", choices=["auto", "true", "false"],
                       help="Keras jit_compile (default auto: XLA on TensorFlow and JAX, "
                            "eager torch; --smoke on TensorFlow uses tf.function without XLA)")
    train.add_argument("--no-validation", action="store_true",
                       help="skip the per-epoch test-set evaluation (faster)")
    out = parser.add_argument_group("output")
    out.add_argument("--results-dir", type=pathlib.Path, default=DEFAULT_RESULTS,
                     help="root of the run folders (default ./results)")
    out.add_argument("--tag", default="", help="suffix of the run-group folder name")
    out.add_argument("--embedding", default="auto", choices=["auto", "umap", "tsne", "pca",
                                                              "none"],
                     help="2-D embedding of the features (default auto: UMAP if "
                          "installed, else t-SNE; PCA in --smoke)")
    out.add_argument("--no-plots", action="store_true")
    out.add_argument("--no-save-model", action="store_true")
    out.add_argument("--verbose", type=int, choices=[0, 1, 2],
                     help="Keras fit verbosity (default: 1 = progress bar on a terminal, "
                          "2 = one line per epoch otherwise)")
    return parser


def resolve_schedule(recipe, epochs):
    """Warm-up and decay epochs of ``PAPER_PROTOCOL`` rescaled to ``epochs``, with the
    recipe's decay factors (``WarmupStepDecay`` keyword arguments)."""
    return PAPER_PROTOCOL.rescaled(epochs).schedule(recipe.decay_factors)


def build_model(args, data, recipe, seed):
    from applications import models
    from applications.recipes import head_regularizer
    regularizer = head_regularizer(recipe, args.zero_centroid_weight)
    name = args.model
    if name == "auto":
        name = "resnet32" if data.name == "cifar10-lt" else "small-cnn"
    kwargs = dict(num_classes=data.num_classes, head=recipe.head,
                  input_shape=data.input_shape, head_regularizer=regularizer)
    if name == "resnet32":
        augment = None
        if data.pipeline == "device":
            from keras_margins.data import RandomPadCropFlip
            augment = RandomPadCropFlip(padding=4, fill_value=data.details["fill_value"],
                                        seed=seed, name="device_augment")
        return models.resnet32(seed=seed, input_layer=augment, **kwargs), name
    if name == "small-cnn":
        return models.small_cnn(seed=seed, **kwargs), name
    return models.backbone_classifier(backbone="ResNet50", **kwargs), name


def _epoch_log(schedule_kwargs, base_lr):
    """A callback adding ``learning_rate`` and ``seconds`` to every epoch's logs."""
    import keras

    from keras_margins.schedules import warmup_step_decay_value

    class EpochLog(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["learning_rate"] = warmup_step_decay_value(epoch, base_lr,
                                                                **schedule_kwargs)
                logs["seconds"] = time.perf_counter() - self.start

    return EpochLog()


def _run_folder(args, data, recipe_name, seed):
    group = f"{data.name}-{args.profile}{args.imbalance_ratio:g}-e{args.epochs}"
    if args.smoke:
        group += "-smoke"
    if args.tag:
        group += f"-{args.tag}"
    # --loss-arg variants of a recipe get their own folder (a sweep must not overwrite)
    variant = "".join(f"-{key}{value}" for key, value in sorted(dict(args.loss_arg).items()))
    if getattr(args, "sam_rho", None) is not None:
        variant += f"-rho{args.sam_rho:g}"
    return args.results_dir / group / f"{recipe_name}{variant}" / f"seed{seed}"


def load_data(args, batch_size, seed, sampler=None, mixup_alpha=None):
    """The run's batch sources (``--pipeline``): the subset is fixed by ``--subset-seed``,
    shuffling and augmentation follow the training ``seed``; ``sampler`` (e.g.
    ``"class_balanced"``) and ``mixup_alpha`` (MixUp, soft labels) change the
    training batches."""
    from applications.data import load_dataset
    return load_dataset(args.dataset, args.data_dir, args.imbalance_ratio, args.profile,
                        seed=args.subset_seed, max_per_class=64 if args.smoke else None,
                        train_fraction=(0.025 if args.smoke and args.dataset != "digits-lt"
                                        else None),
                        batch_size=batch_size, shuffle_seed=seed, pipeline=args.pipeline,
                        sampler=sampler, mixup_alpha=mixup_alpha)


def predict_test_set(model, logits_layer, data):
    """One pass over the test set: logits (report, plots), penultimate
    features (embedding) and labels."""
    import keras
    import numpy as np
    both = keras.Model(model.inputs, [model.get_layer(logits_layer).output,
                                      model.get_layer("features").output])
    logits, features, labels = [], [], []
    for x, y in data.test_batches():
        batch_logits, batch_features = both.predict_on_batch(x)
        logits.append(np.asarray(batch_logits))
        features.append(np.asarray(batch_features))
        labels.append(np.asarray(y))
    return np.concatenate(logits), np.concatenate(features), np.concatenate(labels)


def evaluate(model, logits, labels, class_counts):
    """``evaluate_long_tailed``'s report from the test-set ``logits`` already
    computed (the cosine head and ECE scale are read from ``model``)."""
    from keras_margins.evaluation import default_logit_scale, evaluate_predictions
    from keras_margins.margins import find_cosine_head
    report = evaluate_predictions(logits, labels, class_counts, kernel=find_cosine_head(model),
                                  logit_scale=default_logit_scale(model))
    report["evaluated_by"] = "keras_margins.evaluation.evaluate_predictions"
    return report


@dataclasses.dataclass
class Run:
    """One recipe and seed, built and ready to fit (``build_run``)."""
    args: argparse.Namespace
    recipe: object
    seed: int
    data: object
    folder: pathlib.Path
    model: object
    model_name: str
    train_data: object
    schedule_kwargs: dict
    callbacks: list
    config: dict
    logits_layer: str = "logits"
    network: object = None   # the functional network when ``model`` wraps its layers


def build_run(args, recipe_name, seed):
    """Data, run folder, model, loss, optimizer and callbacks of one recipe and
    seed; writes config.json and returns the ``Run``."""
    import keras
    import numpy as np

    from applications.hyperparameters import hyperparameters
    from applications.optimizers import CoupledSGD
    from applications.recipes import LogitsAccuracy, MixedLabelAccuracy, get_recipe
    from keras_margins.schedules import WarmupStepDecay

    recipe = get_recipe(recipe_name)
    batch_size = args.batch_size or recipe.batch_size
    start = time.perf_counter()
    data = load_data(args, batch_size, seed, mixup_alpha=recipe.mixup_alpha)
    print(f"{data.name}: {data.num_train} training images, counts {data.class_counts}, "
          f"{data.num_test} test images ({time.perf_counter() - start:.1f} s)", flush=True)
    folder = _run_folder(args, data, recipe.name, seed)
    folder.mkdir(parents=True, exist_ok=True)
    steps_per_execution = getattr(args, "steps_per_execution", 1)
    if steps_per_execution > 1 and keras.backend.backend() == "torch":
        raise ValueError(f"--steps-per-execution {steps_per_execution}: Keras' PyTorch "
                         f"trainer runs one step per call; use 1 with torch (or JAX / "
                         f"TensorFlow).")
    keras.utils.set_random_seed(seed)
    keras.config.set_dtype_policy(getattr(args, "dtype_policy", None) or "float32")
    counts = list(data.class_counts)
    loss = recipe.build_loss(counts, dict(args.loss_arg))
    model, model_name = build_model(args, data, recipe, seed)
    sam_rho = recipe.sam_rho if getattr(args, "sam_rho", None) is None else args.sam_rho
    if sam_rho:
        from keras_margins.sam import sam_model
        model = sam_model(model, rho=sam_rho)
    network = None
    if recipe.cc_sam:
        from keras_margins.class_conditional_sam import cc_sam_model
        settings = hyperparameters("cc-sam")
        network, model = model, cc_sam_model(model, counts, perturb="weights",
                                             radius=settings["weight_radius"],
                                             flat_ratio=settings["flat_ratio"])
    train_data = data.train_batches(args.max_steps)
    steps_per_epoch = data.steps(train_data)
    schedule_kwargs = resolve_schedule(recipe, args.epochs)
    schedule = WarmupStepDecay(args.lr, steps_per_epoch=steps_per_epoch, **schedule_kwargs)
    weight_decay = next(value for value in (args.weight_decay, recipe.weight_decay, 2e-4)
                        if value is not None)
    optimizer = CoupledSGD(schedule, momentum=args.momentum,
                           coupled_weight_decay=weight_decay)
    if recipe.head == "dense_l1":
        metric = LogitsAccuracy(data.num_classes)
    elif recipe.mixup_alpha:   # MixUp batches carry soft (B, C) labels
        metric = MixedLabelAccuracy(name="accuracy")
    else:
        metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    if jit == "auto" and args.smoke and keras.backend.backend() == "tensorflow":
        jit = False   # XLA compilation costs more than 3 smoke steps save
    model.compile(optimizer=optimizer, loss=loss, metrics=[metric], jit_compile=jit,
                  steps_per_execution=steps_per_execution)
    stage_callbacks = recipe.callbacks(counts, args.epochs, smoke=args.smoke)
    config = {
        "recipe": recipe.name, "description": recipe.description,
        "reference": recipe.reference, "dataset": data.name, "seed": seed,
        "subset_seed": args.subset_seed, "imbalance_ratio": args.imbalance_ratio,
        "profile": args.profile, "pipeline": data.pipeline, "class_counts": counts,
        "class_names": data.class_names,
        "num_train": data.num_train, "num_test": data.num_test,
        "model": model_name, "head": recipe.head,
        "trainable_parameters": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "loss": keras.losses.serialize(loss), "epochs": args.epochs,
        "steps_per_epoch": steps_per_epoch, "batch_size": batch_size, "lr": args.lr,
        "momentum": args.momentum, "weight_decay": weight_decay,
        "weight_decay_form": "coupled L2 as torch.optim.SGD (CoupledSGD)",
        "schedule": schedule_kwargs,
        "sam_rho": sam_rho or None, "mixup_alpha": recipe.mixup_alpha,
        "cc_sam": hyperparameters("cc-sam") if recipe.cc_sam else None,
        "second_stage": recipe.second_stage,
        "stage": recipe.stage, "stage_epoch": recipe.stage_epoch(args.epochs, args.smoke),
        "zero_centroid_weight": args.zero_centroid_weight if recipe.zero_centroid else None,
        "loss_args": dict(args.loss_arg), "tag": args.tag,
        "backend": keras.backend.backend(), "keras_version": keras.__version__,
        "smoke": args.smoke, "max_steps": args.max_steps, "argv": sys.argv[1:],
        "dtype_policy": keras.config.dtype_policy().name,
        "steps_per_execution": steps_per_execution,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2, default=str))
    return Run(args=args, recipe=recipe, seed=seed, data=data, folder=folder, model=model,
               model_name=model_name, train_data=train_data, schedule_kwargs=schedule_kwargs,
               callbacks=stage_callbacks, config=config,
               logits_layer="dense_logits" if recipe.head == "dense_l1" else "logits",
               network=network)


def fit_run(run):
    """Trains ``run.model`` (history.csv as it goes); writes history.json and returns
    ``(history, train_seconds)``."""
    import keras
    args = run.args
    callbacks = run.callbacks + [
        _epoch_log(run.schedule_kwargs, args.lr),
        keras.callbacks.CSVLogger(str(run.folder / "history.csv")),
    ]
    validation = None if args.no_validation else run.data.test
    verbose = args.verbose if args.verbose is not None else (1 if sys.stdout.isatty() else 2)
    print(f"[{run.recipe.name} seed {run.seed}] {run.model_name} "
          f"({run.config['trainable_parameters']:,} parameters), {run.data.num_train} "
          f"training images, backend {run.config['backend']} -> {run.folder}", flush=True)
    start = time.perf_counter()
    if isinstance(run.train_data, tuple):   # the device pipeline: whole arrays
        x, y = run.train_data
        history = run.model.fit(x, y, batch_size=run.config["batch_size"], epochs=args.epochs,
                                validation_data=validation, callbacks=callbacks,
                                verbose=verbose, shuffle=True)
    else:
        history = run.model.fit(run.train_data, epochs=args.epochs,
                                validation_data=validation, callbacks=callbacks,
                                verbose=verbose, shuffle=False)
    train_seconds = time.perf_counter() - start
    if run.network is not None:
        run.model = run.network   # trained through the wrapper (shared layers)
    history = {k: [float(v) for v in values] for k, values in history.history.items()}
    (run.folder / "history.json").write_text(json.dumps(history, indent=2))
    return history, train_seconds


def report_run(run, history, train_seconds):
    """Last-epoch test-set report, model and plots of a fitted run: writes
    report.json, model.keras, plots/ and summary.json; returns the summary."""
    import numpy as np
    args, recipe, data, folder, seed = run.args, run.recipe, run.data, run.folder, run.seed
    counts = list(data.class_counts)
    logits, features, test_labels = predict_test_set(run.model, run.logits_layer, data)
    report = evaluate(run.model, logits, test_labels, counts)
    (folder / "report.json").write_text(json.dumps(report, indent=2))
    if not args.no_save_model:
        run.model.save(folder / "model.keras")
    plots = {}
    if not args.no_plots:
        from applications.plots import plot_all
        embedding = "pca" if args.smoke and args.embedding == "auto" else args.embedding
        title = f"{recipe.name}, {data.name} ratio {args.imbalance_ratio:g}, seed {seed}"
        plots = plot_all(folder / "plots", report, history, logits, features, test_labels,
                         counts, data.class_names, title, embedding=embedding, seed=seed)
    seconds = history.get("seconds", [])
    summary = {
        "recipe": recipe.name, "seed": seed, "dataset": data.name, "folder": str(folder),
        "top1": report.get("top1"), "many": report.get("many"),
        "medium": report.get("medium"), "few": report.get("few"),
        "balanced_accuracy": report.get("balanced_accuracy"),
        "train_seconds": train_seconds,
        "seconds_per_epoch": float(np.mean(seconds)) if seconds else None,
        "seconds_per_epoch_after_first": (float(np.mean(seconds[1:])) if len(seconds) > 1
                                          else None),
        "final_loss": history["loss"][-1] if history.get("loss") else None,
        "plots": plots,
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))

    def pct(value):
        return "–" if value is None else f"{100 * value:.1f}"

    print(f"[{recipe.name} seed {seed}] top-1 {pct(summary['top1'])}  many "
          f"{pct(summary['many'])}  medium {pct(summary['medium'])}  few "
          f"{pct(summary['few'])}  ({summary['seconds_per_epoch'] or 0:.1f} s/epoch)",
          flush=True)
    return summary


def _check_stage1_folder(folder, recipe_name):
    """``--stage1-from`` needs a two-stage recipe and a complete run folder."""
    from applications.recipes import get_recipe
    if get_recipe(recipe_name).second_stage is None:
        raise ValueError(f"--stage1-from needs a two-stage recipe, received "
                         f"{recipe_name!r}.")
    folder = pathlib.Path(folder)
    missing = [name for name in ("config.json", "model.keras", "history.json",
                                 "summary.json") if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"--stage1-from {folder}: expected a run folder with "
                                f"config.json, model.keras, history.json and summary.json; "
                                f"missing {missing}.")


def load_stage1(run, folder):
    """Stage 1 of a two-stage recipe from an earlier run's folder: its trained model
    and history (``--stage1-from``); returns ``(history, train_seconds)``."""
    import keras
    folder = pathlib.Path(folder)
    earlier = json.loads((folder / "config.json").read_text())
    for key in ("dataset", "class_counts", "seed", "epochs", "head"):
        if earlier.get(key) != run.config.get(key):
            raise ValueError(f"--stage1-from {folder}: its {key} {earlier.get(key)!r} differs "
                             f"from this run's {run.config.get(key)!r}.")
    run.model = keras.saving.load_model(folder / "model.keras", compile=False)
    history = json.loads((folder / "history.json").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    (run.folder / "history.json").write_text(json.dumps(history, indent=2))
    run.config["stage1_from"] = str(folder)
    return history, summary["train_seconds"]


def run_second_stage(run):
    """``applications.decoupled.second_stage`` on a fitted run; records its settings
    in config.json."""
    from applications.decoupled import second_stage
    start = time.perf_counter()
    run.model, run.logits_layer, details = second_stage(run, verbose=run.args.verbose or 0)
    run.config["second_stage_details"] = {**details,
                                          "seconds": time.perf_counter() - start}
    (run.folder / "config.json").write_text(json.dumps(run.config, indent=2, default=str))
    print(f"[{run.recipe.name} seed {run.seed}] second stage {run.recipe.second_stage}: "
          f"{details} ({run.config['second_stage_details']['seconds']:.0f} s)", flush=True)


def run_recipe(args, recipe_name, seed):
    """Trains one recipe with one seed (``build_run``, ``fit_run`` or ``load_stage1``,
    the second stage if any, ``report_run``); returns the summary dict."""
    if getattr(args, "stage1_from", None) is not None:
        _check_stage1_folder(args.stage1_from, recipe_name)
    run = build_run(args, recipe_name, seed)
    if getattr(args, "stage1_from", None) is not None:
        history, train_seconds = load_stage1(run, args.stage1_from)
    else:
        history, train_seconds = fit_run(run)
    if run.recipe.second_stage is not None:
        run_second_stage(run)
    return report_run(run, history, train_seconds)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    use_backend(args.backend)
    from applications.recipes import get_recipe, recipes_table
    if args.list_recipes:
        print(recipes_table())
        return 0
    try:
        recipes = [get_recipe(name).name for name in args.recipe]
    except ValueError as error:
        parser.error(str(error))
    if args.imbalance_ratio is None:
        args.imbalance_ratio = 10.0 if args.dataset == "digits-lt" else 100.0
    if args.epochs is None:
        args.epochs = 2 if args.smoke else (200 if args.dataset == "cifar10-lt" else 10)
    if args.smoke and args.max_steps is None:
        args.max_steps = 3
    for name in recipes:
        for seed in args.seed:
            run_recipe(args, name, seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
