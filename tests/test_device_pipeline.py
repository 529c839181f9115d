"""applications: the device pipeline (cifar10-lt arrays fed whole, crops and flips
inside the compiled step) on real CIFAR-10 data, a few steps."""

import json
import pathlib
import sys

import keras
import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # applications/ lives beside keras_margins/, not installed
    sys.path.insert(0, str(REPO))

from applications.data import load_dataset  # noqa: E402
from applications.train import main  # noqa: E402
from keras_margins.data import RandomPadCropFlip  # noqa: E402


def test_device_arrays_are_the_host_pipelines_images(datasets_dir):
    """Same subset and labels as the NumPy pipeline; normalised like its test images."""
    device = load_dataset("cifar10-lt", datasets_dir, batch_size=64, max_per_class=4,
                          train_fraction=0.025, pipeline="device")
    host = load_dataset("cifar10-lt", datasets_dir, batch_size=64, max_per_class=4,
                        train_fraction=0.025, pipeline="numpy")
    x, y = device.train
    assert x.dtype == np.float32 and x.shape[1:] == (32, 32, 3)
    assert np.bincount(y, minlength=10).tolist() == device.class_counts == host.class_counts
    np.testing.assert_array_equal(np.sort(y), np.sort(host.train.labels))
    # The host pipeline at inference (no augmentation) normalises the same way.
    images, _ = next(iter(device.test_batches()))
    host_images, _ = next(iter(host.test_batches()))
    np.testing.assert_allclose(images, host_images, atol=1e-6)
    fill = np.asarray(device.details["fill_value"])
    assert np.all(fill < 0)                          # black in normalised units
    assert np.isclose(x.min(), fill.min(), atol=1e-5)
    cut_x, cut_y = device.train_batches(2)
    assert len(cut_y) == 128 and len(set(cut_y.tolist())) > 1   # not one class
    assert device.steps((cut_x, cut_y)) == 2
    with pytest.raises(ValueError, match='pipeline="device" is for cifar10-lt'):
        load_dataset("fashion-mnist-lt", datasets_dir, pipeline="device")


def test_train_with_the_device_pipeline_bfloat16_and_steps_per_execution(datasets_dir,
                                                                          tmp_path):
    torch = keras.backend.backend() == "torch"
    steps = "1" if torch else "2"   # Keras' torch trainer runs one step per call
    argv = ["--dataset", "cifar10-lt", "--data-dir", str(datasets_dir), "--smoke",
            "--pipeline", "device", "--recipe", "ldam-drw", "--no-validation", "--no-plots",
            "--embedding", "none", "--verbose", "0", "--max-steps", "2",
            "--dtype-policy", "mixed_bfloat16", "--steps-per-execution", steps,
            "--results-dir", str(tmp_path), "--backend", keras.backend.backend()]
    if torch:
        with pytest.raises(ValueError, match="--steps-per-execution 2: Keras' PyTorch"):
            main(argv[:-6] + ["--steps-per-execution", "2"] + argv[-4:])
    try:
        assert main(argv) == 0
    finally:
        keras.config.set_dtype_policy("float32")
    folder = tmp_path / "cifar10-lt-exp100-e2-smoke" / "ldam-drw" / "seed0"
    config = json.loads((folder / "config.json").read_text())
    assert config["pipeline"] == "device" and config["dtype_policy"] == "mixed_bfloat16"
    assert config["steps_per_execution"] == int(steps) and config["steps_per_epoch"] == 2
    model = keras.saving.load_model(folder / "model.keras", compile=False)
    assert isinstance(model.get_layer("device_augment"), RandomPadCropFlip)
    history = json.loads((folder / "history.json").read_text())
    assert np.all(np.isfinite(history["loss"]))
    report = json.loads((folder / "report.json").read_text())
    assert 0.0 <= report["top1"] <= 1.0
