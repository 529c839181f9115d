"""tools/gpu_speed.sh and tools/gpu_reproduce.sh end to end in their smoke modes.

Both run where importing TensorFlow fails (as on the GPU machines, which have
JAX and PyTorch but no TensorFlow), with Keras already importable (the wheel
install of tools/gpu_setup.sh is skipped then). They start JAX and PyTorch
subprocesses whatever the suite's backend, so they run once, in the JAX leg.
"""

import json
import os
import pathlib
import subprocess
import sys
import tarfile

import keras
from backend_utils import without_tensorflow

REPO = pathlib.Path(__file__).resolve().parents[1]

BACKEND = keras.backend.backend()


def _environment(tmp_path, **settings):
    env = dict(os.environ, PYTHON=sys.executable, SMOKE="1", **settings)
    env["PATH"] = os.pathsep.join([str(pathlib.Path(sys.executable).parent), env["PATH"]])
    env.pop("KERAS_BACKEND", None)  # the scripts choose it (keras' default needs TensorFlow)
    return without_tensorflow(env, tmp_path / "blocked")


def _run(script, env):
    result = subprocess.run(["bash", str(REPO / "tools" / script)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout


if BACKEND == "jax":  # once per suite: the scripts start their own processes
    def test_gpu_speed_script_measures_trains_the_fast_path_and_packs_one_archive(
            tmp_path, datasets_dir):
        results, out = tmp_path / "speed" / "gpu-speed", tmp_path / "out"
        env = _environment(tmp_path, RESULTS=str(results), OUT=str(out), STEPS="1 3",
                           DATA_DIR=str(datasets_dir))
        stdout = _run("gpu_speed.sh", env)

        for name in ("jax", "torch"):  # one report per backend, each naming its device
            report = json.loads((results / f"loss_overhead_gpu_{name}.json").read_text())
            (backend,) = report["backends"]
            assert backend["backend"] == name
            assert backend["device"] in ("cpu:0", "cpu", "gpu:0", "cuda:0")
            assert {r["loss"] for r in backend["results"]} == {"CrossEntropy", "LDAMLoss",
                                                              "FocalLoss"}
        (summary_path,) = results.glob("train/*/ce/seed0/summary.json")
        summary = json.loads(summary_path.read_text())
        config = json.loads((summary_path.parent / "config.json").read_text())
        assert summary["train_seconds"] > 0 and 0 <= summary["top1"] <= 1
        assert (config["pipeline"], config["dtype_policy"], config["steps_per_execution"],
                config["backend"]) == ("device", "mixed_bfloat16", 8, "jax")
        assert "tensorflow" not in (results / "logs" / "train.log").read_text().lower()

        with tarfile.open(out / "speed-results.tar.gz") as archive:
            names = set(archive.getnames())
        assert {"gpu-speed/loss_overhead_gpu_torch.json", "gpu-speed/logs/train.log",
                f"gpu-speed/{summary_path.relative_to(results.parent).relative_to('gpu-speed')}"
                } <= names
        assert "| LDAMLoss |" in stdout and '"train_seconds"' in stdout
        assert "train_step" not in stdout  # only the steps asked for


    def test_gpu_speed_script_skips_the_steps_its_budget_leaves_no_time_for(tmp_path):
        results = tmp_path / "r"
        env = _environment(tmp_path, RESULTS=str(results), OUT=str(tmp_path / "o"),
                           STEPS="3 1", BUDGET="25")
        stdout = _run("gpu_speed.sh", env)
        assert "train: skipped" in stdout and "loss_overhead_jax: skipped" in stdout
        assert not list(results.glob("*.json"))
        assert (tmp_path / "o" / "speed-results.tar.gz").exists()

    def test_gpu_speed_script_rejects_an_unknown_step(tmp_path):
        env = _environment(tmp_path, RESULTS=str(tmp_path / "r"), OUT=str(tmp_path / "o"),
                           STEPS="5")
        result = subprocess.run(["bash", str(REPO / "tools" / "gpu_speed.sh")], cwd=REPO,
                                env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and "unknown step 5" in result.stderr


    def test_gpu_reproduce_script_runs_the_launcher_and_packs_one_archive(tmp_path):
        results, out = tmp_path / "repro" / "gpu", tmp_path / "out"
        env = _environment(tmp_path, RESULTS=str(results), OUT=str(out), RECIPES="ce",
                           SEEDS="0", PARALLEL="1", DATASET="digits-lt", BACKEND="jax",
                           BUDGET="300", TRAIN_ARGS="--pipeline numpy")
        stdout = _run("gpu_reproduce.sh", env)
        report = json.loads((results / "reproduce.json").read_text())
        assert report["counts"]["finished"] == 1
        assert "| ce (n=1) " in stdout
        with tarfile.open(out / "reproduce-results.tar.gz") as archive:
            assert "gpu/reproduce.json" in archive.getnames()
