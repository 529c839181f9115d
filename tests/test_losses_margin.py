"""MM, KPS, LMSCE, LM/GM-Softmax, sample margin and the normalised-softmax family.

Reference values (authors' code / independent implementation, float64), an
independent numpy implementation of SPEC's formulas for tail labels,
identities, extreme inputs, bad input and serialization.
"""

import json

import keras
import numpy as np
import pytest

import keras_margins as km
from backend_utils import float64_enabled, loss_value_and_grad, to_numpy, value_and_grad

COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
DRW = "drw_weights_epoch_160_plus"
TAIL_LABELS = np.array([8, 9, 9, 8, 0, 9, 8, 1])


# --------------------------------------------------------------------------- helpers

def make_reference_loss(name, reference, dtype):
    lists = reference["class_lists"]
    losses = km.losses
    if name.startswith("kps"):
        ga = name == "kps_ga_stage"
        loss = losses.KPSLoss(COUNTS, max_margin=0.2, scale=15.0, gradient_adjustment=ga,
                              dtype=dtype)
        # The authors' code derives margins and GA scales from the reversed
        # radius list; on integer counts that differs from SPEC's formula by
        # ~1e-4 (see test_kps_formula_priors_are_close_to_authors_lists). To
        # check the loss mechanism at 1e-6, use the authors' per-class lists.
        loss.radii = np.asarray(lists["kps_s_list_radius"])
        loss.margins = np.asarray(lists["kps_m_list_max_m_0.2"])
        loss.kps_scales = np.asarray(lists["kps_ga_scale_per_class_s15"])
        return loss
    if name.startswith("lmsce"):
        return losses.LMSCELoss(lam=float(name.rsplit("_", 1)[1]), dtype=dtype)
    if name == "lm_softmax_s5":
        return losses.LMSoftmaxLoss(scale=5.0, dtype=dtype)
    if name.startswith("normface"):
        return losses.NormFaceLoss(scale=float(name[len("normface_s"):]), dtype=dtype)
    if name.startswith(("cosface", "arcface")):
        _, margin, scale = name.split("_")
        cls = losses.CosFaceLoss if name.startswith("cosface") else losses.ArcFaceLoss
        return cls(margin=float(margin[1:]), scale=float(scale[1:]), dtype=dtype)
    if name == "sample_margin_R_sm":
        return losses.SampleMarginLoss(dtype=dtype)
    raise KeyError(name)


REFERENCE_NAMES = ["kps_stage1", "kps_ga_stage", "lmsce_lambda_0.3", "lmsce_lambda_1.0",
                   "lm_softmax_s5", "normface_s5", "normface_s64", "cosface_m0.35_s64",
                   "cosface_m0.1_s5", "arcface_m0.1_s64", "arcface_m0.1_s5",
                   "sample_margin_R_sm"]


def inputs(reference, kind="cosines", dtype="float32"):
    return np.asarray(reference["inputs"][kind], dtype), np.asarray(reference["inputs"]["labels"])


def assert_same(first, second, rtol=1e-6, atol=1e-7):
    np.testing.assert_allclose(first[0], second[0], rtol=rtol, atol=atol)
    np.testing.assert_allclose(first[1], second[1], rtol=rtol, atol=atol)


# ----------------------------------------------------- independent numpy (float64)

def np_lse(z):
    top = np.max(z, axis=-1, keepdims=True)
    return (top + np.log(np.sum(np.exp(z - top), axis=-1, keepdims=True)))[..., 0]


def np_ce(z, labels):
    return np_lse(z) - z[np.arange(len(labels)), labels]


def np_weighted_mean(losses, labels, weights):
    w = np.ones(10) if weights is None else np.asarray(weights)
    return np.sum(w[labels] * losses) / np.sum(w[labels])


def np_kps(c, labels, counts, max_margin, scale, ga, n_base=50.0, max_scale=50.0, weights=None):
    counts = np.asarray(counts, float)
    radius = 1 + np.log(counts / counts.min()) / np.log(n_base)
    relative = radius.max() + 1 - radius
    margin = max_margin * relative / relative.max()
    scales = np.clip(scale * relative, scale, max_scale)
    rows = np.arange(len(labels))
    z = radius * c
    z[rows, labels] -= margin[labels]
    s = scales[labels] if ga else np.full(len(labels), scale)
    return np_weighted_mean(np_ce(s[:, None] * z, labels), labels, weights)


def np_mm(c, labels, delta_neg, beta, scale, counts=None, weights=None):
    losses = []
    g = np.zeros(10)
    if counts is not None:
        g = np.asarray(counts, float) ** -0.25
        g = 0.5 * g / g.max()
    for row, y in zip(c, labels):
        d = row[y] - np.max(np.delete(row, y))
        neg = delta_neg - g[y]
        pos = beta * neg
        delta = np.exp(-d - pos) if d > 0 else (np.exp(d - neg) if d < 0 else 0.0)
        z = row.copy()
        z[y] -= delta
        losses.append(np_lse(scale * z[None])[0] - scale * z[y])
    return np_weighted_mean(np.array(losses), labels, weights)


def np_lmsce(x, labels, lam):
    out = []
    for row, y in zip(x, labels):
        others = np.delete(row, y)
        q = np.exp(others - others.max())
        q /= q.sum()
        reg = np.sum((q - 1.0 / (len(row) - 1)) * np.log(q))
        out.append(np_lse(row[None])[0] - row[y] + lam * 0.5 * reg)
    return np.mean(out)


def np_lm_softmax(c, labels, s):
    return np.mean([np_lse(s * (np.delete(r, y) - r[y])[None])[0] / s for r, y in zip(c, labels)])


def np_gm_softmax(c, labels, a1, a2, b1, b2, s):
    out = []
    for r, y in zip(c, labels):
        den = np.concatenate([[s * a2 * r[y] + b2], s * np.delete(r, y)])
        out.append(np_lse(den[None])[0] - (s * a1 * r[y] + b1))
    return np.mean(out)


def np_psi(u):
    k = np.floor(u / np.pi)
    return (-1.0) ** k * np.cos(u) - 2 * k


def np_combined(c, labels, m1, m2, m3, s):
    rows = np.arange(len(labels))
    theta = np.arccos(np.clip(c[rows, labels], -1 + 1e-7, 1 - 1e-7))
    z = c.copy()
    z[rows, labels] = np_psi(m1 * theta + m2) - m3
    return np.mean(np_ce(s * z, labels))


def np_sample_margin(c, labels):
    return np.mean([np.max(np.delete(r, y)) - r[y] for r, y in zip(c, labels)])


# ------------------------------------------------------------------ reference values

@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-4), ("float64", 1e-6)])
@pytest.mark.parametrize("name", REFERENCE_NAMES)
def test_matches_reference_values(reference, name, dtype, rtol):
    entry = reference["losses"][name]
    x = np.asarray(reference["inputs"][entry["input"]])
    labels = reference["inputs"]["labels"]
    with float64_enabled():
        loss = make_reference_loss(name, reference, dtype)
        value, grad = loss_value_and_grad(loss, labels, x, dtype)
        per_sample = to_numpy(loss.call(np.asarray(labels, dtype), x.astype(dtype)))
    # (Keras' torch reduction returns the float64 mean as float32: divide_no_nan
    # by a Python int. The gradient stays float64; the mean is within 1e-7.)
    assert grad.dtype == np.dtype(dtype)
    assert value == pytest.approx(entry["mean"], rel=rtol)
    scale = np.max(np.abs(entry["grad"]))
    np.testing.assert_allclose(grad, entry["grad"], rtol=rtol, atol=rtol * 1e-2 * scale)
    # A per-sample loss is a difference of log-sum-exp and target logit (both up
    # to ~s): its absolute error scales with the largest loss, not with itself.
    atol = rtol * 1e-2 * np.max(np.abs(entry["per_sample"]))
    np.testing.assert_allclose(per_sample, entry["per_sample"], rtol=rtol, atol=atol)


def test_kps_formula_priors_are_close_to_authors_lists(reference):
    """SPEC's formula (any count order) vs the authors' reversed radius list."""
    lists = reference["class_lists"]
    loss = km.losses.KPSLoss(COUNTS, max_margin=0.2, scale=15.0)
    np.testing.assert_allclose(loss.radii, lists["kps_s_list_radius"], rtol=1e-12)
    np.testing.assert_allclose(loss.margins, lists["kps_m_list_max_m_0.2"], rtol=2e-3)
    np.testing.assert_allclose(loss.kps_scales, lists["kps_ga_scale_per_class_s15"], rtol=2e-3)
    c, labels = inputs(reference, dtype="float64")
    with float64_enabled():
        for ga, name in ((False, "kps_stage1"), (True, "kps_ga_stage")):
            loss.gradient_adjustment = ga
            value = float(loss(labels, c))
            assert value == pytest.approx(reference["losses"][name]["mean"], rel=5e-4)


# ------------------------------------------------------- tail labels vs numpy formulas

NUMPY_CASES = {
    "kps": (lambda: km.losses.KPSLoss(COUNTS, max_margin=0.5),
            lambda c, y, w: np_kps(c, y, COUNTS, 0.5, 15.0, False)),
    "kps_ga": (lambda: km.losses.KPSLoss(COUNTS, max_margin=0.5, gradient_adjustment=True),
               lambda c, y, w: np_kps(c, y, COUNTS, 0.5, 15.0, True)),
    "kps_ga_drw": (lambda: None, lambda c, y, w: np_kps(c, y, COUNTS, 0.35, 15.0, True,
                                                         weights=w)),
    "mm": (lambda: km.losses.MaxMarginLoss(0.6, 1.5, 19.0),
           lambda c, y, w: np_mm(c, y, 0.6, 1.5, 19.0)),
    "mm_ldam_drw": (lambda: None, lambda c, y, w: np_mm(c, y, 1.29, 1.528, 26.0, COUNTS, w)),
    "lm_softmax": (lambda: km.losses.LMSoftmaxLoss(5.0),
                   lambda c, y, w: np_lm_softmax(c, y, 5.0)),
    "gm_softmax": (lambda: km.losses.GMSoftmaxLoss(1.2, 0.7, -0.3, 0.4, 16.0),
                   lambda c, y, w: np_gm_softmax(c, y, 1.2, 0.7, -0.3, 0.4, 16.0)),
    "cosface": (lambda: km.losses.CosFaceLoss(0.35, 30.0),
                lambda c, y, w: np_combined(c, y, 1.0, 0.0, 0.35, 30.0)),
    "arcface": (lambda: km.losses.ArcFaceLoss(0.5, 30.0),
                lambda c, y, w: np_combined(c, y, 1.0, 0.5, 0.0, 30.0)),
    "sphereface": (lambda: km.losses.SphereFaceLoss(4.0, 30.0),
                   lambda c, y, w: np_combined(c, y, 4.0, 0.0, 0.0, 30.0)),
    "combined": (lambda: km.losses.CombinedMarginLoss(1.35, 0.3, 0.2, 30.0),
                 lambda c, y, w: np_combined(c, y, 1.35, 0.3, 0.2, 30.0)),
    "sample_margin": (lambda: km.losses.SampleMarginLoss(),
                      lambda c, y, w: np_sample_margin(c, y)),
    "sample_margin_plus_normface": (
        lambda: km.losses.SampleMarginLoss(km.losses.NormFaceLoss(16.0), weight=0.5),
        lambda c, y, w: np_combined(c, y, 1, 0, 0, 16.0) + 0.5 * np_sample_margin(c, y)),
}


def _weighted_case(name, weights):
    if name == "kps_ga_drw":
        return km.losses.KPSLoss(COUNTS, max_margin=0.35, gradient_adjustment=True,
                                 class_weights=weights)
    return km.losses.MaxMarginLoss(1.29, 1.528, 26.0, class_counts=COUNTS,
                                   class_weights=weights)


@pytest.mark.parametrize("name", sorted(NUMPY_CASES))
def test_matches_numpy_formula(reference, name):
    c, reference_labels = inputs(reference, dtype="float64")
    weights = np.asarray(reference["class_lists"][DRW])
    make, formula = NUMPY_CASES[name]
    loss = make() or _weighted_case(name, weights)
    for labels in (reference_labels, TAIL_LABELS):
        expected = formula(c, labels, weights)
        assert float(loss(labels, c.astype("float32"))) == pytest.approx(expected, rel=2e-5)


def test_lmsce_tail_labels_match_numpy(reference):
    x, _ = inputs(reference, "logits", "float64")
    for lam in (0.3, 1.0):
        loss = km.losses.LMSCELoss(lam)
        expected = np_lmsce(x, TAIL_LABELS, lam)
        assert float(loss(TAIL_LABELS, x.astype("float32"))) == pytest.approx(expected, rel=2e-5)


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


def test_kps_counts_in_any_order(reference):
    """Permuting the classes (counts, columns, labels) permutes nothing in the loss."""
    c, labels = inputs(reference)
    perm = np.array([3, 9, 0, 7, 5, 1, 8, 2, 6, 4])
    counts = np.asarray(COUNTS)[perm]
    inverse = np.argsort(perm)
    for ga in (False, True):
        ordered = km.losses.KPSLoss(COUNTS, gradient_adjustment=ga)
        shuffled = km.losses.KPSLoss(counts, gradient_adjustment=ga)
        assert float(shuffled(inverse[labels], c[:, perm])) == pytest.approx(
            float(ordered(labels, c)), rel=1e-6)
        # Rarest class (count 50) gets the largest margin and the GA scale.
        assert np.argmax(shuffled.margins) == int(np.argmin(counts))
        assert np.argmax(shuffled.kps_scales) == int(np.argmin(counts))


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


def test_gm_softmax_offsets_are_cosface(reference):
    """(1, 1, -s*m, -s*m) shifts the target by -m in numerator and denominator: CosFace."""
    c, labels = inputs(reference)
    s, m = 10.0, 0.2
    gm = float(km.losses.GMSoftmaxLoss(1, 1, -s * m, -s * m, s)(labels, c))
    assert gm == pytest.approx(float(km.losses.CosFaceLoss(m, s)(labels, c)), rel=1e-5)


def test_lmsce_with_zero_lambda_is_cross_entropy(reference):
    x, labels = inputs(reference, "logits")
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    assert_same(loss_value_and_grad(km.losses.LMSCELoss(0.0), labels, x),
                loss_value_and_grad(ce, labels, x), rtol=1e-5)


def test_sample_margin_adds_weighted_regulariser(reference):
    c, labels = inputs(reference)
    base = km.losses.ArcFaceLoss(0.1, 5.0)
    rsm = km.losses.SampleMarginLoss()
    combined = km.losses.SampleMarginLoss(base, weight=0.5)
    v1, g1 = loss_value_and_grad(combined, labels, c)
    vb, gb = loss_value_and_grad(base, labels, c)
    vr, gr = loss_value_and_grad(rsm, labels, c)
    assert v1 == pytest.approx(vb + 0.5 * vr, rel=1e-6)
    np.testing.assert_allclose(g1, gb + 0.5 * gr, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "none"])
def test_sample_margin_fused_cross_entropy_equals_the_two_losses(reference, reduction):
    """CE base on logits: the one-pass sum equals base + weight * R_sm (value,
    gradient, sample weights); a base with another reduction is not fused."""
    x, labels = inputs(reference, "logits")
    sample_weight = np.linspace(0.2, 1.7, len(labels)).astype("float32")
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction)
    fused = km.losses.SampleMarginLoss(ce, weight=0.5, reduction=reduction)
    assert fused._fuses_cross_entropy()
    rsm = km.losses.SampleMarginLoss(reduction=reduction)

    def separate(y, z):
        return (ce(y, z, sample_weight=sample_weight)
                + 0.5 * rsm(y, z, sample_weight=sample_weight))

    def reduce_sum(loss):
        return lambda y, z: keras.ops.sum(loss(y, z))

    got = loss_value_and_grad(
        reduce_sum(lambda y, z: fused(y, z, sample_weight=sample_weight)), labels, x)
    want = loss_value_and_grad(reduce_sum(separate), labels, x)
    assert_same(got, want, rtol=1e-5, atol=1e-6)
    # not fused: different reduction, probabilities, or ignore_class
    for base, reduction in (
            (keras.losses.SparseCategoricalCrossentropy(from_logits=True), "sum"),
            (keras.losses.SparseCategoricalCrossentropy(from_logits=False), "sum_over_batch_size"),
            (keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0),
             "sum_over_batch_size")):
        assert not km.losses.SampleMarginLoss(base, reduction=reduction)._fuses_cross_entropy()


def test_sample_margin_keeps_base_class_weights(reference):
    c, labels = inputs(reference)
    weights = np.asarray(reference["class_lists"][DRW])
    base = km.losses.LDAMLoss(COUNTS, class_weights=weights)
    combined = km.losses.SampleMarginLoss(base, weight=0.5)
    expected = float(base(labels, c)) + 0.5 * np_sample_margin(c.astype(float), labels)
    assert float(combined(labels, c)) == pytest.approx(expected, rel=1e-5)
    drw = km.callbacks.find_losses(type("M", (), {"loss": combined})(),
                                   lambda loss: getattr(loss, "accepts_class_weights", False))
    assert drw == [base]


def test_max_margin_has_no_gradient_through_margin(reference):
    c, labels = inputs(reference)
    loss = km.losses.MaxMarginLoss(0.6, 1.5, 19.0, class_counts=COUNTS)
    delta = to_numpy(loss.sample_margins(keras.ops.convert_to_tensor(labels, "int32"),
                                         keras.ops.convert_to_tensor(c)))
    rows = np.arange(len(labels))
    shifted = np.zeros_like(c)
    shifted[rows, labels] = delta
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    # Same value; gradient of CE over (c - constant shift) equals MM's gradient.
    assert_same(loss_value_and_grad(loss, labels, c),
                loss_value_and_grad(
                    lambda y, z: ce(y, 19.0 * keras.ops.subtract(z, shifted)), labels, c),
                rtol=1e-5)
    assert np.all(delta > 0) and np.all(delta < 1)


def test_max_margin_zero_distance_has_zero_margin():
    c = np.array([[0.5, 0.5, -0.2], [0.1, 0.7, 0.3]], "float32")
    labels = np.array([0, 1])
    loss = km.losses.MaxMarginLoss(0.6, 1.5, 10.0)
    delta = to_numpy(loss.sample_margins(keras.ops.convert_to_tensor(labels, "int32"),
                                         keras.ops.convert_to_tensor(c)))
    assert delta[0] == 0.0
    assert delta[1] == pytest.approx(np.exp(-0.4 - 0.9), rel=1e-5)


# ---------------------------------------------------------------------- extreme inputs

EXTREME = np.array([[1.0, -1.0, 1.0, -1.0], [-1.0, -1.0, -1.0, 1.0], [-1.0, 1.0, 1.0, 1.0],
                    [0.999, -0.999, 0.0, 0.2]], "float32")
EXTREME_LABELS = np.array([1, 0, 0, 1])


@pytest.mark.parametrize("make", [
    lambda: km.losses.ArcFaceLoss(0.5, 64.0),
    lambda: km.losses.ArcFaceLoss(3.0, 64.0),
    lambda: km.losses.SphereFaceLoss(4.0, 64.0),
    lambda: km.losses.CombinedMarginLoss(1.35, 0.5, 0.2, 64.0),
    lambda: km.losses.CosFaceLoss(0.35, 64.0),
    lambda: km.losses.LMSoftmaxLoss(64.0),
    lambda: km.losses.GMSoftmaxLoss(1.0, 0.5, 0.0, 1.0, 64.0),
    lambda: km.losses.MaxMarginLoss(0.6, 1.5, 64.0, class_counts=[100, 50, 10, 1]),
    lambda: km.losses.KPSLoss([100, 50, 10, 1], scale=50.0, gradient_adjustment=True),
    lambda: km.losses.SampleMarginLoss(km.losses.NormFaceLoss(64.0)),
])
def test_extreme_cosines_are_finite_float32(make):
    value, grad = loss_value_and_grad(make(), EXTREME_LABELS, EXTREME, "float32")
    assert np.isfinite(value) and np.all(np.isfinite(grad)), (value, grad)


def test_lm_softmax_scale_64_float32_is_stable():
    """Target at -1, others at +1: the naive form overflows exp(128) in float32."""
    c = np.array([[-1.0, 1.0, 1.0, 1.0], [1.0, -1.0, -1.0, -1.0]], "float32")
    labels = np.array([0, 0])
    value, grad = loss_value_and_grad(km.losses.LMSoftmaxLoss(64.0), labels, c)
    expected = np.mean([2.0 + np.log(3) / 64, -2.0 + np.log(3) / 64])
    assert value == pytest.approx(expected, rel=1e-5)
    assert np.all(np.isfinite(grad))


def test_lmsce_large_logits_are_finite():
    x = np.array([[300.0, -300.0, 0.0, 80.0], [-100.0, 100.0, 100.0, -100.0]], "float32")
    value, grad = loss_value_and_grad(km.losses.LMSCELoss(1.0), np.array([1, 0]), x)
    assert np.isfinite(value) and np.all(np.isfinite(grad))


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


def test_float16_scores_compute_in_float32(reference):
    c, labels = inputs(reference)
    for loss in (km.losses.MaxMarginLoss(0.6, 1.5, 19.0), km.losses.KPSLoss(COUNTS),
                 km.losses.SampleMarginLoss(), km.losses.ArcFaceLoss(0.1, 64.0)):
        half = loss(labels, c.astype("float16"))
        assert keras.backend.standardize_dtype(half.dtype) == "float32"
        assert float(half) == pytest.approx(float(loss(labels, c)), rel=2e-2)


def test_label_formats_agree(reference):
    c, labels = inputs(reference)
    for loss in (km.losses.MaxMarginLoss(0.6, 1.5, 19.0), km.losses.KPSLoss(COUNTS),
                 km.losses.LMSCELoss(), km.losses.ArcFaceLoss(0.2, 16.0)):
        sparse = float(loss(labels, c))
        assert float(loss(labels[:, None], c)) == pytest.approx(sparse)
        assert float(loss(np.eye(10, dtype="float32")[labels], c)) == pytest.approx(sparse)


# ----------------------------------------------------------------- zero-centroid regulariser

def test_zero_centroid_matches_numpy_and_serializes():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(16, 10)).astype("float32")
    columns = kernel / np.linalg.norm(kernel, axis=0, keepdims=True)
    expected = 0.7 * np.sum(np.mean(columns, axis=1) ** 2)
    reg = km.regularizers.ZeroCentroid(0.7)
    assert float(reg(kernel)) == pytest.approx(expected, rel=1e-5)
    # Column scaling does not change it (prototypes are unit-normalised columns).
    assert float(reg(kernel * np.linspace(0.1, 5, 10, dtype="float32"))) == pytest.approx(
        expected, rel=1e-5)
    # Prototypes symmetric around zero: centroid zero.
    assert float(reg(np.concatenate([kernel[:, :5], -kernel[:, :5]], axis=1))) == \
        pytest.approx(0.0, abs=1e-7)
    value, grad = value_and_grad(lambda k: reg(k), kernel)
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
    restored = keras.regularizers.deserialize(keras.regularizers.serialize(reg))
    assert isinstance(restored, km.regularizers.ZeroCentroid) and restored.weight == 0.7
    with pytest.raises(ValueError, match="weight.*-1"):
        km.regularizers.ZeroCentroid(-1.0)


# ------------------------------------------------------------------ serialization / config

CONFIG_LOSSES = [
    lambda: km.losses.MaxMarginLoss(1.29, 1.528, 26.0, class_counts=COUNTS,
                                    ldam_max_margin=0.4, class_weights=[1.0] * 10),
    lambda: km.losses.MaxMarginLoss(0.6, 1.5, 19.0),
    lambda: km.losses.KPSLoss(COUNTS, max_margin=0.35, scale=16.0, n_base=40,
                              gradient_adjustment=True, max_scale=45.0),
    lambda: km.losses.LMSCELoss(0.5),
    lambda: km.losses.LMSoftmaxLoss(8.0),
    lambda: km.losses.GMSoftmaxLoss(1.2, 0.9, 0.1, -0.2, 12.0),
    lambda: km.losses.CombinedMarginLoss(1.2, 0.3, 0.1, 30.0),
    lambda: km.losses.NormFaceLoss(16.0),
    lambda: km.losses.CosFaceLoss(0.35, 64.0),
    lambda: km.losses.ArcFaceLoss(0.5, 64.0),
    lambda: km.losses.SphereFaceLoss(1.35, 30.0),
    lambda: km.losses.SampleMarginLoss(),
    lambda: km.losses.SampleMarginLoss(km.losses.LDAMLoss(COUNTS), weight=0.5),
    lambda: km.losses.SampleMarginLoss(keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), weight=0.25),
]


@pytest.mark.parametrize("make", CONFIG_LOSSES)
def test_config_round_trip(reference, make):
    c, labels = inputs(reference)
    loss = make()
    config = loss.get_config()
    json.dumps(config)
    clone = type(loss).from_config(config)
    assert clone.get_config() == config
    assert float(clone(labels, c)) == pytest.approx(float(loss(labels, c)), rel=1e-6)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is type(loss) and restored.get_config() == config


# ------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("make, pattern", [
    (lambda: km.losses.MaxMarginLoss(-0.1, 1.5, 19.0), r"delta_neg.*-0\.1"),
    (lambda: km.losses.MaxMarginLoss(0.6, -1.0, 19.0), r"beta.*-1"),
    (lambda: km.losses.MaxMarginLoss(0.6, 1.5, 0.0), r"scale.*0"),
    (lambda: km.losses.MaxMarginLoss(0.6, 1.5, 19.0, class_counts=[5, 0]), r"class_counts"),
    (lambda: km.losses.MaxMarginLoss(0.6, 1.5, 19.0, COUNTS, ldam_max_margin=-1),
     r"ldam_max_margin.*-1"),
    (lambda: km.losses.KPSLoss(COUNTS, max_margin=-0.5), r"max_margin.*-0\.5"),
    (lambda: km.losses.KPSLoss(COUNTS, scale=-15.0), r"scale.*-15"),
    (lambda: km.losses.KPSLoss(COUNTS, n_base=1.0), r"n_base.*1"),
    (lambda: km.losses.KPSLoss(COUNTS, max_scale=10.0), r"max_scale.*10"),
    (lambda: km.losses.KPSLoss(COUNTS, gradient_adjustment="yes"), r"gradient_adjustment.*yes"),
    (lambda: km.losses.KPSLoss([100, float("nan")]), r"class_counts"),
    (lambda: km.losses.KPSLoss(COUNTS, class_weights=[1.0] * 3), r"class_weights"),
    (lambda: km.losses.LMSCELoss(-0.3), r"lam.*-0\.3"),
    (lambda: km.losses.LMSoftmaxLoss(0.0), r"scale.*0"),
    (lambda: km.losses.GMSoftmaxLoss(0.4, 0.4, 0, 0, 5.0), r"alpha1.*0\.4"),
    (lambda: km.losses.GMSoftmaxLoss(1.0, 1.5, 0, 0, 5.0), r"alpha2.*1\.5"),
    (lambda: km.losses.GMSoftmaxLoss(1.0, 1.0, float("nan"), 0, 5.0), r"beta1.*nan"),
    (lambda: km.losses.GMSoftmaxLoss(1.0, 1.0, 0, 0, -5.0), r"scale.*-5"),
    (lambda: km.losses.CombinedMarginLoss(0.5, 0, 0, 5.0), r"m1.*0\.5"),
    (lambda: km.losses.CombinedMarginLoss(1, 3.5, 0, 5.0), r"m2.*3\.5"),
    (lambda: km.losses.CombinedMarginLoss(1, 0, -0.2, 5.0), r"m3.*-0\.2"),
    (lambda: km.losses.NormFaceLoss(-1.0), r"scale.*-1"),
    (lambda: km.losses.CosFaceLoss(-0.35, 64.0), r"margin.*-0\.35"),
    (lambda: km.losses.ArcFaceLoss(4.0, 64.0), r"margin.*4"),
    (lambda: km.losses.ArcFaceLoss(0.5, 0.0), r"scale.*0"),
    (lambda: km.losses.SphereFaceLoss(0.5, 64.0), r"margin.*0\.5"),
    (lambda: km.losses.SampleMarginLoss("ce"), r"base_loss.*'ce'"),
    (lambda: km.losses.SampleMarginLoss(weight=-0.5), r"weight.*-0\.5"),
])
def test_bad_construction_raises(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def test_bad_call_inputs_raise(reference):
    c, labels = inputs(reference)
    with pytest.raises(ValueError, match="class_counts"):
        km.losses.KPSLoss(COUNTS[:5])(labels % 5, c)
    with pytest.raises(ValueError, match="label 10"):
        km.losses.MaxMarginLoss(0.6, 1.5, 19.0)(np.array([0, 1, 2, 3, 4, 5, 6, 10]), c)
    with pytest.raises(ValueError, match="y_pred"):
        km.losses.ArcFaceLoss(0.5, 64.0)(labels, c[0])


@pytest.mark.parametrize("scale", [15.0, 64.0])
def test_kps_max_scale_follows_a_large_scale(scale):
    """Without ``max_scale`` the clip is ``max(50, scale)``: the authors' 50 at
    scale 15, and a scale above 50 needs no second argument."""
    loss = km.losses.KPSLoss(COUNTS, scale=scale)
    assert loss.max_scale == max(50.0, scale)
    expected = km.priors.kps_scales(COUNTS, scale, max(50.0, scale))
    np.testing.assert_allclose(loss.kps_scales, expected)
    if scale > 50:   # nothing above the base scale is left to adjust to
        np.testing.assert_allclose(loss.kps_scales, scale)
    reloaded = km.losses.KPSLoss.from_config(loss.get_config())
    np.testing.assert_allclose(reloaded.kps_scales, loss.kps_scales)
