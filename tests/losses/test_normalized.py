"""The normalised-softmax family: NormFace, CosFace, ArcFace, SphereFace, combined margin."""

import keras
import numpy as np
import pytest

import keras_margins as km
from backend_utils import loss_value_and_grad, to_numpy
from .helpers import (COUNTS, TAIL_LABELS, assert_same, check_matches_numpy_formula, inputs, np_ce,
                      np_combined, np_psi)


@pytest.mark.parametrize("name", ["arcface", "combined", "cosface", "sphereface"])
def test_matches_numpy_formula(reference, name):
    check_matches_numpy_formula(reference, name)


def test_arcface_and_sphereface_tail_labels_past_pi(reference):
    """Target cosines near -1 put m1*theta + m2 past pi: numpy psi continuation."""
    c, _ = inputs(reference, dtype="float64")
    c = c.copy()
    rows = np.arange(len(TAIL_LABELS))
    c[rows, TAIL_LABELS] = np.linspace(-1.0, -0.9, len(TAIL_LABELS))
    for loss, args in ((km.losses.ArcFaceLoss(0.5, 16.0), (1.0, 0.5, 0.0, 16.0)),
                       (km.losses.SphereFaceLoss(4.0, 16.0), (4.0, 0.0, 0.0, 16.0))):
        expected = np_combined(c, TAIL_LABELS, *args)
        assert float(loss(TAIL_LABELS, c.astype("float32"))) == pytest.approx(expected, rel=2e-5)


# ---------------------------------------------------------------------------- identities

def test_normface_is_combined_margin_one_zero_zero(reference):
    c, labels = inputs(reference)
    for scale in (5.0, 64.0):
        assert_same(loss_value_and_grad(km.losses.NormFaceLoss(scale), labels, c),
                    loss_value_and_grad(km.losses.CombinedMarginLoss(1, 0, 0, scale), labels, c))


def test_normface_is_scaled_cross_entropy(reference):
    c, labels = inputs(reference)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    assert_same(loss_value_and_grad(km.losses.NormFaceLoss(16.0), labels, c),
                loss_value_and_grad(lambda y, z: ce(y, 16.0 * z), labels, c), rtol=1e-5)


def test_zero_margins_are_normface(reference):
    c, labels = inputs(reference)
    normface = loss_value_and_grad(km.losses.NormFaceLoss(15.0), labels, c)
    assert_same(normface, loss_value_and_grad(km.losses.CosFaceLoss(0.0, 15.0), labels, c))
    assert_same(normface, loss_value_and_grad(km.losses.GMSoftmaxLoss(1, 1, 0, 0, 15.0),
                                              labels, c), rtol=1e-5)
    # ArcFace(0) takes arccos of clipped cosines: equal up to the clipping.
    assert_same(normface, loss_value_and_grad(km.losses.ArcFaceLoss(0.0, 15.0), labels, c),
                rtol=1e-5, atol=1e-6)
    # Equal counts: unit radii, equal relative margins, GA scales all = scale.
    for ga in (False, True):
        kps = km.losses.KPSLoss([7] * 10, max_margin=0.0, scale=15.0, gradient_adjustment=ga)
        np.testing.assert_array_equal(kps.radii, np.ones(10))
        assert_same(normface, loss_value_and_grad(kps, labels, c), rtol=1e-5)
    # MM with a huge delta_neg (and delta_pos) has margins exp(-huge) = 0.
    for counts in (None, COUNTS):
        mm = km.losses.MaxMarginLoss(1e4, 1.5, 15.0, class_counts=counts)
        # MM shifts its log-sum-exp by the non-target max: ulp-level rounding
        assert_same(normface, loss_value_and_grad(mm, labels, c), rtol=1e-5)


def test_target_logit_is_monotone_and_continuous_past_pi():
    cosines = np.cos(np.linspace(0.0, np.pi, 4001)).astype("float32")
    for loss in (km.losses.ArcFaceLoss(0.5, 1.0), km.losses.ArcFaceLoss(2.0, 1.0),
                 km.losses.SphereFaceLoss(4.0, 1.0),
                 km.losses.CombinedMarginLoss(1.5, 0.8, 0.1, 1.0)):
        target = to_numpy(loss.target_logits(cosines)).astype("float64")
        steps = np.diff(target)  # theta increasing: the target logit never goes up
        assert np.all(steps <= 1e-6), (loss.name, steps.max())
        # Continuous: no jump larger than the largest step of m1*theta (|psi'| <= 1).
        assert np.max(np.abs(steps)) < 0.02, (loss.name, np.abs(steps).max())
    u = np.linspace(0.0, 3 * np.pi, 3001)
    np.testing.assert_allclose(
        to_numpy(km.losses.normalized.monotone_cosine(u.astype("float32"))), np_psi(u),
        atol=1e-5)


# ------------------------------------------------------- ArcFace conventions past pi

def np_arc_target(c, m, past_pi):
    """numpy target cosine of ArcFace under each convention (float64)."""
    theta = np.arccos(np.clip(c, -1 + 1e-7, 1 - 1e-7))
    if past_pi == "monotone":
        return np_psi(theta + m)
    if past_pi == "insightface":
        return np.where(c > np.cos(np.pi - m), np.cos(theta + m), c - m * np.sin(m))
    return np.where(c > 0, np.cos(theta + m), c)


ANGLES = np.array([0.0, 0.3, 1.2, np.pi / 2 - 0.01, np.pi / 2 + 0.01, 2.0, 2.6, 2.9, 3.1,
                   np.pi])


@pytest.mark.parametrize("past_pi", km.losses.normalized.PAST_PI)
@pytest.mark.parametrize("margin", [0.3, 0.5, 1.0])
def test_arcface_past_pi_conventions_match_numpy(past_pi, margin):
    cosines = np.cos(ANGLES)
    loss = km.losses.ArcFaceLoss(margin, 16.0, past_pi=past_pi)
    target = to_numpy(loss.target_logits(cosines.astype("float32"))).astype("float64")
    np.testing.assert_allclose(target, np_arc_target(cosines, margin, past_pi), atol=1e-4)
    # The whole loss: numpy cross-entropy with that target in column 0.
    others = np.random.default_rng(3).uniform(-1, 1, size=(len(ANGLES), 3))
    c = np.concatenate([cosines[:, None], others], axis=1)
    labels = np.zeros(len(ANGLES), "int64")
    z = c.copy()
    z[:, 0] = np_arc_target(cosines, margin, past_pi)
    expected = np.mean(np_ce(16.0 * z, labels))
    assert float(loss(labels, c.astype("float32"))) == pytest.approx(expected, rel=1e-4)
    combined = km.losses.CombinedMarginLoss(1.0, margin, 0.1, 16.0, past_pi=past_pi)
    np.testing.assert_allclose(to_numpy(combined.target_logits(cosines.astype("float32"))),
                               np_arc_target(cosines, margin, past_pi) - 0.1, atol=1e-4)


def test_arcface_conventions_differ_only_past_pi_by_at_most_0178():
    """At m = 0.5, monotone and InsightFace agree for theta <= pi - m and differ
    by at most 0.178 (at theta = pi - m/2) beyond; InsightFace jumps down by
    0.117 at theta = pi - m; "easy" jumps up by sin(m) at theta = pi/2."""
    theta = np.linspace(0.0, np.pi, 20001)
    cosines = np.cos(theta).astype("float32")
    targets = {name: to_numpy(km.losses.ArcFaceLoss(0.5, 1.0, past_pi=name).target_logits(
        cosines)).astype("float64") for name in km.losses.normalized.PAST_PI}
    difference = np.abs(targets["monotone"] - targets["insightface"])
    assert np.max(difference[theta < np.pi - 0.5 - 1e-3]) < 1e-5
    assert np.max(difference) == pytest.approx(0.1775, abs=1e-3)
    assert theta[np.argmax(difference)] == pytest.approx(np.pi - 0.25, abs=1e-2)
    steps = np.diff(targets["insightface"])
    assert np.all(steps <= 1e-6)  # monotone too, but with a jump
    assert -np.min(steps) == pytest.approx(0.117, abs=2e-3)
    easy_steps = np.diff(targets["easy"])
    assert np.max(easy_steps) == pytest.approx(np.sin(0.5), abs=2e-3)
    monotone_steps = np.diff(targets["monotone"])
    assert np.all(monotone_steps <= 1e-6) and np.max(np.abs(monotone_steps)) < 1e-3


def test_past_pi_serialises_and_defaults_to_monotone():
    loss = km.losses.ArcFaceLoss(0.5, 64.0, past_pi="insightface")
    config = loss.get_config()
    assert config["past_pi"] == "insightface"
    assert keras.losses.deserialize(keras.losses.serialize(loss)).past_pi == "insightface"
    del config["past_pi"]  # configs saved before the argument existed
    assert km.losses.ArcFaceLoss.from_config(config).past_pi == "monotone"
    combined = km.losses.CombinedMarginLoss(1.0, 0.4, 0.1, 30.0, past_pi="easy")
    assert km.losses.CombinedMarginLoss.from_config(combined.get_config()).past_pi == "easy"


# ------------------------------------------------------------------ short fit, save / load

def test_fit_normalized_family_multi_head(fashion_mnist_lt_small, tmp_path):
    """One model, one cosine head per loss of the family: one compile for five losses."""
    x, y, _ = fashion_mnist_lt_small
    losses = [km.losses.NormFaceLoss(16.0), km.losses.CosFaceLoss(0.35, 30.0),
              km.losses.ArcFaceLoss(0.5, 30.0), km.losses.SphereFaceLoss(1.35, 30.0),
              km.losses.CombinedMarginLoss(1.2, 0.2, 0.1, 30.0)]
    keras.utils.set_random_seed(0)
    inputs = keras.Input(x.shape[1:])
    h = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(inputs))
    outputs = [km.layers.CosineDense(10, name=f"head_{i}")(h) for i in range(len(losses))]
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=losses)
    history = model.fit(x, [y] * len(losses), epochs=1, batch_size=128, verbose=0)
    for key, values in history.history.items():
        assert np.all(np.isfinite(values)), (key, values)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    for before, after in zip(model.predict(x[:32], verbose=0),
                             reloaded.predict(x[:32], verbose=0)):
        np.testing.assert_allclose(to_numpy(after), to_numpy(before), rtol=1e-5, atol=1e-6)
    assert [type(loss) for loss in reloaded.loss] == [type(loss) for loss in losses]
    assert [loss.get_config() for loss in reloaded.loss] == [
        loss.get_config() for loss in losses]
