"""LDAM and ELM: numpy formula, identities, labels, reductions, bad input.

The authors' values are checked in test_reference_values.py.
"""

import json

import keras
import numpy as np
import pytest

import keras_margins as km
from backend_utils import loss_value_and_grad

COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
DRW = "drw_weights_epoch_160_plus"


def numpy_elm(cosines, labels, counts, lam, scale=30.0, max_margin=0.5, weights=None):
    """Independent float64 implementation of SPEC's LDAM/ELM formula."""
    margins = np.asarray(counts, float) ** -0.25
    margins = margins * max_margin / margins.max()
    losses = []
    for row, y in zip(np.asarray(cosines, float), labels):
        others = np.delete(np.arange(row.size), y)
        hardest = others[np.argmax(row[others])]
        z = row.copy()
        z[y] = row[y] - margins[y] + lam * margins[hardest]
        z = scale * z
        top = z.max()
        losses.append(top + np.log(np.exp(z - top).sum()) - z[y])
    losses = np.asarray(losses)
    w = np.ones(len(counts)) if weights is None else np.asarray(weights)
    return np.sum(w[labels] * losses) / np.sum(w[labels])


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_tail_labels_match_numpy(reference, lam):
    cosines = np.asarray(reference["inputs"]["cosines"])
    labels = np.array([8, 9, 9, 8, 0, 9, 8, 1])
    weights = reference["class_lists"][DRW]
    loss = km.losses.ELMLoss(COUNTS, lam=lam, class_weights=weights)
    expected = numpy_elm(cosines, labels, COUNTS, lam, weights=weights)
    assert float(loss(labels, cosines.astype("float32"))) == pytest.approx(expected, rel=1e-5)


def test_elm_with_zero_lambda_is_ldam(reference):
    cosines = np.asarray(reference["inputs"]["cosines"], "float32")
    labels = np.array(reference["inputs"]["labels"])
    ldam = km.losses.LDAMLoss(COUNTS)
    elm = km.losses.ELMLoss(COUNTS, lam=0.0)
    v1, g1 = loss_value_and_grad(ldam, labels, cosines)
    v2, g2 = loss_value_and_grad(elm, labels, cosines)
    # ELM shifts its log-sum-exp by the non-target max it already has; LDAM uses
    # logsumexp: the same sum in float32, rounded differently (~1 ulp).
    assert v1 == pytest.approx(v2, rel=1e-6)
    np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-12)


def test_elm_without_target_margin(reference):
    cosines = np.asarray(reference["inputs"]["cosines"], "float32")
    labels = np.array(reference["inputs"]["labels"])
    loss = km.losses.ELMLoss(COUNTS, lam=1.0, target_margin=False)
    # Without -m_y the target gets only +lam*m_j*: equal to ELM with max margins
    # re-added, i.e. numpy with the margin term removed.
    margins = km.priors.ldam_margins(COUNTS)
    shifted = cosines.copy()
    shifted[np.arange(len(labels)), labels] += margins[labels]
    expected = numpy_elm(shifted, labels, COUNTS, 1.0)
    assert float(loss(labels, cosines)) == pytest.approx(expected, rel=1e-5)


def test_zero_margin_ldam_is_scaled_cross_entropy(reference):
    cosines = np.asarray(reference["inputs"]["cosines"], "float32")
    labels = np.array(reference["inputs"]["labels"])
    ldam = km.losses.LDAMLoss(COUNTS, max_margin=0.0, scale=30.0)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    v1, g1 = loss_value_and_grad(ldam, labels, cosines)
    v2, g2 = loss_value_and_grad(lambda y, z: ce(y, 30.0 * z), labels, cosines)
    assert v1 == pytest.approx(v2, rel=1e-6)
    np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-5)  # float32 grads up to ~4


def test_weighted_mean_with_unit_weights_is_plain_mean(reference):
    cosines = np.asarray(reference["inputs"]["cosines"], "float32")
    labels = np.array(reference["inputs"]["labels"])
    plain = km.losses.LDAMLoss(COUNTS)
    ones = km.losses.LDAMLoss(COUNTS, class_weights=np.ones(10))
    twos = km.losses.LDAMLoss(COUNTS, class_weights=2 * np.ones(10))
    for loss in (ones, twos):
        assert float(loss(labels, cosines)) == pytest.approx(float(plain(labels, cosines)), rel=1e-6)


def test_sum_over_batch_size_reduction_is_plain_mean_of_weighted_losses(reference):
    cosines = np.asarray(reference["inputs"]["cosines"], "float32")
    labels = np.array(reference["inputs"]["labels"])
    weights = np.asarray(reference["class_lists"][DRW])
    loss = km.losses.LDAMLoss(COUNTS, class_weights=weights, reduction="sum_over_batch_size")
    per_sample = np.asarray(reference["losses"]["ldam"]["per_sample"])
    expected = np.mean(weights[labels] * per_sample)
    assert float(loss(labels, cosines)) == pytest.approx(expected, rel=1e-5)


def test_sample_weights_combine_with_class_weights(reference):
    cosines = np.asarray(reference["inputs"]["cosines"], "float32")
    labels = np.array(reference["inputs"]["labels"])
    weights = np.asarray(reference["class_lists"][DRW])
    sample_weight = np.linspace(0.5, 2.0, len(labels)).astype("float32")
    loss = km.losses.LDAMLoss(COUNTS, class_weights=weights)
    per_sample = np.asarray(reference["losses"]["ldam"]["per_sample"])
    w = weights[labels] * sample_weight
    assert float(loss(labels, cosines, sample_weight=sample_weight)) == pytest.approx(
        np.sum(w * per_sample) / np.sum(w), rel=1e-5)


def test_label_formats_agree(reference):
    cosines = np.asarray(reference["inputs"]["cosines"], "float32")
    labels = np.array(reference["inputs"]["labels"])
    loss = km.losses.ELMLoss(COUNTS)
    sparse = float(loss(labels, cosines))
    column = float(loss(labels[:, None], cosines))
    one_hot = float(loss(np.eye(10, dtype="float32")[labels], cosines))
    assert sparse == pytest.approx(column) and sparse == pytest.approx(one_hot)


def test_config_round_trip(reference):
    cosines = np.asarray(reference["inputs"]["cosines"], "float32")
    labels = np.array(reference["inputs"]["labels"])
    for loss in (km.losses.LDAMLoss(COUNTS, max_margin=0.3, scale=20.0,
                                    class_weights=reference["class_lists"][DRW]),
                 km.losses.ELMLoss(COUNTS, lam=0.5, target_margin=False)):
        config = loss.get_config()
        json.dumps(config)
        clone = type(loss).from_config(config)
        assert clone.get_config() == config
        assert float(clone(labels, cosines)) == pytest.approx(float(loss(labels, cosines)))
        restored = keras.losses.deserialize(keras.losses.serialize(loss))
        assert type(restored) is type(loss) and restored.get_config() == config


@pytest.mark.parametrize("make, fragment", [
    (lambda: km.losses.LDAMLoss([10, 0, 5]), "class_counts"),
    (lambda: km.losses.LDAMLoss([10, -3, 5]), "class_counts"),
    (lambda: km.losses.LDAMLoss([10, float("nan"), 5]), "class_counts"),
    (lambda: km.losses.LDAMLoss(COUNTS, max_margin=-0.5), "max_margin"),
    (lambda: km.losses.LDAMLoss(COUNTS, scale=0.0), "scale"),
    (lambda: km.losses.LDAMLoss(COUNTS, scale=-1.0), "scale"),
    (lambda: km.losses.ELMLoss(COUNTS, lam=-1.0), "lam"),
    (lambda: km.losses.ELMLoss(COUNTS, target_margin="yes"), "target_margin"),
    (lambda: km.losses.LDAMLoss(COUNTS, class_weights=[1.0] * 9), "class_weights"),
])
def test_bad_construction_raises(make, fragment):
    with pytest.raises(ValueError, match=fragment):
        make()


def test_bad_call_inputs_raise(reference):
    cosines = np.asarray(reference["inputs"]["cosines"], "float32")
    labels = np.array(reference["inputs"]["labels"])
    loss = km.losses.LDAMLoss(COUNTS)
    with pytest.raises(ValueError, match="class_counts"):
        km.losses.LDAMLoss(COUNTS[:5])(labels % 5, cosines)
    with pytest.raises(ValueError, match="y_pred"):
        loss(labels, cosines[0])
    with pytest.raises(ValueError, match="y_pred"):
        loss(labels, cosines[None])
    with pytest.raises(ValueError, match="y_true"):
        loss(np.zeros((8, 3)), cosines)
    with pytest.raises(ValueError, match="label 10"):
        loss(np.array([0, 1, 2, 3, 4, 5, 6, 10]), cosines)
    with pytest.raises(ValueError, match="label -1"):
        loss(np.array([0, 1, 2, 3, 4, 5, 6, -1]), cosines)


def test_extreme_cosines_are_finite():
    cosines = np.array([[1.0, -1.0, 1.0, -1.0], [-1.0, -1.0, -1.0, 1.0]], "float32")
    labels = np.array([1, 0])
    for loss in (km.losses.LDAMLoss([100, 50, 10, 1], scale=64.0),
                 km.losses.ELMLoss([100, 50, 10, 1], scale=64.0)):
        value, grad = loss_value_and_grad(loss, labels, cosines)
        assert np.isfinite(value) and np.all(np.isfinite(grad))
