"""applications/: models, PyTorch-style coupled weight decay, recipes, CLI, aggregation.

The CLI test trains two recipes for a few steps on real Fashion-MNIST-LT data
from ../shared/datasets in a subprocess on the current backend.
"""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # applications/ lives beside keras_margins/, not installed
    sys.path.insert(0, str(REPO))

from applications import models  # noqa: E402
from applications.optimizers import CoupledSGD  # noqa: E402
from applications.recipes import (RECIPES, LossStageSwitch, TwoStageLoss,  # noqa: E402
                                  get_recipe, head_regularizer)
from applications.train import resolve_schedule  # noqa: E402
from backend_utils import to_numpy, value_and_grad  # noqa: E402
CIFAR10_COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def _trainable(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def test_resnet32_has_exactly_464154_parameters_with_dense_head():
    model = models.resnet32(num_classes=10, head="dense")
    assert _trainable(model) == 464_154
    # BatchNorm moving statistics: 31 layers (16, then 10 x 16, 10 x 32, 10 x 64 channels).
    assert model.count_params() - _trainable(model) == 2 * (16 + 10 * 16 + 10 * 32 + 10 * 64)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 31 and all(not layer.use_bias for layer in convs)
    # The cosine head has no bias: 464,154 - 10 with head="cosine".
    head = models.CosineDense(10)
    head.build((None, 64))
    assert _trainable(head) == 64 * 10 == int(np.prod(model.get_layer("logits").kernel.shape))
    assert model.get_layer("features").output.shape == (None, 64)


def test_option_a_shortcut_subsamples_and_zero_pads_channels():
    x = np.random.RandomState(0).randn(2, 8, 8, 16).astype("float32")
    y = to_numpy(models.OptionAShortcut(pad=8)(x))
    assert y.shape == (2, 4, 4, 32)
    np.testing.assert_array_equal(y[..., 8:24], x[:, ::2, ::2, :])
    assert not y[..., :8].any() and not y[..., 24:].any()


def test_small_cnn_features_output_and_feature_model():
    model = models.small_cnn(num_classes=10, head="dense_l1", return_features=True)
    x = np.random.RandomState(0).rand(3, 28, 28, 1).astype("float32")
    outputs, features = (to_numpy(t) for t in model(x))
    assert outputs.shape == (3, 11) and features.shape == (3, 64)
    # The IB head appends the L1 norm of the penultimate features.
    np.testing.assert_allclose(outputs[:, -1], np.abs(features).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(to_numpy(models.feature_model(model)(x)), features, rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(ValueError, match="head"):
        models.small_cnn(head="softmax")


def test_backbone_classifier_defaults_to_resnet50_without_download(monkeypatch):
    """The wrapper asks keras.applications.ResNet50 for a pooled, headless,
    randomly initialised backbone (a tiny stand-in keeps the test fast)."""
    calls = {}

    def tiny_backbone(include_top, weights, input_shape, pooling):
        calls.update(include_top=include_top, weights=weights, pooling=pooling)
        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(4, 3)(inputs)
        return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="tiny")

    monkeypatch.setattr(keras.applications, "ResNet50", tiny_backbone)
    model = models.backbone_classifier(5, input_shape=(16, 16, 3))
    assert calls == {"include_top": False, "weights": None, "pooling": "avg"}
    assert model.get_layer("logits").__class__.__name__ == "CosineDense"
    out = to_numpy(model(np.random.RandomState(0).rand(2, 16, 16, 3).astype("float32")))
    assert out.shape == (2, 5) and np.all(np.abs(out) <= 1 + 1e-5)
    dense = models.backbone_classifier(5, backbone=tiny_backbone, head="dense",
                                       input_shape=(16, 16, 3), return_features=True)
    assert [tuple(t.shape) for t in dense.outputs] == [(None, 5), (None, 4)]
    with pytest.raises(ValueError, match="keras.applications"):
        models.backbone_classifier(5, backbone="NoSuchNet")


def _keras_sgd_steps(w0, b0, grads, lrs, wd, momentum, nesterov=False):
    w = keras.Variable(w0, name="kernel")
    b = keras.Variable(b0, name="bias")
    optimizer = CoupledSGD(learning_rate=lrs[0], momentum=momentum, nesterov=nesterov,
                           coupled_weight_decay=wd)
    for (gw, gb), lr in zip(grads, lrs):
        optimizer.learning_rate = lr
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(gw), w),
                                   (keras.ops.convert_to_tensor(gb), b)])
    return to_numpy(w), to_numpy(b)


def _torch_sgd_steps(w0, b0, grads, lrs, wd, momentum, nesterov=False):
    import torch
    w = torch.nn.Parameter(torch.tensor(w0))
    b = torch.nn.Parameter(torch.tensor(b0))
    optimizer = torch.optim.SGD([w, b], lr=lrs[0], momentum=momentum, nesterov=nesterov,
                                weight_decay=wd)
    for (gw, gb), lr in zip(grads, lrs):
        for group in optimizer.param_groups:
            group["lr"] = lr
        w.grad, b.grad = torch.tensor(gw), torch.tensor(gb)
        optimizer.step()
    return w.detach().numpy(), b.detach().numpy()


@pytest.mark.parametrize("nesterov", [False, True])
def test_coupled_sgd_matches_torch_sgd_with_weight_decay(nesterov):
    rng = np.random.RandomState(0)
    w0, b0 = rng.randn(4, 3).astype("float32"), rng.randn(3).astype("float32")
    grads = [(rng.randn(4, 3).astype("float32"), rng.randn(3).astype("float32"))
             for _ in range(4)]
    lrs = [0.02, 0.1, 0.1, 0.001]          # warm-up and a decay: lr changes matter
    got = _keras_sgd_steps(w0, b0, grads, lrs, 0.05, 0.9, nesterov)
    want = _torch_sgd_steps(w0, b0, grads, lrs, 0.05, 0.9, nesterov)
    for g, t in zip(got, want):
        np.testing.assert_allclose(g, t, rtol=1e-5, atol=1e-6)
    # Keras' own SGD(weight_decay=...) is decoupled and differs: the test can fail.
    plain = keras.Variable(w0)
    keras_sgd = keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.05)
    for gw, _ in grads:
        keras_sgd.apply_gradients([(keras.ops.convert_to_tensor(gw), plain)])
    assert not np.allclose(to_numpy(plain), got[0], atol=1e-4)


def test_coupled_weight_decay_equals_gradient_of_half_wd_squared_norm():
    """One momentum-free step = a step on loss + (wd/2)||w||^2 (autodiff)."""
    rng = np.random.RandomState(1)
    w0 = rng.randn(5, 2).astype("float32")
    target = rng.randn(5, 2).astype("float32")
    wd, lr = 2e-2, 0.1

    def data_loss(w):
        return keras.ops.sum(keras.ops.square(keras.ops.subtract(w, target))) / 2

    _, grad = value_and_grad(data_loss, w0)
    _, penalised = value_and_grad(
        lambda w: data_loss(w) + wd / 2 * keras.ops.sum(keras.ops.square(w)), w0)
    w = keras.Variable(w0)
    CoupledSGD(lr, momentum=0.0, coupled_weight_decay=wd).apply_gradients(
        [(keras.ops.convert_to_tensor(grad), w)])
    np.testing.assert_allclose(to_numpy(w), w0 - lr * penalised, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="coupled_weight_decay"):
        CoupledSGD(0.1, weight_decay=1e-4)
    config = CoupledSGD(0.1, coupled_weight_decay=2e-4).get_config()
    assert config["coupled_weight_decay"] == 2e-4
    assert CoupledSGD.from_config(config).coupled_weight_decay == 2e-4


def test_schedule_and_stage_epochs_scale_with_the_run_length():
    ldam = get_recipe("ldam-drw")
    assert resolve_schedule(ldam, 200) == {"warmup_epochs": 5, "decay_epochs": [160, 180],
                                           "decay_factors": [0.01, 0.0001]}
    assert resolve_schedule(ldam, 30) == {"warmup_epochs": 1, "decay_epochs": [24, 27],
                                          "decay_factors": [0.01, 0.0001]}
    assert resolve_schedule(get_recipe("kps-ga"), 10)["decay_factors"] == [0.1, 0.01]
    assert ldam.stage_epoch(200) == 160 and ldam.stage_epoch(30) == 24
    assert get_recipe("kps-ga").stage_epoch(30) == 18
    assert get_recipe("ib-focal").stage_epoch(30) == 15
    assert ldam.stage_epoch(2, smoke=True) == 1
    assert get_recipe("kps").batch_size == 64 and get_recipe("elm").name == "elm-lam1.0"
    with pytest.raises(ValueError, match="Unknown recipe"):
        get_recipe("nope")


def test_every_recipe_builds_its_loss_and_head():
    """All recipes of the issue exist and construct (the library losses they need)."""
    wanted = {"ce", "focal", "cb-focal", "la", "ldam", "ldam-drw", "elm-lam1.0",
              "elm-lam0.5", "elm-lam0.1", "elm-drw-lam1.0", "elm-drw-lam0.5",
              "elm-drw-lam0.1", "mm-drw", "mm-ldam-drw", "kps", "kps-ga", "kps-drw", "lmsce",
              "lm-softmax", "lm-softmax-zc", "cosface", "cosface-zc", "arcface", "arcface-zc",
              "normface", "normface-zc", "ce-rsm", "ib-focal", "ldam-drw-sam", "kps-ga-sam",
              "vs", "lade", "crt", "tau-norm", "lws", "weight-balancing", "mislas",
              "cc-sam"}
    assert wanted <= set(RECIPES)
    logits = np.random.RandomState(0).uniform(-0.9, 0.9, (4, 10)).astype("float32")
    labels = np.array([0, 3, 8, 9])
    for name, recipe in RECIPES.items():
        loss = recipe.build_loss(CIFAR10_COUNTS)
        y_pred = logits
        if recipe.head == "dense_l1":
            y_pred = np.concatenate([logits, np.full((4, 1), 3.0, "float32")], -1)
        value = float(to_numpy(loss(labels, y_pred)))
        assert np.isfinite(value), name
        assert (head_regularizer(recipe) is not None) == name.endswith("-zc"), name
        callbacks = recipe.callbacks(CIFAR10_COUNTS, 200)
        assert len(callbacks) == (recipe.stage is not None), name


def test_two_stage_loss_switches_and_round_trips():
    counts = CIFAR10_COUNTS
    loss = get_recipe("ib-focal").build_loss(counts)
    assert isinstance(loss, TwoStageLoss)
    rng = np.random.RandomState(0)
    logits = rng.randn(6, 10).astype("float32")
    y_pred = np.concatenate([logits, np.full((6, 1), 2.0, "float32")], -1)
    labels = np.array([0, 1, 2, 7, 8, 9])
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    np.testing.assert_allclose(to_numpy(loss(labels, y_pred)), to_numpy(ce(labels, logits)),
                               rtol=1e-5)
    switch = LossStageSwitch(start_epoch=3)
    assert switch.set_stage(loss, True) and loss.second_stage
    np.testing.assert_allclose(to_numpy(loss(labels, y_pred)),
                               to_numpy(loss.second(labels, y_pred)), rtol=1e-5)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert clone.second_stage and clone.first_columns == 10


@pytest.mark.real_data
def test_cli_smoke_two_recipes_on_fashion_mnist_then_aggregate(datasets_dir, tmp_path):
    env = dict(os.environ, KERAS_MARGINS_DATA=str(datasets_dir),
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    help_text = subprocess.run([sys.executable, "-m", "applications.train", "--help"],
                               cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert help_text.returncode == 0 and "--recipe" in help_text.stdout
    assert "coupled L2" in help_text.stdout
    command = [sys.executable, "-m", "applications.train", "--smoke", "--dataset",
               "fashion-mnist-lt", "--recipe", "ce", "ldam-drw", "--no-validation",
               "--epochs", "1",
               "--results-dir", str(tmp_path), "--backend", keras.backend.backend()]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for recipe in ("ce", "ldam-drw"):
        folder = tmp_path / "fashion-mnist-lt-exp100-e1-smoke" / recipe / "seed0"
        config = json.loads((folder / "config.json").read_text())
        assert config["backend"] == keras.backend.backend()
        assert config["class_counts"] == [150, 90, 54, 33, 20, 12, 7, 5, 3, 2]
        history = json.loads((folder / "history.json").read_text())
        assert len(history["loss"]) == 1 and np.all(np.isfinite(history["loss"]))
        report = json.loads((folder / "report.json").read_text())
        assert 0.0 <= report["top1"] <= 1.0 and len(report["per_class_accuracy"]) == 10
        assert report["many"] is not None and report["few"] is not None
        for plot in ("per_class_accuracy", "shot_groups", "training_curves",
                     "sample_margins", "embedding"):
            assert (folder / "plots" / f"{plot}.png").stat().st_size > 1000, plot
        assert (folder / "model.keras").stat().st_size > 10_000
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["recipe"] == recipe and summary["top1"] == report["top1"]
        assert (folder / "history.csv").read_text().startswith("epoch,")
    drw = json.loads((tmp_path / "fashion-mnist-lt-exp100-e1-smoke" / "ldam-drw" / "seed0" /
                      "config.json").read_text())
    assert drw["stage"] == "drw" and drw["stage_epoch"] == 1 and drw["steps_per_epoch"] == 3
    assert drw["loss"]["class_name"] == "LDAMLoss"
    # The custom objects a saved model needs are registered for load_model.
    for name in ("OptionAShortcut", "CoupledSGD", "TwoStageLoss",
                 "LogitsAccuracy"):
        assert keras.saving.get_registered_object(f"applications>{name}") is not None, name

    from applications.aggregate import main as aggregate_main
    output = tmp_path / "table.md"
    assert aggregate_main([str(tmp_path), "--include-smoke", "--output", str(output)]) == 0
    table = output.read_text()
    assert "| ce (n=1)" in table and "| ldam-drw (n=1)" in table and "±" in table
    assert aggregate_main([str(tmp_path)]) == 1      # smoke runs are excluded by default


def test_aggregate_keeps_recipe_variants_apart():
    """--loss-arg sweeps, zero-centroid weights and tags are separate rows; a
    plain run keeps the recipe name (older configs have no loss_args)."""
    from applications.aggregate import aggregate_runs, run_label
    base = {"dataset": "d", "imbalance_ratio": 100.0, "profile": "exp", "epochs": 6,
            "model": "m", "backend": "jax"}
    assert run_label({**base, "recipe": "ce"}) == "ce"
    assert run_label({**base, "recipe": "lm-softmax-zc", "loss_args": {"scale": 16},
                      "zero_centroid_weight": 0.5, "tag": "sweep"}) == \
        "lm-softmax-zc [scale=16, zc=0.5, sweep]"
    assert run_label({**base, "recipe": "lm-softmax-zc", "zero_centroid_weight": 1.0}) == \
        "lm-softmax-zc"
    report = {"top1": 0.5, "many": 0.6, "medium": 0.4, "few": None, "balanced_accuracy": 0.5}
    runs = [({**base, "recipe": "lm-softmax", "seed": 0, "loss_args": {"scale": s}}, report)
            for s in (5, 16)] + [({**base, "recipe": "ce", "seed": 0}, report)]
    ((table, aggregates),) = aggregate_runs(runs).values()
    assert set(aggregates) == {"ce", "lm-softmax [scale=5]", "lm-softmax [scale=16]"}
    assert list(aggregates)[0] == "ce"
    assert "lm-softmax [scale=16] (n=1)" in table and "lm-softmax [scale=5] (n=1)" in table


def test_aggregate_keeps_the_device_pipeline_and_low_precision_apart(tmp_path):
    """A run on the device pipeline or under mixed precision is its own row, never a
    seed of the standard run; ``--recipes`` keeps only the recipes named."""
    from applications.aggregate import (aggregate_runs, collect_runs, format_tables, main,
                                        run_label)
    base = {"dataset": "d", "imbalance_ratio": 100.0, "profile": "exp", "epochs": 6,
            "model": "m", "backend": "jax", "seed": 0}
    assert run_label({**base, "recipe": "ce", "pipeline": "numpy",
                      "dtype_policy": "float32"}) == "ce"
    assert run_label({**base, "recipe": "ce", "pipeline": "device", "tag": "device"}) == \
        "ce [device]"
    assert run_label({**base, "recipe": "ce", "pipeline": "device",
                      "dtype_policy": "mixed_bfloat16", "tag": "fast"}) == \
        "ce [device, mixed_bfloat16, fast]"
    report = {"top1": 0.5, "many": 0.6, "medium": 0.4, "few": 0.3, "balanced_accuracy": 0.5}
    runs = [({**base, "recipe": "ce", "pipeline": pipeline}, {**report, "top1": top1})
            for pipeline, top1 in (("numpy", 0.5), ("device", 0.52))]
    ((_, aggregates),) = aggregate_runs(runs).values()
    assert aggregates["ce"]["top1"]["mean"] == 0.5
    assert aggregates["ce [device]"]["top1"]["mean"] == 0.52
    # a device-pipeline method is compared with CE on the device pipeline
    runs.append(({**base, "recipe": "ldam-drw", "pipeline": "device"}, {**report, "top1": 0.6}))
    text, _ = format_tables(aggregate_runs(runs))
    assert "ldam-drw [device] +8.0 (vs ce [device])" in text
    for recipe in ("ce", "la"):
        folder = tmp_path / recipe
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({**base, "recipe": recipe}))
        (folder / "report.json").write_text(json.dumps(report))
    assert [c["recipe"] for c, _ in collect_runs(tmp_path, recipes=["la"])] == ["la"]
    output = tmp_path / "table.md"
    assert main([str(tmp_path), "--recipes", "ce", "--output", str(output)]) == 0
    assert "| ce (n=1)" in output.read_text() and "| la " not in output.read_text()


def test_aggregate_sets_cifar10_lt_rows_beside_the_papers():
    """CIFAR-10-LT ratio 100 tables get the published 200-epoch top-1 and gains;
    other settings do not."""
    from applications.aggregate import aggregate_runs, format_tables
    from applications.recipes import PAPER_CIFAR10_LT
    base = {"dataset": "cifar10-lt", "imbalance_ratio": 100.0, "profile": "exp",
            "epochs": 30, "model": "resnet32", "backend": "torch"}

    def report(top1):
        return {"top1": top1, "many": top1, "medium": top1, "few": top1,
                "balanced_accuracy": top1}
    runs = [({**base, "recipe": "ce", "seed": 0}, report(0.60)),
            ({**base, "recipe": "ldam-drw", "seed": 0}, report(0.655)),
            ({**base, "recipe": "focal", "seed": 0}, report(0.61))]
    text, _ = format_tables(aggregate_runs(runs))
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| ") and " % " not in line}
    paper_ldam = PAPER_CIFAR10_LT["ldam-drw"][0]
    assert rows["ldam-drw"][:4] == ["65.5", "+5.5", f"{paper_ldam:.1f}",
                                    f"{paper_ldam - PAPER_CIFAR10_LT['ce'][0]:+.1f}"]
    assert rows["ce"][:4] == ["60.0", "–", "70.4", "–"]
    assert rows["focal"][2:4] == ["–", "–"]
    other = [({**config, "dataset": "fashion-mnist-lt"}, rep) for config, rep in runs]
    assert "Paper top-1" not in format_tables(aggregate_runs(other))[0]
    # --paper-table (the README's): that table alone, nothing for other datasets
    paper_only, _ = format_tables(aggregate_runs(runs + other), paper_only=True)
    assert paper_only.startswith("| Recipe | Top-1 % (30 epochs)") and "Many" not in paper_only
    assert len(paper_only.splitlines()) == 2 + 3
    assert format_tables(aggregate_runs(other), paper_only=True)[0] == ""


def test_train_cli_names_an_unknown_recipe(capsys):
    from applications.train import main
    with pytest.raises(SystemExit) as exit_info:
        main(["--recipe", "ldam-drw", "nope", "--dataset", "digits-lt"])
    assert exit_info.value.code == 2
    assert "Unknown recipe 'nope'; choose from" in capsys.readouterr().err


# ------------------------------------------------------------ protocol, table, entry points

def test_paper_protocol_and_its_rescaled_numbers():
    import dataclasses

    from applications.protocol import PAPER_PROTOCOL, Protocol
    assert PAPER_PROTOCOL == Protocol(epochs=200, warmup_epochs=5, decay_epochs=(160, 180),
                                      decay_factors=(0.01, 0.0001), drw_epoch=160,
                                      ga_epoch=120, ib_epoch=100)
    with pytest.raises(dataclasses.FrozenInstanceError):
        PAPER_PROTOCOL.epochs = 100
    assert PAPER_PROTOCOL.rescaled(200) == PAPER_PROTOCOL
    short = PAPER_PROTOCOL.rescaled(30)
    assert (short.epochs, short.warmup_epochs, short.decay_epochs) == (30, 1, (24, 27))
    assert (short.drw_epoch, short.ga_epoch, short.ib_epoch) == (24, 18, 15)
    assert [short.stage_epoch(s) for s in (None, "drw", "ga", "ib")] == [None, 24, 18, 15]
    with pytest.raises(ValueError, match="stage"):
        short.stage_epoch("nope")
    # Decays on the last epoch are dropped; decays rescaled onto one epoch collapse
    # into the later factor.
    assert PAPER_PROTOCOL.rescaled(2).schedule() == {"warmup_epochs": 0, "decay_epochs": [],
                                                     "decay_factors": []}
    assert PAPER_PROTOCOL.rescaled(6).schedule((0.1, 0.01)) == {
        "warmup_epochs": 0, "decay_epochs": [5], "decay_factors": [0.01]}
    # The recipes' schedules and stage switches are the protocol's, at every length.
    for epochs in (1, 2, 3, 6, 10, 30, 100, 200):
        for name in ("ldam-drw", "kps-ga", "ib-focal"):
            recipe = get_recipe(name)
            rescaled = PAPER_PROTOCOL.rescaled(epochs)
            assert resolve_schedule(recipe, epochs) == rescaled.schedule(recipe.decay_factors)
            assert recipe.stage_epoch(epochs) == rescaled.stage_epoch(recipe.stage)


def _load_loss_zoo():
    import importlib.util
    spec = importlib.util.spec_from_file_location("loss_zoo", REPO / "benchmarks" /
                                                  "loss_zoo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipes_and_benchmarks_read_one_hyperparameter_table():
    from applications.hyperparameters import HYPERPARAMETERS, hyperparameters
    H = HYPERPARAMETERS
    # The papers' values (Cao et al., Kato & Hotta, Kang et al., Li et al., Zhou et al.).
    assert H["ldam"] == {"max_margin": 0.5, "scale": 30.0}
    assert H["elm"] == {"lam": 1.0, "max_margin": 0.5, "scale": 30.0}
    assert H["mm"] == {"delta_neg": 0.6, "beta": 1.5, "scale": 19.0}
    assert H["mm-ldam"] == {"delta_neg": 0.6, "beta": 1.5, "scale": 26.0}
    assert H["kps"] == {"max_margin": 0.5, "scale": 15.0, "n_base": 50}
    assert H["class-balanced"] == {"beta": 0.9999}
    assert hyperparameters("ldam", scale=16.0) == {"max_margin": 0.5, "scale": 16.0}
    assert H["ldam"]["scale"] == 30.0          # overrides never change the table
    with pytest.raises(ValueError, match="Unknown hyper-parameter set"):
        hyperparameters("nope")

    def config(loss, *keys):
        return {key: loss.get_config()[key] for key in keys}

    zoo = _load_loss_zoo().constructors()
    for recipe_name, zoo_name, key in (("ldam", "LDAMLoss", "ldam"),
                                       ("elm-lam1.0", "ELMLoss", "elm"),
                                       ("kps", "KPSLoss", "kps"),
                                       ("lmsce", "LMSCELoss", "lmsce"),
                                       ("focal", "FocalLoss", "focal"),
                                       ("la", "LogitAdjustedLoss", "logit-adjusted")):
        from_recipe = get_recipe(recipe_name).build_loss(CIFAR10_COUNTS)
        from_zoo = zoo[zoo_name][0](CIFAR10_COUNTS)
        assert config(from_recipe, *H[key]) == config(from_zoo, *H[key]) == H[key], key
    mm = get_recipe("mm-ldam-drw").build_loss(CIFAR10_COUNTS)
    assert config(mm, *H["mm-ldam"]) == H["mm-ldam"]
    assert config(get_recipe("mm-drw").build_loss(CIFAR10_COUNTS), *H["mm"]) == H["mm"]
    for name in ("normface", "cosface", "arcface"):
        assert config(get_recipe(name).build_loss(CIFAR10_COUNTS), *H[name]) == H[name]
    assert get_recipe("lm-softmax").build_loss(CIFAR10_COUNTS).scale == \
        H["lm-softmax"]["scale"] == zoo["LMSoftmaxLoss"][0](CIFAR10_COUNTS).scale
    drw = get_recipe("ldam-drw").callbacks(CIFAR10_COUNTS, 200)[0]
    assert drw.beta == H["class-balanced"]["beta"]


ENTRY_POINTS = {   # command -> has --backend
    ("-m", "applications.quickstart"): True,
    ("-m", "applications.train"): True,
    ("-m", "applications.reproduce"): True,
    ("examples/ldam_drw_cifar10_lt.py",): True,
    ("examples/custom_training_loop.py",): True,
    ("examples/backend_comparison.py",): False,   # --backends: runs each one given
}


def _flat(text):
    return " ".join(text.split())


def test_entry_points_share_the_backend_rule_and_data_dir_meaning():
    """Every program states the same backend rule and --data-dir meaning in its
    --help (one helper, applications.cli), and parses the same defaults."""
    from applications import cli, quickstart, reproduce, train
    assert cli.BACKENDS == ("tensorflow", "jax", "torch")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH",
                                                                                 ""))
    for command, has_backend in ENTRY_POINTS.items():
        done = subprocess.run([sys.executable, *command, "--help"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (command, done.stderr[-2000:])
        text = _flat(done.stdout)
        assert "--data-dir" in text and _flat(cli.DATA_DIR_HELP) in text, command
        assert ("--backend " in text and _flat(cli.BACKEND_HELP) in text) == has_backend, \
            command
    # The same defaults: no backend chosen (the rule applies), no data folder given
    # (cli.default_data_dir() applies).
    parsed = [quickstart.parse_args([]), train.build_parser().parse_args([]),
              reproduce.build_parser().parse_args(["--recipes", "ce", "--deadline", "1"])]
    assert [(a.backend, a.data_dir) for a in parsed] == [(None, None)] * 3


def test_backend_rule_and_default_data_dir(monkeypatch, tmp_path):
    from applications import cli
    backend = keras.backend.backend()
    monkeypatch.setenv("KERAS_BACKEND", backend)
    assert cli.use_backend(None) == backend and cli.use_backend(backend) == backend
    other = next(b for b in cli.BACKENDS if b != backend)
    with pytest.raises(SystemExit, match="before keras is imported"):
        cli.use_backend(other)      # Keras is imported here already
    assert os.environ["KERAS_BACKEND"] == backend
    monkeypatch.setenv("KERAS_MARGINS_DATA", str(tmp_path))
    assert cli.default_data_dir() == tmp_path
    monkeypatch.delenv("KERAS_MARGINS_DATA")
    monkeypatch.setenv("KERAS_MARGINS_SHARED", str(tmp_path))
    assert cli.default_data_dir() == tmp_path / "datasets"
    monkeypatch.delenv("KERAS_MARGINS_SHARED")
    assert cli.default_data_dir() == REPO.parent / "shared" / "datasets"
