"""applications: the SAM, VS, LADE and two-stage recipes (cRT, tau-norm, LWS,
weight balancing, MiSLAS, CC-SAM) on the offline digits-lt data, a few steps each."""

import json
import pathlib
import sys

import keras
import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # applications/ lives beside keras_margins/, not installed
    sys.path.insert(0, str(REPO))

from applications.hyperparameters import HYPERPARAMETERS  # noqa: E402
from applications.recipes import (RECIPES, MixedLabelAccuracy,  # noqa: E402
                                  MixedLabelCrossentropy, get_recipe)
from applications.train import main  # noqa: E402
from backend_utils import to_numpy  # noqa: E402
from keras_margins.layers import CosineDense  # noqa: E402
from keras_margins.sam import SAMModel  # noqa: E402

NEW = ("ldam-drw-sam", "kps-ga-sam", "vs", "lade", "crt", "tau-norm", "lws",
       "weight-balancing", "mislas", "cc-sam")


def _train(tmp_path, recipes, *extra):
    argv = ["--dataset", "digits-lt", "--smoke", "--recipe", *recipes, "--no-validation",
            "--no-plots", "--embedding", "none", "--verbose", "0", "--max-steps", "2",
            "--results-dir", str(tmp_path), "--backend", keras.backend.backend(), *extra]
    assert main(argv) == 0


def _folder(tmp_path, recipe):
    return tmp_path / "digits-lt-exp10-e2-smoke" / recipe / "seed0"


def _weights(model, skip):
    """Weights of every layer but those named in ``skip``, by layer name."""
    return {layer.name: [np.asarray(w) for w in layer.get_weights()]
            for layer in model.layers if layer.name not in skip and layer.get_weights()}


def test_the_new_recipes_exist_with_their_settings():
    assert set(NEW) <= set(RECIPES)
    rho = HYPERPARAMETERS["sam"]["rho"]
    assert get_recipe("ldam-drw-sam").sam_rho == get_recipe("kps-ga-sam").sam_rho == rho
    assert get_recipe("ldam-drw-sam").stage == "drw" and get_recipe("kps-ga-sam").stage == "ga"
    for name in ("crt", "tau-norm", "lws", "weight-balancing", "mislas"):
        assert get_recipe(name).second_stage == name and get_recipe(name).head == "dense"
    assert get_recipe("weight-balancing").weight_decay == \
        HYPERPARAMETERS["weight-balancing"]["weight_decay"]
    assert get_recipe("mislas").mixup_alpha == HYPERPARAMETERS["mislas"]["mixup_alpha"]
    cc_sam = get_recipe("cc-sam")
    assert cc_sam.cc_sam and cc_sam.second_stage == "cc-sam" and cc_sam.head == "dense"
    assert cc_sam.mixup_alpha == HYPERPARAMETERS["cc-sam"]["mixup_alpha"]


def test_mixed_label_crossentropy_and_accuracy():
    rng = np.random.RandomState(0)
    logits = rng.randn(6, 4).astype("float32")
    ids = np.array([0, 1, 2, 3, 1, 0])
    loss = MixedLabelCrossentropy()
    sparse = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    np.testing.assert_allclose(to_numpy(loss(ids, logits)), to_numpy(sparse(ids, logits)),
                               rtol=1e-6)
    lam = 0.7
    soft = lam * np.eye(4)[ids] + (1 - lam) * np.eye(4)[ids[::-1]]
    expected = lam * to_numpy(sparse(ids, logits)) + (1 - lam) * to_numpy(
        sparse(ids[::-1], logits))
    np.testing.assert_allclose(to_numpy(loss(soft.astype("float32"), logits)), expected,
                               rtol=1e-5)
    metric = MixedLabelAccuracy()
    metric.update_state(soft.astype("float32"), logits)
    hits = np.mean(np.argmax(logits, -1) == ids)
    np.testing.assert_allclose(float(to_numpy(metric.result())), hits, rtol=1e-6)
    assert isinstance(keras.losses.deserialize(keras.losses.serialize(loss)),
                      MixedLabelCrossentropy)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One in-process CLI call for most recipes (a few steps each), then cRT on the
    ce run's model (--stage1-from)."""
    root = tmp_path_factory.mktemp("runs")
    _train(root, ["ce", "ldam-drw-sam", "tau-norm", "lws", "weight-balancing", "mislas",
                  "cc-sam"])
    _train(root, ["crt"], "--stage1-from", str(_folder(root, "ce")))
    _train(root / "from-ce", ["cc-sam"], "--stage1-from", str(_folder(root, "ce")))
    return root


def test_sam_recipe_trains_a_sam_model(runs):
    folder = _folder(runs, "ldam-drw-sam")
    config = json.loads((folder / "config.json").read_text())
    assert config["sam_rho"] == HYPERPARAMETERS["sam"]["rho"] and config["stage"] == "drw"
    model = keras.saving.load_model(folder / "model.keras", compile=False)
    assert isinstance(model, SAMModel) and model.rho == HYPERPARAMETERS["sam"]["rho"]
    assert isinstance(model.get_layer("logits"), CosineDense)


def test_sam_rho_option_gets_a_folder_of_its_own():
    from applications.train import _run_folder, build_parser
    args = build_parser().parse_args(["--recipe", "ldam-drw-sam", "--sam-rho", "0",
                                      "--epochs", "30"])
    args.imbalance_ratio = 100.0
    data = type("Data", (), {"name": "cifar10-lt"})()
    assert _run_folder(args, data, "ldam-drw-sam", 0).parts[-2] == "ldam-drw-sam-rho0"
    args.sam_rho = None
    assert _run_folder(args, data, "ldam-drw-sam", 0).parts[-2] == "ldam-drw-sam"


def test_crt_from_a_ce_run_retrains_only_the_head(runs):
    """--stage1-from reuses a ce run: the backbone is bit-identical, the head is new."""
    ce = keras.saving.load_model(_folder(runs, "ce") / "model.keras", compile=False)
    folder = _folder(runs, "crt")
    crt = keras.saving.load_model(folder / "model.keras", compile=False)
    before, after = _weights(ce, ()), _weights(crt, ())
    assert before.keys() == after.keys()
    for name in before:
        same = all(np.array_equal(a, b) for a, b in zip(before[name], after[name]))
        assert same == (name != "logits"), name
    config = json.loads((folder / "config.json").read_text())
    assert config["stage1_from"] == str(_folder(runs, "ce"))
    assert (folder / "history.json").read_text() == \
        (_folder(runs, "ce") / "history.json").read_text()
    assert config["second_stage_details"]["sampler"] == "class_balanced"
    report = json.loads((folder / "report.json").read_text())
    assert 0.0 <= report["top1"] <= 1.0


def test_stage1_from_refuses_a_single_stage_recipe_and_a_missing_model(tmp_path):
    with pytest.raises(ValueError, match="--stage1-from needs a two-stage recipe"):
        _train(tmp_path, ["ce"], "--stage1-from", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="missing .*model.keras"):
        _train(tmp_path, ["tau-norm"], "--stage1-from", str(tmp_path))


def test_tau_norm_lws_weight_balancing_and_mislas(runs):
    tau = keras.saving.load_model(_folder(runs, "tau-norm") / "model.keras",
                                  compile=False).get_layer("logits")
    np.testing.assert_allclose(np.linalg.norm(np.asarray(tau.kernel), axis=0), 1.0,
                               rtol=1e-5)                 # tau = 1: unit class norms
    assert not np.any(np.asarray(tau.bias))                # bias dropped
    lws = keras.saving.load_model(_folder(runs, "lws") / "model.keras", compile=False)
    assert lws.layers[-1].name == "logits_lws"
    report = json.loads((_folder(runs, "lws") / "report.json").read_text())
    assert 0.0 <= report["top1"] <= 1.0
    wb_folder = _folder(runs, "weight-balancing")
    wb = keras.saving.load_model(wb_folder / "model.keras", compile=False).get_layer("logits")
    cap = HYPERPARAMETERS["weight-balancing"]["max_norm"]
    assert np.all(np.linalg.norm(np.asarray(wb.kernel), axis=0) <= cap * (1 + 1e-5))
    assert json.loads((wb_folder / "config.json").read_text())["weight_decay"] == \
        HYPERPARAMETERS["weight-balancing"]["weight_decay"]
    mislas = json.loads((_folder(runs, "mislas") / "config.json").read_text())
    assert mislas["mixup_alpha"] == HYPERPARAMETERS["mislas"]["mixup_alpha"]
    assert mislas["second_stage_details"]["train_batch_norm"] is True
    assert mislas["loss"]["class_name"] == "MixedLabelCrossentropy"


def test_cc_sam_trains_through_its_wrapper_then_the_head_alone(runs):
    """Stage 1 trains the network's layers through CCSAMModel (the saved model is
    the plain network); stage 2 changes the head only (from a ce run's model)."""
    folder = _folder(runs, "cc-sam")
    config = json.loads((folder / "config.json").read_text())
    assert config["cc_sam"] == HYPERPARAMETERS["cc-sam"]
    assert config["mixup_alpha"] == HYPERPARAMETERS["cc-sam"]["mixup_alpha"]
    details = config["second_stage_details"]
    assert details["sampler"] == "class_balanced"
    assert details["feature_radius"] == HYPERPARAMETERS["cc-sam"]["feature_radius"]
    model = keras.saving.load_model(folder / "model.keras", compile=False)
    assert isinstance(model.get_layer("logits"), keras.layers.Dense)
    assert 0.0 <= json.loads((folder / "report.json").read_text())["top1"] <= 1.0
    ce = keras.saving.load_model(_folder(runs, "ce") / "model.keras", compile=False)
    second = keras.saving.load_model(_folder(runs / "from-ce", "cc-sam") / "model.keras",
                                     compile=False)
    before, after = _weights(ce, ()), _weights(second, ())
    assert before.keys() == after.keys()
    for name in before:
        same = all(np.array_equal(a, b) for a, b in zip(before[name], after[name]))
        assert same == (name != "logits"), name
