"""Test configuration: run once per backend with KERAS_BACKEND=tensorflow|jax|torch.

torch is imported before TensorFlow (importing them the other way round can
crash on some builds). Tests that read ../shared/datasets are skipped only
when that folder is absent, and never in CI (CI=true), where it must exist.

The tests mirror the package (tests/losses/, tests/data/, tests/test_<module>.py);
this folder is put on ``sys.path`` so every test module, at any depth, imports
the shared helpers as ``from backend_utils import ...``.
"""

import os
import sys

try:  # must precede any TensorFlow import
    import torch  # noqa: F401
except ImportError:
    pass

import json
import pathlib

import pytest

TESTS_DIR = pathlib.Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("KERAS_MARGINS_SHARED", REPO_ROOT.parent / "shared"))


def pytest_report_header(config):
    import keras
    return f"keras {keras.__version__}, backend {keras.backend.backend()}, shared={SHARED}"


def _require(path, what):
    if path.exists():
        return path
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} missing at {path}: CI must have ../shared beside the checkout.")
    pytest.skip(f"{what} not found at {path} (needs ../shared beside the checkout)")


@pytest.fixture(scope="session")
def reference():
    """The authors' code evaluated on fixed inputs (../shared/reference)."""
    path = _require(SHARED / "reference" / "reference_values.json", "reference values")
    with open(path) as handle:
        return json.load(handle)


@pytest.fixture(scope="session")
def datasets_dir():
    """../shared/datasets (real CIFAR-10 JPEG, Fashion-MNIST IDX, LT split files)."""
    return _require(SHARED / "datasets", "shared datasets")


def _read_idx(path):
    import gzip

    import numpy as np
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@pytest.fixture(scope="session")
def fashion_mnist_lt_small(datasets_dir):
    """A small real long-tailed Fashion-MNIST subset for quick `fit` tests.

    Returns ``(x, y, counts)``: x float32 (N, 28, 28, 1) in [0, 1], int32
    labels, per-class counts 200 * 0.1^(j/9) (exponential, ratio 10), the
    first images of each class in file order (deterministic).
    """
    import numpy as np
    folder = datasets_dir / "fashion-mnist"
    images = _read_idx(folder / "train-images-idx3-ubyte.gz")
    labels = _read_idx(folder / "train-labels-idx1-ubyte.gz").astype(np.int32)
    counts = [int(200 * 0.1 ** (j / 9)) for j in range(10)]
    index = np.concatenate([np.flatnonzero(labels == c)[:n] for c, n in enumerate(counts)])
    x = images[index].astype("float32")[..., None] / 255.0
    return x, labels[index], counts
