"""Shared helpers of the loss tests: constants, independent numpy (float64)
implementations of the formulas, and the bodies of tests parametrised per loss module.
"""

import keras
import numpy as np
import pytest

import keras_margins as km
from backend_utils import fit_and_roundtrip, float64_enabled, loss_value_and_grad, small_model


COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
DRW = "drw_weights_epoch_160_plus"
TAIL_LABELS = np.array([8, 9, 9, 8, 0, 9, 8, 1])
# The baselines' tail labels (focal, class-balanced, logit-adjusted, influence-balanced, EQLv2).
BASELINE_TAIL_LABELS = np.array([8, 9, 1, 9, 3, 8, 5, 9])


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


# Independent numpy implementations of SPEC.md "Baselines the seeds compare against".


# Independent numpy implementations of SPEC.md "Baselines the seeds compare against".
def _lse(z):
    m = z.max(-1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(-1, keepdims=True)))[:, 0]


def _ce(x, y):
    return _lse(x) - x[np.arange(len(y)), y]


def _onehot(y, c):
    return np.eye(c)[y]


def np_focal(x, y, gamma, weights=None):
    ce = _ce(x, y) * (1.0 if weights is None else np.asarray(weights)[y])
    return np.mean((1.0 - np.exp(-ce)) ** gamma * ce)


def np_class_balanced(x, y, counts, beta, loss_type, gamma):
    counts = np.asarray(counts, float)
    w = (1.0 - beta) / (1.0 - beta ** counts)
    w = w * len(counts) / w.sum()
    if loss_type == "softmax":
        return np.mean(w[y] * _ce(x, y))
    t = _onehot(y, x.shape[1])
    p = 1.0 / (1.0 + np.exp(-x))
    bce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    if loss_type == "focal":
        bce = bce * (1.0 - np.where(t == 1, p, 1 - p)) ** gamma
    return np.sum(w[y][:, None] * bce) / len(y)


def np_logit_adjusted(x, y, counts, tau):
    pi = np.asarray(counts, float) / np.sum(counts)
    return np.mean(_ce(x + np.log(pi ** tau + 1e-12), y))


def np_influence_balanced(y_pred, y, counts, alpha, gamma):
    x, h = y_pred[:, :-1], y_pred[:, -1]
    w = 1.0 / np.asarray(counts, float)
    w = w * len(counts) / w.sum()
    ce = w[y] * _ce(x, y)
    softmax = np.exp(x - _lse(x)[:, None])
    ib = alpha / (np.abs(softmax - _onehot(y, x.shape[1])).sum(1) * h + 0.001)
    loss = ce * ib
    if gamma is not None:
        loss = loss * (1.0 - np.exp(-ce)) ** gamma
    return np.mean(loss)


def numeric_grad(function, x, step=1e-6):
    grad = np.zeros_like(x)
    for index in np.ndindex(*x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += step
        minus[index] -= step
        grad[index] = (function(plus) - function(minus)) / (2 * step)
    return grad


# ------------------------------------------ tables shared by the per-module tests

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


def check_matches_numpy_formula(reference, name):
    c, reference_labels = inputs(reference, dtype="float64")
    weights = np.asarray(reference["class_lists"][DRW])
    make, formula = NUMPY_CASES[name]
    loss = make() or _weighted_case(name, weights)
    for labels in (reference_labels, TAIL_LABELS):
        expected = formula(c, labels, weights)
        assert float(loss(labels, c.astype("float32"))) == pytest.approx(expected, rel=2e-5)


# Baseline reference entries -> (loss, y_pred, numpy function of (y_pred, labels)).
REFERENCE_KEYS = [
    "focal_ldamrepo_gamma1", "focal_ldamrepo_gamma1_drw_stage2",
    "cb_softmax_beta0.9999", "cb_sigmoid_beta0.9999", "cb_focal_beta0.9999",
    "logit_adjustment_tau1.0", "logit_adjustment_tau0.5",
    "ib_alpha1000_ibreweight", "ib_focal_alpha1000_gamma1_ibreweight",
]


def build_case(reference, key):
    entry = reference["losses"][key]
    inputs = reference["inputs"]
    hp = entry["hyperparams"]
    counts = inputs["cls_num_list"]
    logits = np.asarray(inputs["logits"], dtype="float64")
    if key.startswith("focal"):
        loss = km.losses.FocalLoss(gamma=hp["gamma"], class_weights=hp["weight"])
        return loss, logits, lambda z, y: np_focal(z, y, hp["gamma"], hp["weight"])
    if key.startswith("cb_"):
        loss_type = key.split("_")[1]
        gamma = hp["gamma"] if hp["gamma"] is not None else 1.0
        loss = km.losses.ClassBalancedLoss(counts, beta=hp["beta"], loss_type=loss_type,
                                           gamma=gamma)
        np.testing.assert_allclose(loss.weights, hp["weights"], rtol=1e-9)
        return loss, logits, lambda z, y: np_class_balanced(
            z, y, counts, hp["beta"], loss_type, gamma)
    if key.startswith("logit_adjustment"):
        np.testing.assert_allclose(km.priors.priors(counts), hp["base_probs"], rtol=1e-9)
        loss = km.losses.LogitAdjustedLoss(counts, tau=hp["tau"])
        return loss, logits, lambda z, y: np_logit_adjusted(z, y, counts, hp["tau"])
    assert key.startswith("ib_")
    gamma = hp.get("gamma")
    loss = km.losses.InfluenceBalancedLoss(counts, alpha=hp["alpha"], gamma=gamma,
                                           epsilon=hp["epsilon"])
    np.testing.assert_allclose(loss.weights, hp["weight"], rtol=1e-9)
    y_pred = np.concatenate([logits, np.asarray(inputs["ib_features_l1"])[:, None]], -1)
    return loss, y_pred, lambda z, y: np_influence_balanced(z, y, counts, hp["alpha"], gamma)


def check_reference_matches_numpy_formula(reference, key):
    """The numpy formulas used for the tail-class test reproduce the references."""
    entry = reference["losses"][key]
    _, y_pred, formula = build_case(reference, key)
    labels = np.asarray(reference["inputs"]["labels"])
    rtol = 1e-6 if entry["dtype"] == "float32" else 1e-12
    np.testing.assert_allclose(formula(y_pred, labels), float(entry["mean"]), rtol=rtol)


def check_tail_labels_against_numpy(reference, key):
    loss, y_pred, formula = build_case(reference, key)
    labels = BASELINE_TAIL_LABELS
    expected = formula(y_pred, labels)
    expected_grad = numeric_grad(lambda z: formula(z, labels), y_pred)
    with float64_enabled():
        loss64 = type(loss).from_config({**loss.get_config(), "dtype": "float64"})
        value, grad = loss_value_and_grad(loss64, labels, y_pred, "float64")
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-8)
    value32, grad32 = loss_value_and_grad(loss, labels, y_pred, "float32")
    np.testing.assert_allclose(value32, expected, rtol=1e-4)
    np.testing.assert_allclose(grad32, expected_grad, rtol=1e-3, atol=1e-5)


# Identities.
def _ce_value_and_grad(reference, labels):
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return loss_value_and_grad(cross_entropy, labels, reference["inputs"]["logits"])


def check_reduces_to_cross_entropy(reference, loss_factory):
    labels = BASELINE_TAIL_LABELS
    ce_value, ce_grad = _ce_value_and_grad(reference, labels)
    loss = loss_factory(reference["inputs"]["cls_num_list"])
    value, grad = loss_value_and_grad(loss, labels, reference["inputs"]["logits"])
    np.testing.assert_allclose(value, ce_value, rtol=1e-6)
    np.testing.assert_allclose(grad, ce_grad, rtol=1e-5, atol=1e-7)


# Short fits on real long-tailed data, with save / load round trips.
def _logits_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def check_fit_logit_losses(fashion_mnist_lt_small, tmp_path, name):
    x, y, counts = fashion_mnist_lt_small
    loss = {
        "focal": lambda: km.losses.FocalLoss(gamma=1.0),
        "cb_focal": lambda: km.losses.ClassBalancedLoss(counts, loss_type="focal",
                                                        gamma=2.0),
        "logit_adjusted": lambda: km.losses.LogitAdjustedLoss(counts, tau=1.0),
    }[name]()
    history, _ = fit_and_roundtrip(_logits_model(), loss, x, y, tmp_path)
    assert history.history["loss"][0] > 0


def _fit_cases(counts):
    return {
        "mm_ldam_drw": (lambda: km.losses.MaxMarginLoss(1.29, 1.528, 26.0, class_counts=counts),
                        True, None, lambda: [km.callbacks.DeferredReweighting(counts, 0)]),
        "kps_ga": (lambda: km.losses.KPSLoss(counts), True, None,
                   lambda: [km.callbacks.GradientAdjustment(0)]),
        "lmsce": (lambda: km.losses.LMSCELoss(0.3), False, None, None),
        "lm_softmax_zero_centroid": (lambda: km.losses.LMSoftmaxLoss(5.0), True,
                                     km.regularizers.ZeroCentroid(1.0), None),
        "gm_softmax": (lambda: km.losses.GMSoftmaxLoss(1.0, 0.8, 0.0, 0.5, 16.0), True,
                       None, None),
        "sample_margin": (lambda: km.losses.SampleMarginLoss(
            km.losses.LDAMLoss(counts), weight=0.5), True, None,
            lambda: [km.callbacks.DeferredReweighting(counts, 0)]),
    }


def check_fit_and_roundtrip(fashion_mnist_lt_small, tmp_path, name):
    x, y, counts = fashion_mnist_lt_small
    make, cosine, regularizer, callbacks = _fit_cases(counts)[name]
    model = small_model(cosine=cosine, head_regularizer=regularizer)
    loss = make()
    history, reloaded = fit_and_roundtrip(model, loss, x, y, tmp_path, epochs=1,
                                          callbacks=callbacks() if callbacks else None,
                                          batch_size=128)
    assert np.isfinite(history.history["loss"][-1])
    if regularizer is not None:
        head = reloaded.layers[-1]
        assert isinstance(head.kernel_regularizer, km.regularizers.ZeroCentroid)
        assert head.kernel_regularizer.weight == regularizer.weight
    if name == "kps_ga":
        assert reloaded.loss.gradient_adjustment is True
    if name in ("mm_ldam_drw", "sample_margin"):
        switched = reloaded.loss if name == "mm_ldam_drw" else reloaded.loss.base_loss
        np.testing.assert_allclose(switched.class_weights,
                                   km.priors.class_balanced_weights(counts, 0.9999))
