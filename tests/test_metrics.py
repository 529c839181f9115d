"""Metrics and shot groups: known answers, label formats, state, bad input, jit."""

import math

import keras
import numpy as np
import pytest

from backend_utils import to_numpy
from keras_margins.groups import empty_group_reason, shot_group_rules, shot_groups
from keras_margins.metrics import (BalancedAccuracy, ExpectedCalibrationError,
                                   PerClassAccuracy, ShotGroupAccuracy)

# Hand-built predictions: 3 classes, predicted = argmax.
LABELS = np.array([0, 0, 1, 1, 1, 2])
PREDICTED = np.array([0, 1, 1, 1, 0, 2])
PER_CLASS = np.array([0.5, 2 / 3, 1.0])


def scores_for(predicted, num_classes, cosine=False, seed=0):
    """Scores whose argmax is ``predicted`` (cosines in [-1, 1] or wide logits)."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(-0.9, 0.3, size=(len(predicted), num_classes))
    scores[np.arange(len(predicted)), predicted] = 0.9
    return (scores if cosine else scores * 7.0).astype("float32")


def label_formats(labels, num_classes):
    labels = np.asarray(labels)
    return {"sparse": labels.astype("int32"), "column": labels.reshape(-1, 1).astype("int64"),
            "one_hot": np.eye(num_classes, dtype="float32")[labels],
            "float_sparse": labels.astype("float32")}


def value(metric):
    return float(to_numpy(metric.result()))


@pytest.mark.parametrize("fmt", ["sparse", "column", "one_hot", "float_sparse"])
@pytest.mark.parametrize("cosine", [False, True])
def test_per_class_accuracy_hand_built(fmt, cosine):
    scores = scores_for(PREDICTED, 3, cosine)
    labels = label_formats(LABELS, 3)[fmt]
    metric = PerClassAccuracy(3)
    # Class 2 is absent from the first batch, classes 0 and 1 from the second.
    metric.update_state(labels[:5], scores[:5])
    np.testing.assert_allclose(to_numpy(metric.per_class_result())[:2], PER_CLASS[:2],
                               rtol=1e-6)
    assert np.isnan(to_numpy(metric.per_class_result())[2])  # no samples yet: undefined
    np.testing.assert_allclose(value(metric), np.mean(PER_CLASS[:2]), rtol=1e-6)
    metric.update_state(labels[5:], scores[5:])
    np.testing.assert_allclose(to_numpy(metric.per_class_result()), PER_CLASS, rtol=1e-6)
    np.testing.assert_allclose(to_numpy(metric.per_class_support()), [2, 3, 1])
    np.testing.assert_allclose(value(metric), np.mean(PER_CLASS), rtol=1e-6)


def test_balanced_accuracy_matches_sklearn_and_skips_absent_classes():
    from sklearn.metrics import balanced_accuracy_score
    rng = np.random.default_rng(1)
    labels = rng.choice([0, 1, 2, 4], size=200)  # class 3 never appears
    predicted = np.where(rng.random(200) < 0.6, labels, rng.integers(0, 5, 200))
    metric = BalancedAccuracy(5)
    for start in range(0, 200, 32):
        metric.update_state(labels[start:start + 32],
                            scores_for(predicted[start:start + 32], 5, seed=start))
    expected = np.mean([np.mean(predicted[labels == c] == c) for c in (0, 1, 2, 4)])
    np.testing.assert_allclose(value(metric), expected, rtol=1e-6)
    with pytest.warns(UserWarning):  # sklearn warns that class 3 is predicted, never true
        reference = balanced_accuracy_score(labels, predicted)
    np.testing.assert_allclose(value(metric), reference, rtol=1e-6)


def test_per_class_balanced_and_shot_group_share_one_result():
    """One ``result``: the mean accuracy over the masked classes that have samples."""
    assert PerClassAccuracy.result is BalancedAccuracy.result is ShotGroupAccuracy.result
    counts = [150, 120, 50]  # many: 0, 1; medium: 2
    metrics = [PerClassAccuracy(3), BalancedAccuracy(3), ShotGroupAccuracy(counts, "many"),
               ShotGroupAccuracy(counts, "many", many_threshold=40)]  # every class many
    for metric in metrics:
        assert value(metric) == 0.0  # nothing seen yet
    scores = scores_for(PREDICTED, 3)
    for metric in metrics:
        metric.update_state(LABELS[:5], scores[:5])  # class 2 not seen yet
    for metric in metrics:
        np.testing.assert_allclose(value(metric), np.mean(PER_CLASS[:2]), rtol=1e-6)
    for metric in metrics:
        metric.update_state(LABELS[5:], scores[5:])
    np.testing.assert_allclose([value(m) for m in metrics],
                               [np.mean(PER_CLASS)] * 2 + [np.mean(PER_CLASS[:2]),
                                                          np.mean(PER_CLASS)], rtol=1e-6)
    for metric in metrics:  # an out-of-range label makes every result NaN
        metric.invalid.assign(1.0)
        assert math.isnan(value(metric))


def test_sample_weights_weight_the_counts():
    metric = PerClassAccuracy(3)
    weights = np.array([3.0, 1.0, 1.0, 1.0, 0.0, 1.0])
    metric.update_state(LABELS, scores_for(PREDICTED, 3), sample_weight=weights)
    np.testing.assert_allclose(to_numpy(metric.per_class_result()), [0.75, 1.0, 1.0],
                               rtol=1e-6)


def test_shot_groups_thresholds():
    counts = [101, 100, 20, 19, 500, 1]
    assert shot_groups(counts) == {"many": [0, 4], "medium": [1, 2], "few": [3, 5]}
    assert shot_groups(counts, many_threshold=19, few_threshold=2) == {
        "many": [0, 1, 2, 4], "medium": [3], "few": [5]}
    with pytest.raises(ValueError, match="few_threshold"):
        shot_groups(counts, many_threshold=10, few_threshold=20)


def test_shot_group_rules_and_empty_group_reasons():
    assert shot_group_rules() == {"many": "more than 100 training images",
                                  "medium": "20 to 100 training images",
                                  "few": "fewer than 20 training images"}
    assert shot_group_rules(50.0, 5) == {"many": "more than 50 training images",
                                         "medium": "5 to 50 training images",
                                         "few": "fewer than 5 training images"}
    assert empty_group_reason("few") == "no class has fewer than 20 training images"
    assert empty_group_reason("medium", 200, 10) == "no class has 10 to 200 training images"
    assert empty_group_reason("many") == "no class has more than 100 training images"
    with pytest.raises(ValueError, match="group"):
        empty_group_reason("tail")
    with pytest.raises(ValueError, match="few_threshold"):
        shot_group_rules(10, 20)


def test_shot_group_accuracy_hand_built():
    counts = [150, 120, 50, 30, 10, 5]  # many 0,1; medium 2,3; few 4,5
    labels = np.array([0, 0, 1, 2, 2, 2, 2, 3, 4, 4, 4, 5])
    predicted = np.array([0, 1, 1, 2, 2, 0, 0, 3, 4, 0, 1, 0])
    # per class: 0.5, 1, 0.5, 1, 1/3, 0
    expected = {"many": 0.75, "medium": 0.75, "few": 1 / 6}
    scores = scores_for(predicted, 6)
    for group, answer in expected.items():
        metric = ShotGroupAccuracy(counts, group)
        assert metric.name == f"{group}_shot_accuracy"
        metric.update_state(labels[:6], scores[:6])
        metric.update_state(labels[6:], scores[6:])
        np.testing.assert_allclose(value(metric), answer, rtol=1e-6)
    # Configurable thresholds: many > 40 is classes 0, 1, 2.
    metric = ShotGroupAccuracy(counts, "many", many_threshold=40)
    metric.update_state(labels, scores)
    np.testing.assert_allclose(value(metric), np.mean([0.5, 1.0, 0.5]), rtol=1e-6)


def numpy_ece(probabilities, labels, num_bins):
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    ece = 0.0
    edges = np.linspace(0, 1, num_bins + 1)
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return ece


def test_ece_perfect_calibration_is_zero():
    # Within each confidence level, the fraction correct equals the confidence.
    probabilities, labels = [], []
    for confidence, num_correct in ((0.6, 3), (0.8, 4), (1.0, 5)):
        for i in range(5):
            probabilities.append([confidence, 1 - confidence])
            labels.append(0 if i < num_correct else 1)
    metric = ExpectedCalibrationError(num_bins=10, from_logits=False)
    metric.update_state(np.array(labels), np.array(probabilities, dtype="float32"))
    assert abs(value(metric)) < 1e-6
    overconfident = ExpectedCalibrationError(from_logits=False)
    overconfident.update_state([0, 1, 0, 1], np.array([[1.0, 0.0]] * 4, dtype="float32"))
    np.testing.assert_allclose(value(overconfident), 0.5, rtol=1e-6)


@pytest.mark.parametrize("logit_scale", [1.0, 16.0])
def test_ece_matches_numpy_on_random_logits(logit_scale):
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(300, 5)).astype("float32")
    labels = rng.integers(0, 5, 300)
    metric = ExpectedCalibrationError(num_bins=15, logit_scale=logit_scale)
    for start in (0, 150):
        metric.update_state(np.eye(5)[labels[start:start + 150]], logits[start:start + 150])
    scaled = logits.astype("float64") * logit_scale
    probabilities = np.exp(scaled - scaled.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    np.testing.assert_allclose(value(metric), numpy_ece(probabilities, labels, 15),
                               rtol=1e-4, atol=1e-6)


def test_reset_state():
    metrics = [PerClassAccuracy(3), BalancedAccuracy(3), ShotGroupAccuracy([200, 50, 5], "few"),
               ExpectedCalibrationError()]
    for metric in metrics:
        metric.update_state(LABELS, scores_for(PREDICTED, 3))
        assert value(metric) > 0
        metric.reset_state()
        assert value(metric) == 0.0
    assert np.all(np.isnan(to_numpy(metrics[0].per_class_result())))
    np.testing.assert_array_equal(to_numpy(metrics[0].per_class_support()), [0, 0, 0])


def test_bad_input_raises():
    scores = scores_for(PREDICTED, 3)
    with pytest.raises(ValueError, match="has 3 classes"):
        PerClassAccuracy(4).update_state(LABELS, scores)
    with pytest.raises(ValueError, match="has 3 classes"):
        ShotGroupAccuracy([200, 50, 30, 5], "few").update_state(LABELS, scores)
    with pytest.raises(ValueError, match="outside"):
        PerClassAccuracy(3).update_state([0, 1, 3, 0, 0, 0], scores)
    with pytest.raises(ValueError, match="outside"):
        ExpectedCalibrationError().update_state([0, 1, -1, 0, 0, 0], scores)
    with pytest.raises(ValueError, match="'few'-shot group is empty"):
        ShotGroupAccuracy([500] * 10, "few")
    with pytest.raises(ValueError, match="no class has fewer than 20 training images"):
        ShotGroupAccuracy([500] * 10, "few")
    with pytest.raises(ValueError, match="group"):
        ShotGroupAccuracy([500, 5], "tail")
    with pytest.raises(ValueError, match="num_classes"):
        PerClassAccuracy(1)
    with pytest.raises(ValueError, match="class_counts"):
        ShotGroupAccuracy([500, 0, 5], "few")
    with pytest.raises(ValueError, match="probabilities"):
        ExpectedCalibrationError(from_logits=False).update_state(LABELS, scores)
    with pytest.raises(ValueError, match="num_bins"):
        ExpectedCalibrationError(num_bins=0)


@pytest.mark.parametrize("metric", [
    PerClassAccuracy(4, name="pca"), BalancedAccuracy(3),
    ShotGroupAccuracy([300, 50, 10], "medium", many_threshold=200, few_threshold=11),
    ExpectedCalibrationError(num_bins=7, from_logits=False, logit_scale=2.0)])
def test_serialization_round_trip(metric):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert type(restored) is type(metric)
    assert restored.get_config() == metric.get_config()
    assert restored.name == metric.name
