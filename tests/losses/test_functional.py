"""Functional forms: each equals its class's unreduced per-sample output.

For every loss class of ``keras_margins.losses`` the functional form (same
hyper-parameters, per-sample values, no reduction) is compared with the class
built with ``reduction=None`` on fixed inputs, with and without class weights
where the class takes them; then bad input. Run once per backend.
"""

import keras
import numpy as np
import pytest

import keras_margins as km
from backend_utils import to_numpy

COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
WEIGHTS = np.linspace(0.4, 2.2, 10)
LABELS = np.array([0, 9, 8, 1, 9, 5, 3, 9, 8, 2, 7, 6])


def _cosines(seed=0):
    rng = np.random.default_rng(seed)
    cosines = rng.uniform(-0.9, 0.9, size=(len(LABELS), 10))
    cosines[0, LABELS[0]] = -0.97  # a target past pi for ArcFace(0.5)
    cosines[1, :] = 0.3            # ties: the hardest negative is the first
    return cosines.astype("float32")


def _logits(seed=1):
    return (3.0 * np.random.default_rng(seed).normal(size=(len(LABELS), 10))).astype("float32")


def _ib_inputs():
    norms = np.abs(np.random.default_rng(2).normal(size=(len(LABELS), 1))) * 4 + 0.1
    return np.concatenate([_logits(), norms.astype("float32")], axis=1)


# name -> (class factory(**extra), functional(y, x, **extra), inputs, takes class weights)
F = km.losses
CASES = {
    "ldam": (lambda **k: F.LDAMLoss(COUNTS, max_margin=0.4, scale=16.0, **k),
             lambda y, x, **k: F.ldam_loss(y, x, COUNTS, max_margin=0.4, scale=16.0, **k),
             _cosines, True),
    "ldam_margins": (lambda **k: F.LDAMLoss(COUNTS, scale=16.0, **k),
                     lambda y, x, **k: F.ldam_loss(
                         y, x, margins=km.priors.ldam_margins(COUNTS, 0.5), scale=16.0, **k),
                     _cosines, True),
    "elm": (lambda **k: F.ELMLoss(COUNTS, lam=0.5, scale=16.0, **k),
            lambda y, x, **k: F.elm_loss(y, x, COUNTS, lam=0.5, scale=16.0, **k),
            _cosines, True),
    "elm_no_target_margin": (
        lambda **k: F.ELMLoss(COUNTS, target_margin=False, **k),
        lambda y, x, **k: F.elm_loss(y, x, COUNTS, target_margin=False, **k),
        _cosines, True),
    "max_margin": (lambda **k: F.MaxMarginLoss(0.6, 1.5, 19.0, **k),
                   lambda y, x, **k: F.max_margin_loss(y, x, 0.6, 1.5, 19.0, **k),
                   _cosines, True),
    "max_margin_ldam": (
        lambda **k: F.MaxMarginLoss(1.29, 1.528, 26.0, class_counts=COUNTS, **k),
        lambda y, x, **k: F.max_margin_loss(y, x, 1.29, 1.528, 26.0, class_counts=COUNTS, **k),
        _cosines, True),
    "kps": (lambda **k: F.KPSLoss(COUNTS, max_margin=0.3, **k),
            lambda y, x, **k: F.kps_loss(y, x, COUNTS, max_margin=0.3, **k),
            _cosines, True),
    "kps_ga": (lambda **k: F.KPSLoss(COUNTS, scale=16.0, gradient_adjustment=True,
                                     max_scale=40.0, **k),
               lambda y, x, **k: F.kps_loss(y, x, COUNTS, scale=16.0, gradient_adjustment=True,
                                            max_scale=40.0, **k),
               _cosines, True),
    "lmsce": (lambda **k: F.LMSCELoss(0.4, **k),
              lambda y, x, **k: F.lmsce_loss(y, x, lam=0.4, **k), _logits, False),
    "lm_softmax": (lambda **k: F.LMSoftmaxLoss(8.0, **k),
                   lambda y, x, **k: F.lm_softmax_loss(y, x, 8.0, **k), _cosines, True),
    "gm_softmax": (lambda **k: F.GMSoftmaxLoss(1.2, 0.7, -0.3, 0.4, 16.0, **k),
                   lambda y, x, **k: F.gm_softmax_loss(y, x, 1.2, 0.7, -0.3, 0.4, 16.0, **k),
                   _cosines, False),
    "sample_margin": (lambda **k: F.SampleMarginLoss(**k),
                      lambda y, x, **k: F.sample_margin_loss(y, x, **k), _cosines, False),
    "combined": (lambda **k: F.CombinedMarginLoss(1.35, 0.3, 0.2, 30.0, **k),
                 lambda y, x, **k: F.combined_margin_loss(y, x, 1.35, 0.3, 0.2, 30.0, **k),
                 _cosines, False),
    "norm_face": (lambda **k: F.NormFaceLoss(16.0, **k),
                  lambda y, x, **k: F.norm_face_loss(y, x, 16.0, **k), _cosines, False),
    "cos_face": (lambda **k: F.CosFaceLoss(0.35, 30.0, **k),
                 lambda y, x, **k: F.cos_face_loss(y, x, 0.35, 30.0, **k), _cosines, False),
    "arc_face": (lambda **k: F.ArcFaceLoss(0.5, 30.0, **k),
                 lambda y, x, **k: F.arc_face_loss(y, x, 0.5, 30.0, **k), _cosines, False),
    "arc_face_insightface": (
        lambda **k: F.ArcFaceLoss(0.5, 30.0, past_pi="insightface", **k),
        lambda y, x, **k: F.arc_face_loss(y, x, 0.5, 30.0, past_pi="insightface", **k),
        _cosines, False),
    "arc_face_easy": (lambda **k: F.ArcFaceLoss(0.5, 30.0, past_pi="easy", **k),
                      lambda y, x, **k: F.arc_face_loss(y, x, 0.5, 30.0, past_pi="easy", **k),
                      _cosines, False),
    "sphere_face": (lambda **k: F.SphereFaceLoss(1.35, 30.0, **k),
                    lambda y, x, **k: F.sphere_face_loss(y, x, 1.35, 30.0, **k),
                    _cosines, False),
    "focal": (lambda **k: F.FocalLoss(gamma=2.0, **k),
              lambda y, x, **k: F.focal_loss(y, x, gamma=2.0, **k), _logits, True),
    "logit_adjusted": (lambda **k: F.LogitAdjustedLoss(COUNTS, tau=0.7, **k),
                       lambda y, x, **k: F.logit_adjusted_loss(y, x, COUNTS, tau=0.7, **k),
                       _logits, False),
    "vs": (lambda **k: F.VSLoss(COUNTS, gamma=0.3, tau=1.0, **k),
           lambda y, x, **k: F.vs_loss(y, x, COUNTS, gamma=0.3, tau=1.0, **k), _logits, True),
    "lade": (lambda **k: F.LADELoss(COUNTS, alpha=0.5, remine_lambda=0.2, **k),
             lambda y, x, **k: F.lade_loss(y, x, COUNTS, alpha=0.5, remine_lambda=0.2, **k),
             _logits, False),
    "label_aware_smoothing": (
        lambda **k: F.LabelAwareSmoothingLoss(COUNTS, 0.4, 0.1, "convex", **k),
        lambda y, x, **k: F.label_aware_smoothing_loss(y, x, COUNTS, 0.4, 0.1, "convex", **k),
        _logits, True),
    **{f"class_balanced_{kind}": (
        lambda kind=kind, **k: F.ClassBalancedLoss(COUNTS, beta=0.999, loss_type=kind,
                                                   gamma=0.5, **k),
        lambda y, x, kind=kind, **k: F.class_balanced_loss(y, x, COUNTS, beta=0.999,
                                                           loss_type=kind, gamma=0.5, **k),
        _logits, False) for kind in ("softmax", "sigmoid", "focal")},
    "influence_balanced": (lambda **k: F.InfluenceBalancedLoss(COUNTS, alpha=100.0, **k),
                           lambda y, x, **k: F.influence_balanced_loss(
                               y, x, COUNTS, alpha=100.0, **k), _ib_inputs, False),
    "influence_balanced_focal": (
        lambda **k: F.InfluenceBalancedLoss(COUNTS, alpha=100.0, gamma=1.5, **k),
        lambda y, x, **k: F.influence_balanced_loss(y, x, COUNTS, alpha=100.0, gamma=1.5, **k),
        _ib_inputs, False),
}


def _per_sample(loss, labels, y_pred):
    return to_numpy(loss(labels, y_pred)).astype("float64")


def test_every_loss_class_has_a_functional_case():
    covered = {type(make()).__name__ for make, _, _, _ in CASES.values()}
    classes = {name for name in km.losses.__all__
               if isinstance(getattr(km.losses, name), type)
               and issubclass(getattr(km.losses, name), keras.losses.Loss)}
    # EQLv2 (stateful) has its own test below; MarginLoss is the abstract base.
    assert classes - covered == {"MarginLoss", "EqualizationLossV2"}


def test_functional_forms_are_exported_and_documented():
    functions = [name for name in km.losses.__all__
                 if callable(getattr(km.losses, name))
                 and not isinstance(getattr(km.losses, name), type)]
    assert len(functions) == 21
    for name in functions:
        doc = getattr(km.losses, name).__doc__
        assert doc and "Args:" in doc and "Reference:" in doc, name
        assert "no reduction" in doc or "Per-sample" in doc, name


@pytest.mark.parametrize("name", sorted(CASES))
def test_functional_equals_class_without_reduction(name):
    make, functional, inputs, takes_weights = CASES[name]
    y_pred = inputs()
    want = _per_sample(make(reduction=None), LABELS, y_pred)
    got = to_numpy(functional(LABELS, y_pred)).astype("float64")
    assert got.shape == (len(LABELS),)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert np.all(np.isfinite(got))
    # one-hot and (B, 1) labels give the same values
    np.testing.assert_allclose(to_numpy(functional(np.eye(10)[LABELS], y_pred)), got,
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(to_numpy(functional(LABELS[:, None], y_pred)), got,
                               rtol=1e-6, atol=1e-6)
    if takes_weights:
        weighted = to_numpy(functional(LABELS, y_pred, class_weights=WEIGHTS))
        want = _per_sample(make(reduction=None, class_weights=WEIGHTS), LABELS, y_pred)
        np.testing.assert_allclose(weighted, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["ldam", "kps_ga", "focal", "class_balanced_focal",
                                  "influence_balanced_focal", "arc_face"])
def test_class_reduction_of_functional_values(name):
    """Default reduction of the class = the mean (weighted where it says so)."""
    make, functional, inputs, takes_weights = CASES[name]
    y_pred = inputs()
    kwargs = {"class_weights": WEIGHTS} if takes_weights else {}
    loss = make(**kwargs)
    values = to_numpy(functional(LABELS, y_pred, **kwargs)).astype("float64")
    if loss.reduction == "mean_with_sample_weight" and loss.class_weights is not None:
        expected = values.sum() / loss.class_weights[LABELS].sum()
    else:
        expected = values.mean()
    assert float(loss(LABELS, y_pred)) == pytest.approx(expected, rel=1e-5)


def test_class_weighted_values_multiply_the_unweighted_ones():
    """For the linear losses ``class_weights`` multiply each sample's loss by ``w_y``."""
    x = _cosines()
    for functional in (F.ldam_loss, F.kps_loss):
        plain = to_numpy(functional(LABELS, x, COUNTS))
        weighted = to_numpy(functional(LABELS, x, COUNTS, class_weights=WEIGHTS))
        np.testing.assert_allclose(weighted, plain * WEIGHTS[LABELS], rtol=1e-6)
    # focal: the weight also enters the modulation (LDAM-DRW code's form)
    logits = _logits()
    ce = to_numpy(F.focal_loss(LABELS, logits, gamma=0.0)).astype("float64")
    weighted = WEIGHTS[LABELS] * ce
    np.testing.assert_allclose(to_numpy(F.focal_loss(LABELS, logits, 2.0, class_weights=WEIGHTS)),
                               (1 - np.exp(-weighted)) ** 2 * weighted, rtol=1e-5)


def test_equalization_functional_equals_class_with_its_statistics():
    logits = _logits()
    loss = F.EqualizationLossV2(num_classes=10, reduction=None)
    stats = loss.statistics_layer()
    for step in range(3):
        positive = to_numpy(stats.positive_gradients)
        negative = to_numpy(stats.negative_gradients)
        want = to_numpy(F.equalization_loss_v2(LABELS, logits, positive, negative))
        got = to_numpy(loss(LABELS, logits))  # reads, then updates, the statistics
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert np.all(to_numpy(stats.negative_gradients) > 0)
    # zero statistics: unit weights, plain sigmoid cross-entropy summed over classes
    zeros = np.zeros(10)
    plain = to_numpy(F.equalization_loss_v2(LABELS, logits, zeros, zeros))
    t = np.eye(10)[LABELS]
    bce = np.logaddexp(0.0, -np.where(t == 1, logits, -logits)).sum(-1)
    np.testing.assert_allclose(plain, bce, rtol=1e-5)


def test_float16_inputs_compute_in_float32():
    x = _cosines().astype("float16")
    values = F.ldam_loss(LABELS, x, COUNTS)
    assert keras.backend.standardize_dtype(values.dtype) == "float32"
    np.testing.assert_allclose(to_numpy(values), to_numpy(F.ldam_loss(LABELS, _cosines(), COUNTS)),
                               rtol=2e-2, atol=2e-2)


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("call, pattern", [
    (lambda x: F.ldam_loss(LABELS, x), r"exactly one of `class_counts` and `margins`.*neither"),
    (lambda x: F.ldam_loss(LABELS, x, COUNTS, margins=np.ones(10)), r"both"),
    (lambda x: F.ldam_loss(LABELS, x, margins=[0.1, 0.2, 0.3]), r"`margins` has 3 entries"),
    (lambda x: F.ldam_loss(LABELS, x, margins=[0.1, -0.2] * 5), r"`margins`"),
    (lambda x: F.ldam_loss(LABELS, x, COUNTS, scale=0.0), r"`scale`.*0"),
    (lambda x: F.ldam_loss(LABELS, x, COUNTS, class_weights=[1.0] * 3),
     r"`class_weights` has 3 entries"),
    (lambda x: F.elm_loss(LABELS, x, COUNTS, lam=-1.0), r"`lam`.*-1"),
    (lambda x: F.elm_loss(LABELS, x, COUNTS, target_margin="no"), r"`target_margin`"),
    (lambda x: F.kps_loss(LABELS, x, COUNTS[:5]), r"has 5 entries"),
    (lambda x: F.kps_loss(LABELS, x, COUNTS, gradient_adjustment=1), r"gradient_adjustment"),
    (lambda x: F.max_margin_loss(LABELS, x, -0.1, 1.5, 19.0), r"`delta_neg`.*-0\.1"),
    (lambda x: F.lmsce_loss(LABELS, x, lam=-0.3), r"`lam`.*-0\.3"),
    (lambda x: F.lm_softmax_loss(LABELS, x, 0.0), r"`scale`.*0"),
    (lambda x: F.gm_softmax_loss(LABELS, x, 0.4, 0.4, 0, 0, 5.0), r"`alpha1`.*0\.4"),
    (lambda x: F.combined_margin_loss(LABELS, x, 1.0, 3.5, 0.0, 5.0), r"`m2`.*3\.5"),
    (lambda x: F.arc_face_loss(LABELS, x, 0.5, 30.0, past_pi="clamp"), r"`past_pi`.*clamp"),
    (lambda x: F.combined_margin_loss(LABELS, x, 1.35, 0.3, 0.0, 30.0, past_pi="easy"),
     r"m1 = 1"),
    (lambda x: F.sphere_face_loss(LABELS, x, 0.5, 30.0), r"`margin`.*0\.5"),
    (lambda x: F.focal_loss(LABELS, x, gamma=-1.0), r"`gamma`.*-1"),
    (lambda x: F.class_balanced_loss(LABELS, x, COUNTS, loss_type="softmx"), r"softmx"),
    (lambda x: F.class_balanced_loss(LABELS, x, COUNTS, beta=1.0), r"`beta`"),
    (lambda x: F.logit_adjusted_loss(LABELS, x, [10, 0] * 5), r"`class_counts`"),
    (lambda x: F.influence_balanced_loss(LABELS, x, COUNTS), r"\(batch_size, 11\)"),
    (lambda x: F.equalization_loss_v2(LABELS, x, np.zeros(10), np.zeros(10), mu=np.nan),
     r"`mu`"),
    (lambda x: F.norm_face_loss(np.array([0, 10] * 6), x, 16.0), r"label 10"),
    (lambda x: F.norm_face_loss(LABELS, x[0], 16.0), r"y_pred"),
    (lambda x: F.cos_face_loss(LABELS[:, None].repeat(3, 1), x, 0.35, 16.0), r"y_true"),
])
def test_bad_input_raises(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call(_cosines())
