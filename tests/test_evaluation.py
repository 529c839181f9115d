"""evaluate_long_tailed on a real trained model vs numpy; known answers; bad input."""

import json
import math

import keras
import numpy as np
import pytest

import keras_margins as km
from backend_utils import small_model, to_numpy
from keras_margins.callbacks import ClassMarginLogger
from keras_margins.margins import class_margin
from keras_margins.metrics import (BalancedAccuracy, ExpectedCalibrationError,
                                   PerClassAccuracy, ShotGroupAccuracy)


@pytest.fixture(scope="module")
def trained(fashion_mnist_lt_small):
    """small_model (CosineDense head) trained a few steps on real long-tailed data."""
    x, y, counts = fashion_mnist_lt_small
    model = small_model(num_classes=10)
    loss = km.losses.LDAMLoss(counts, scale=10.0)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss=loss)
    logger = ClassMarginLogger()
    history = model.fit(x, y, epochs=2, batch_size=64, verbose=0, callbacks=[logger])
    outputs = to_numpy(model.predict(x, batch_size=256, verbose=0)).astype("float64")
    return model, x, y, counts, outputs, history, logger


def numpy_reference(outputs, labels, counts, kernel, logit_scale, num_bins=15):
    num_classes = outputs.shape[1]
    predicted = outputs.argmax(1)
    per_class = np.array([np.mean(predicted[labels == c] == c) for c in range(num_classes)])
    counts = np.asarray(counts)
    rank = (outputs > outputs[np.arange(len(labels)), labels][:, None]).sum(1)
    scaled = outputs * logit_scale
    probabilities = np.exp(scaled - scaled.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    confidence = probabilities.max(1)
    correct = predicted == labels
    ece = 0.0
    for b in range(num_bins):
        in_bin = (confidence > b / num_bins) & (confidence <= (b + 1) / num_bins)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    unit = kernel / np.linalg.norm(kernel, axis=0)
    gram = unit.T @ unit
    margin = np.degrees(np.arccos(gram[~np.eye(num_classes, dtype=bool)].max()))
    others = outputs.copy()
    others[np.arange(len(labels)), labels] = -np.inf
    sample = outputs[np.arange(len(labels)), labels] - others.max(1)
    return {
        "top1": np.mean(correct), "top3": np.mean(rank < 3), "top5": np.mean(rank < 5),
        "per_class_accuracy": per_class,
        "many": per_class[counts > 100].mean(),
        "medium": per_class[(counts >= 20) & (counts <= 100)].mean(),
        "balanced_accuracy": per_class.mean(), "ece": ece, "class_margin": margin,
        "sample_min": [sample[labels == c].min() for c in range(num_classes)],
        "sample_mean": [sample[labels == c].mean() for c in range(num_classes)],
    }


def assert_matches_reference(result, reference):
    for key in ("top1", "top3", "top5", "many", "medium", "balanced_accuracy"):
        np.testing.assert_allclose(result[key], reference[key], rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(result["ece"], reference["ece"], atol=2e-5)
    np.testing.assert_allclose(result["per_class_accuracy"], reference["per_class_accuracy"],
                               rtol=1e-5)
    np.testing.assert_allclose(result["class_margin"], reference["class_margin"], atol=1e-3)
    np.testing.assert_allclose(result["sample_margin"]["per_class_min"],
                               reference["sample_min"], atol=1e-5)
    np.testing.assert_allclose(result["sample_margin"]["per_class_mean"],
                               reference["sample_mean"], atol=1e-5)


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["arrays", "tf_data", "py_dataset"])
def test_evaluate_long_tailed_matches_numpy(trained, kind):
    model, x, y, counts, outputs = trained[:5]
    if kind == "arrays":
        dataset = (x, y)
    elif kind == "tf_data":
        import tensorflow as tf
        dataset = tf.data.Dataset.from_tensor_slices((x, np.eye(10, dtype="float32")[y]))
        dataset = dataset.batch(300)  # one-hot labels, a ragged last batch
    else:
        class Batches(keras.utils.PyDataset):
            def __len__(self):
                return math.ceil(len(x) / 200)

            def __getitem__(self, index):
                part = slice(200 * index, 200 * (index + 1))
                return x[part], y[part].reshape(-1, 1)
        dataset = Batches()
    result = km.evaluate_long_tailed(model, dataset, counts, batch_size=256)
    kernel = to_numpy(model.layers[-1].kernel).astype("float64")
    reference = numpy_reference(outputs, y, counts, kernel, logit_scale=10.0)
    assert_matches_reference(result, reference)
    assert result["ece_logit_scale"] == 10.0  # taken from the compiled LDAM loss
    assert result["num_samples"] == len(y) and result["per_class_support"] == \
        np.bincount(y).tolist()
    # Counts 200 ... 20: no class has fewer than 20 images, so "few" is undefined.
    assert result["groups"]["few"] == [] and result["few"] is None
    assert result["group_descriptions"]["few"] == {
        "rule": "fewer than 20 training images", "num_classes": 0,
        "reason": "no class has fewer than 20 training images"}
    assert result["group_descriptions"]["many"]["reason"] is None
    text = json.dumps(result, allow_nan=False)  # plain JSON, no NaN
    assert json.loads(text)["few"] is None


@pytest.mark.real_data
@pytest.mark.slow
def test_compiled_metrics_match_numpy_on_real_model(trained):
    model, x, y, counts, outputs = trained[:5]
    metrics = [PerClassAccuracy(10), BalancedAccuracy(10), ShotGroupAccuracy(counts, "many"),
               ShotGroupAccuracy(counts, "medium"),
               ExpectedCalibrationError(logit_scale=10.0),
               keras.metrics.SparseTopKCategoricalAccuracy(k=5)]
    model.compile(loss=model.loss, metrics=metrics)
    results = model.evaluate(x, y, batch_size=128, verbose=0, return_dict=True)
    kernel = to_numpy(model.layers[-1].kernel).astype("float64")
    reference = numpy_reference(outputs, y, counts, kernel, logit_scale=10.0)
    np.testing.assert_allclose(results["per_class_accuracy"], reference["balanced_accuracy"],
                               rtol=1e-5)
    np.testing.assert_allclose(results["balanced_accuracy"], reference["balanced_accuracy"],
                               rtol=1e-5)
    np.testing.assert_allclose(results["many_shot_accuracy"], reference["many"], rtol=1e-5)
    np.testing.assert_allclose(results["medium_shot_accuracy"], reference["medium"], rtol=1e-5)
    np.testing.assert_allclose(results["ece"], reference["ece"], atol=2e-5)
    np.testing.assert_allclose(results["sparse_top_k_categorical_accuracy"], reference["top5"],
                               rtol=1e-5)
    np.testing.assert_allclose(to_numpy(metrics[0].per_class_result()),
                               reference["per_class_accuracy"], rtol=1e-5)
    # A label out of range: an error in eager mode (torch), NaN under jit (TF, JAX).
    bad = y.copy()
    bad[40] = 10
    try:
        results = model.evaluate(x, bad, batch_size=128, verbose=0, return_dict=True)
    except ValueError as error:
        assert "outside" in str(error)
    else:
        for name in ("per_class_accuracy", "balanced_accuracy", "many_shot_accuracy",
                     "medium_shot_accuracy", "ece"):
            assert math.isnan(results[name]), (name, results[name])


@pytest.mark.real_data
@pytest.mark.slow
def test_class_margin_logger_during_fit(trained):
    model, history, logger = trained[0], trained[5], trained[6]
    margins = history.history["class_margin"]
    assert len(margins) == 2 and margins == logger.margins
    assert margins[0] != margins[1]  # the prototypes moved during training
    assert 0.0 < margins[-1] < 180.0
    # The fixture's model is not trained further by any test.
    np.testing.assert_allclose(margins[-1], class_margin(model.layers[-1]), rtol=1e-9)


class FixedOutputs(keras.Model):
    """A model whose outputs are the inputs (hand-built logits)."""

    def call(self, inputs):
        return inputs


def _assert_same_report(got, want, path="report"):
    if isinstance(want, dict):
        assert set(got) == set(want), path
        for key in want:
            _assert_same_report(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_same_report(g, w, f"{path}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6), path
    else:
        assert got == want, path


@pytest.mark.real_data
def test_evaluate_predictions_equals_evaluate_long_tailed(trained):
    """Precomputed outputs (one forward pass) give evaluate_long_tailed's dict."""
    from keras_margins.evaluation import default_logit_scale, evaluate_predictions
    from keras_margins.margins import find_cosine_head
    model, x, y, counts = trained[:4]
    want = km.evaluate_long_tailed(model, (x, y), counts, return_per_sample=True)
    outputs = to_numpy(model.predict(x, batch_size=256, verbose=0))
    assert default_logit_scale(model) == 10.0
    got = evaluate_predictions(outputs, y, counts, kernel=find_cosine_head(model),
                               logit_scale=default_logit_scale(model),
                               return_per_sample=True)
    _assert_same_report(got, want)
    assert got["class_margin"] is not None
    one_hot = evaluate_predictions(outputs, np.eye(10)[y], counts, logit_scale=10.0)
    assert one_hot["class_margin"] is None and one_hot["top1"] == pytest.approx(got["top1"])
    with pytest.raises(ValueError, match="samples"):
        evaluate_predictions(outputs, y[:-1], counts)
    with pytest.raises(ValueError, match="num_classes"):
        evaluate_predictions(outputs[:, 0], y, counts)


def test_known_answers_plain_head_and_top_k_limit():
    counts = [150, 120, 50, 30, 10, 5]
    labels = np.array([0, 0, 1, 2, 2, 2, 2, 3, 4, 4, 4, 5])
    predicted = np.array([0, 1, 1, 2, 2, 0, 0, 3, 4, 0, 1, 0])
    logits = np.full((12, 6), -1.0, dtype="float32")
    logits[np.arange(12), predicted] = 2.0
    result = km.evaluate_long_tailed(FixedOutputs(), (logits, labels), counts, batch_size=5,
                                     top_k=(3, 10))
    np.testing.assert_allclose(result["per_class_accuracy"], [0.5, 1, 0.5, 1, 1 / 3, 0])
    np.testing.assert_allclose([result["many"], result["medium"], result["few"]],
                               [0.75, 0.75, 1 / 6])
    np.testing.assert_allclose(result["top1"], 6 / 12)
    assert "top10" not in result  # k > number of classes: left out
    assert result["class_margin"] is None  # no CosineDense head
    np.testing.assert_allclose(result["sample_margin"]["min"], -3.0)
    assert result["thresholds"] == {"many": 100, "few": 20}
    assert result["group_descriptions"] == {
        "many": {"rule": "more than 100 training images", "num_classes": 2, "reason": None},
        "medium": {"rule": "20 to 100 training images", "num_classes": 2, "reason": None},
        "few": {"rule": "fewer than 20 training images", "num_classes": 2, "reason": None}}


def test_known_answers_top_k_ece_and_undefined_groups():
    """NumPy report vs hand-computed top-k (ties count), ECE and group reasons."""
    counts = [150, 120, 50, 30]  # many 0, 1; medium 2, 3; few: none
    logits = np.array([[2.0, 1.0, 0.0, -1.0],    # label 0: top-1
                       [1.0, 1.0, 0.0, 0.0],     # label 1: tied first: not top-1, top-3
                       [3.0, 2.0, 1.0, 0.0],     # label 3: rank 4
                       [0.0, 1.0, 2.0, 3.0]], dtype="float32")  # label 0: rank 4
    labels = np.array([0, 1, 3, 0])
    result = km.evaluation.evaluate_predictions(logits, labels, counts, top_k=(2, 3),
                                                logit_scale=2.0, num_bins=10)
    assert result["top1"] == 0.25 and result["top2"] == 0.5 and result["top3"] == 0.5
    assert result["per_class_accuracy"] == [0.5, 0.0, None, 0.0]
    assert result["many"] == 0.25 and result["medium"] == 0.0 and result["few"] is None
    scaled = 2.0 * logits.astype("float64")
    probabilities = np.exp(scaled) / np.exp(scaled).sum(1, keepdims=True)
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == labels
    expected = sum(abs(correct[in_bin].sum() - confidence[in_bin].sum())
                   for in_bin in [(confidence > b / 10) & (confidence <= (b + 1) / 10)
                                  for b in range(10)]) / 4
    assert result["ece"] == pytest.approx(expected, abs=1e-12)
    assert result["group_descriptions"]["few"]["reason"] == \
        "no class has fewer than 20 training images"
    # Medium classes 2 and 3 with no test samples: defined group, undefined value.
    only_many = km.evaluation.evaluate_predictions(logits[:2], labels[:2], counts)
    assert only_many["medium"] is None
    assert only_many["group_descriptions"]["medium"]["reason"] == \
        "none of its 2 classes has test samples"
    probabilities = km.evaluation.evaluate_predictions(probabilities, labels, counts,
                                                       from_logits=False, num_bins=10)
    assert probabilities["ece"] == pytest.approx(expected, abs=1e-7)  # float32 outputs
    with pytest.raises(ValueError, match="probabilities"):
        km.evaluation.evaluate_predictions(logits, labels, counts, from_logits=False)
    with pytest.raises(ValueError, match="logit_scale"):
        km.evaluation.evaluate_predictions(logits, labels, counts, logit_scale=0.0)


def test_bad_input_raises():
    logits = np.zeros((4, 3), dtype="float32")
    model = FixedOutputs()
    with pytest.raises(ValueError, match="3 classes"):
        km.evaluate_long_tailed(model, (logits, np.array([0, 1, 2, 0])), [100, 50, 10, 5])
    with pytest.raises(ValueError, match="outside"):
        km.evaluate_long_tailed(model, (logits, np.array([0, 1, 3, 0])), [100, 50, 10])
    with pytest.raises(ValueError, match="no batches"):
        km.evaluate_long_tailed(model, [], [100, 50, 10])
    with pytest.raises(ValueError, match="without labels"):
        km.evaluate_long_tailed(model, [logits], [100, 50, 10])
    with pytest.raises(ValueError, match="samples"):
        km.evaluate_long_tailed(model, (logits, np.array([0, 1])), [100, 50, 10])
