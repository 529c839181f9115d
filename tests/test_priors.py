"""Class-count priors against the authors' lists, identities and bad input."""

import numpy as np
import pytest

from keras_margins import priors, validation

COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


@pytest.mark.parametrize("function, key, kwargs", [
    (priors.ldam_margins, "ldam_m_list_max_m_0.5", {"max_margin": 0.5}),
    (priors.class_balanced_weights, "drw_weights_epoch_160_plus", {"beta": 0.9999}),
    (priors.class_balanced_weights, "cb_weights_beta_0.9", {"beta": 0.9}),
    (priors.class_balanced_weights, "cb_weights_beta_0.99", {"beta": 0.99}),
    (priors.class_balanced_weights, "cb_weights_beta_0.999", {"beta": 0.999}),
    (priors.class_balanced_weights, "cb_weights_beta_0.9999", {"beta": 0.9999}),
    (priors.inverse_frequency_weights, "ib_reweight_inverse_freq", {}),
    (priors.priors, "la_base_probs", {}),
    (priors.kps_radii, "kps_s_list_radius", {"n_base": 50}),
])
def test_matches_reference_lists(reference, function, key, kwargs):
    counts = reference["inputs"]["cls_num_list"]
    np.testing.assert_allclose(function(counts, **kwargs), reference["class_lists"][key],
                               rtol=1e-10)


def test_log_priors_match_float32_reference(reference):
    np.testing.assert_allclose(priors.log_priors(COUNTS, tau=1.0),
                               reference["class_lists"]["la_log_base_probs_tau1_float32"],
                               rtol=1e-6)


def test_drw_stage_one_is_all_ones(reference):
    np.testing.assert_array_equal(priors.class_balanced_weights(COUNTS, beta=0.0),
                                  reference["class_lists"]["drw_weights_epoch_0_to_159"])


@pytest.mark.parametrize("function", [
    priors.ldam_margins, priors.class_balanced_weights, priors.inverse_frequency_weights,
    priors.log_priors, priors.kps_radii, priors.kps_margins, priors.kps_scales,
    priors.cc_sam_feature_weights, lambda counts: priors.cc_sam_weight_radii(counts, 650)])
def test_permuting_counts_permutes_result(function):
    permutation = np.random.default_rng(0).permutation(len(COUNTS))
    shuffled = np.asarray(COUNTS)[permutation]
    np.testing.assert_allclose(function(shuffled), function(COUNTS)[permutation], rtol=1e-12)


def test_kps_margins_differ_from_authors_reversed_list_only_by_rounding(reference):
    # The authors' code reverses the radius list; SPEC uses Eq. 28-29, which
    # agrees only for an exactly exponential, descending profile. On the
    # truncated CIFAR-10-LT counts the two differ by about 0.1%.
    counts = reference["inputs"]["cls_num_list"]
    authors = reference["class_lists"]["kps_m_list_max_m_0.2"]
    radii = priors.kps_radii(counts)
    np.testing.assert_allclose(0.2 * radii[::-1] / radii.max(), authors, rtol=1e-10)
    np.testing.assert_allclose(priors.kps_margins(counts, 0.2), authors, rtol=2e-3)
    authors_scales = reference["class_lists"]["kps_ga_scale_per_class_s15"]
    np.testing.assert_allclose(np.clip(15.0 * radii[::-1], 15, 50), authors_scales, rtol=1e-10)
    np.testing.assert_allclose(priors.kps_scales(counts, 15.0), authors_scales, rtol=2e-3)


def test_kps_margins_use_formula_not_reversed_radii():
    # Unsorted, non-exponential counts: reversing the radius list would be wrong.
    counts = [50, 5000, 700, 50, 90]
    radii = priors.kps_radii(counts)
    expected = 0.5 * (radii.max() + 1 - radii) / (radii.max() + 1 - radii).max()
    np.testing.assert_allclose(priors.kps_margins(counts, 0.5), expected)
    assert priors.kps_margins(counts, 0.5)[0] == pytest.approx(0.5)


def test_weights_sum_to_num_classes():
    for beta in (0.0, 0.9, 0.999999):
        assert priors.class_balanced_weights(COUNTS, beta).sum() == pytest.approx(10)
    assert priors.inverse_frequency_weights(COUNTS).sum() == pytest.approx(10)


@pytest.mark.parametrize("counts, fragment", [
    ([], "at least 2"),
    ([10, 0, 3], "positive"),
    ([10, -1, 3], "positive"),
    ([10, float("nan"), 3], "finite"),
    ([10, 2.5, 3], "integer"),
    ([[10, 2], [3, 4]], "1-D"),
    ("abc", "1-D sequence"),
    (None, "required"),
])
def test_bad_counts_raise_naming_argument(counts, fragment):
    for function in (priors.ldam_margins, priors.class_balanced_weights, priors.kps_radii,
                     priors.log_priors, priors.inverse_frequency_weights,
                     priors.cc_sam_feature_weights,
                     lambda counts: priors.cc_sam_weight_radii(counts, 650)):
        with pytest.raises(ValueError, match="class_counts") as info:
            function(counts)
        assert fragment in str(info.value)


@pytest.mark.parametrize("call, name", [
    (lambda: priors.ldam_margins(COUNTS, max_margin=-0.1), "max_margin"),
    (lambda: priors.class_balanced_weights(COUNTS, beta=1.0), "beta"),
    (lambda: priors.class_balanced_weights(COUNTS, beta=-0.5), "beta"),
    (lambda: priors.log_priors(COUNTS, tau=-1), "tau"),
    (lambda: priors.kps_radii(COUNTS, n_base=1), "n_base"),
    (lambda: priors.kps_scales(COUNTS, scale=0), "scale"),
    (lambda: priors.kps_scales(COUNTS, scale=15, max_scale=10), "max_scale"),
    (lambda: priors.cc_sam_weight_radii(COUNTS, 0), "num_parameters"),
    (lambda: priors.cc_sam_weight_radii(COUNTS, 650, kappa=-1e-6), "kappa"),
    (lambda: validation.validate_class_counts(COUNTS, num_classes=5), "5 classes"),
])
def test_bad_hyper_parameters_raise(call, name):
    with pytest.raises(ValueError, match=name):
        call()
