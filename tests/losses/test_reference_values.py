"""Every loss against the values of ../shared/reference/reference_values.json.

The table below maps each entry of ``reference["losses"]`` (the authors' code,
or an independent float64 implementation) to the library loss built from the
entry's hyperparameters and the shared class lists; one parametrised test
checks the mean, the gradient and the per-sample values in float32 (rtol 1e-4)
and, for the entries computed in float64, in float64 (rtol 1e-6). An entry
without a row in the table fails ``test_every_reference_entry_has_a_constructor``.
"""

import dataclasses
from typing import Callable

import numpy as np
import pytest

import keras_margins as km
from backend_utils import float64_enabled, loss_value_and_grad, to_numpy

DRW = "drw_weights_epoch_160_plus"


def _kps(hp, shared, dtype, ga):
    lists = shared["class_lists"]
    loss = km.losses.KPSLoss(shared["counts"], max_margin=hp["max_m"], scale=hp["s"],
                             gradient_adjustment=ga, dtype=dtype)
    # The authors' code derives margins and GA scales from the reversed
    # radius list; on integer counts that differs from SPEC's formula by
    # ~1e-4 (see test_kps_formula_priors_are_close_to_authors_lists). To
    # check the loss mechanism at 1e-6, use the authors' per-class lists.
    loss.radii = np.asarray(lists["kps_s_list_radius"])
    loss.margins = np.asarray(lists["kps_m_list_max_m_0.2"])
    loss.kps_scales = np.asarray(lists["kps_ga_scale_per_class_s15"])
    return loss


def _checked(loss, values, expected):
    """The loss's derived per-class vector equals the authors' (rtol 1e-9)."""
    np.testing.assert_allclose(values(loss), expected, rtol=1e-9)
    return loss


def _ldam(hp, shared, dtype):
    return km.losses.LDAMLoss(shared["counts"], max_margin=hp["max_m"], scale=hp["s"],
                              class_weights=hp["weight"], dtype=dtype)


def _elm(hp, shared, dtype):
    return km.losses.ELMLoss(shared["counts"], lam=hp["lamda"], max_margin=hp["max_m"],
                             scale=hp["s"], class_weights=hp["weight"], dtype=dtype)


def _focal(hp, shared, dtype):
    return km.losses.FocalLoss(gamma=hp["gamma"], class_weights=hp["weight"], dtype=dtype)


def _class_balanced(loss_type):
    def build(hp, shared, dtype):
        gamma = hp["gamma"] if hp["gamma"] is not None else 1.0
        loss = km.losses.ClassBalancedLoss(shared["counts"], beta=hp["beta"],
                                           loss_type=loss_type, gamma=gamma, dtype=dtype)
        return _checked(loss, lambda loss: loss.weights, hp["weights"])
    return build


def _logit_adjusted(hp, shared, dtype):
    np.testing.assert_allclose(km.priors.priors(shared["counts"]), hp["base_probs"], rtol=1e-9)
    return km.losses.LogitAdjustedLoss(shared["counts"], tau=hp["tau"], dtype=dtype)


def _influence_balanced(hp, shared, dtype):
    loss = km.losses.InfluenceBalancedLoss(shared["counts"], alpha=hp["alpha"],
                                           gamma=hp.get("gamma"), epsilon=hp["epsilon"],
                                           dtype=dtype)
    return _checked(loss, lambda loss: loss.weights, hp["weight"])


def _arc_or_cos(cls):
    return lambda hp, shared, dtype: cls(margin=hp["margin"], scale=hp["scale"], dtype=dtype)


@dataclasses.dataclass(frozen=True)
class Case:
    """How to build one entry's loss, and which tolerances its checks had.

    ``family`` keeps each group's absolute tolerances: "ldam" (LDAM / ELM),
    "margin" (the other margin losses) and "baseline" (focal, class-balanced,
    logit-adjusted, influence-balanced). ``float64``: the entry was computed in
    float64 (the CB / LA references were computed in float32 by TensorFlow).
    """

    build: Callable
    family: str
    float64: bool = True


def _lmsce(hp, shared, dtype):
    return km.losses.LMSCELoss(lam=hp["reg_lambda"], dtype=dtype)


def _lm_softmax(hp, shared, dtype):
    return km.losses.LMSoftmaxLoss(scale=hp["scale"], dtype=dtype)


def _normface(hp, shared, dtype):
    return km.losses.NormFaceLoss(scale=hp["scale"], dtype=dtype)


CASES = {
    # LDAM and ELM (keras_margins.losses.ldam); DRW weights in the hyperparameters.
    "ldam": Case(_ldam, "ldam"),
    "ldam_drw_stage2": Case(_ldam, "ldam"),
    "elm_lambda_1.0": Case(_elm, "ldam"),
    "elm_lambda_0.5": Case(_elm, "ldam"),
    "elm_lambda_0.1": Case(_elm, "ldam"),
    "elm_lambda_1.0_drw_stage2": Case(_elm, "ldam"),
    # KPS with the authors' per-class lists.
    "kps_stage1": Case(lambda hp, shared, dtype: _kps(hp, shared, dtype, False), "margin"),
    "kps_ga_stage": Case(lambda hp, shared, dtype: _kps(hp, shared, dtype, True), "margin"),
    "lmsce_lambda_0.3": Case(_lmsce, "margin"),
    "lmsce_lambda_1.0": Case(_lmsce, "margin"),
    "lm_softmax_s5": Case(_lm_softmax, "margin"),
    "normface_s5": Case(_normface, "margin"),
    "normface_s64": Case(_normface, "margin"),
    "cosface_m0.35_s64": Case(_arc_or_cos(km.losses.CosFaceLoss), "margin"),
    "cosface_m0.1_s5": Case(_arc_or_cos(km.losses.CosFaceLoss), "margin"),
    "arcface_m0.1_s64": Case(_arc_or_cos(km.losses.ArcFaceLoss), "margin"),
    "arcface_m0.1_s5": Case(_arc_or_cos(km.losses.ArcFaceLoss), "margin"),
    "sample_margin_R_sm": Case(
        lambda hp, shared, dtype: km.losses.SampleMarginLoss(dtype=dtype), "margin"),
    # Baselines.
    "focal_ldamrepo_gamma1": Case(_focal, "baseline"),
    "focal_ldamrepo_gamma1_drw_stage2": Case(_focal, "baseline"),
    "cb_softmax_beta0.9999": Case(_class_balanced("softmax"), "baseline", float64=False),
    "cb_sigmoid_beta0.9999": Case(_class_balanced("sigmoid"), "baseline", float64=False),
    "cb_focal_beta0.9999": Case(_class_balanced("focal"), "baseline", float64=False),
    "logit_adjustment_tau1.0": Case(_logit_adjusted, "baseline", float64=False),
    "logit_adjustment_tau0.5": Case(_logit_adjusted, "baseline", float64=False),
    "ib_alpha1000_ibreweight": Case(_influence_balanced, "baseline"),
    "ib_focal_alpha1000_gamma1_ibreweight": Case(_influence_balanced, "baseline"),
}

PARAMS = [pytest.param(name, dtype, rtol, id=f"{name}-{dtype}")
          for name, case in CASES.items()
          for dtype, rtol in [("float32", 1e-4), ("float64", 1e-6)]
          if dtype == "float32" or case.float64]


def test_every_reference_entry_has_a_constructor(reference):
    missing = sorted(set(reference["losses"]) - set(CASES))
    assert not missing, f"reference entries without a constructor in CASES: {missing}"
    stale = sorted(set(CASES) - set(reference["losses"]))
    assert not stale, f"CASES rows without a reference entry: {stale}"


def _y_pred(reference, name, entry):
    x = np.asarray(reference["inputs"][entry["input"]], dtype="float64")
    if name.startswith("ib_"):  # the L1 norm of the features as the last column
        x = np.concatenate([x, np.asarray(reference["inputs"]["ib_features_l1"])[:, None]], -1)
    return x


@pytest.mark.parametrize("name, dtype, rtol", PARAMS)
def test_matches_reference_values(reference, name, dtype, rtol):
    entry = reference["losses"][name]
    case = CASES[name]
    assert entry["dtype"] == ("float64" if case.float64 else "float32")
    shared = {"counts": reference["inputs"]["cls_num_list"],
              "class_lists": reference["class_lists"]}
    x = _y_pred(reference, name, entry)
    labels = reference["inputs"]["labels"]
    with float64_enabled():
        loss = case.build(entry.get("hyperparams", {}), shared, dtype)
        value, grad = loss_value_and_grad(loss, labels, x, dtype)
        per_sample = to_numpy(loss.call(np.asarray(labels, dtype), x.astype(dtype)))
    # (Keras' torch reduction returns the float64 mean as float32: divide_no_nan
    # by a Python int. The gradient stays float64; the mean is within 1e-7.)
    assert grad.dtype == np.dtype(dtype)
    if name.startswith("ib_"):  # no reference gradient for the feature-norm column
        grad = grad[:, :-1]
    if loss.class_weights is not None:  # the authors' per-sample values carry w_y
        per_sample = per_sample * np.asarray(loss.class_weights)[np.asarray(labels)]
    expected_grad = np.asarray(entry["grad"])
    assert value == pytest.approx(entry["mean"], rel=rtol)
    if case.family == "baseline":
        # The LA / CB references were computed in float32 by TensorFlow: allow
        # float32 round-off on near-zero gradient entries.
        atol = (1e-5 if entry["dtype"] == "float32" else 1e-6) if dtype == "float32" else 1e-12
        np.testing.assert_allclose(grad, expected_grad, rtol=rtol, atol=atol)
    else:
        # atol scaled to the gradient's size: float32 rounds softmax_y ~ 1 - 1e-7 to 1.
        scale = np.max(np.abs(expected_grad))
        np.testing.assert_allclose(grad, expected_grad, rtol=rtol, atol=rtol * 1e-2 * scale)
    if "per_sample" not in entry:
        return
    if case.family == "ldam":
        # atol: float32 cannot resolve a loss of 1e-6 next to logits of 30.
        atol = rtol * 1e-1
    else:
        # A per-sample loss is a difference of log-sum-exp and target logit (both up
        # to ~s): its absolute error scales with the largest loss, not with itself.
        atol = rtol * 1e-2 * np.max(np.abs(entry["per_sample"]))
    np.testing.assert_allclose(per_sample, entry["per_sample"], rtol=rtol, atol=atol)
