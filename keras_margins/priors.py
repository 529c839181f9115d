"""Class-count priors: margins, weights, radii, scales and log-priors.

Every function takes the per-class training counts ``class_counts`` (any
order, never assumed sorted), validates them and returns a float64 numpy array
of length ``C``. These are computed once, outside the training graph; the
losses turn them into constants of the right dtype.

References: LDAM (Cao et al., 2019, Eq. 13),
class-balanced weights (Cui et al., 2019, Eq. 3), logit adjustment (Menon et
al., 2021, Eq. 10), KPS (Li, Cheung & Hu, Eq. 26-29), CC-SAM (Zhou et al.,
CVPR 2023; the authors' released configuration).
"""

import math

import numpy as np

from keras_margins.validation import (_as_float, validate_class_counts, validate_n_base,
                                      validate_non_negative, validate_positive)

__all__ = [
    "ldam_margins",
    "class_balanced_weights",
    "inverse_frequency_weights",
    "priors",
    "log_priors",
    "kps_radii",
    "kps_relative_margins",
    "kps_margins",
    "kps_scales",
    "cc_sam_weight_radii",
    "cc_sam_feature_weights",
]


def ldam_margins(class_counts, max_margin=0.5):
    """LDAM margins ``m_j = max_margin * n_j^(-1/4) / max_k n_k^(-1/4)``.

    The rarest class gets ``max_margin``. Cao et al. 2019, Eq. 13.
    """
    counts = validate_class_counts(class_counts)
    max_margin = validate_non_negative(max_margin, "max_margin")
    quarter = counts ** -0.25
    return quarter * (max_margin / np.max(quarter))


def class_balanced_weights(class_counts, beta=0.9999):
    """Effective-number weights ``(1 - beta) / (1 - beta^n_j)``, summing to C.

    ``beta = 0`` gives all ones. Cui et al. 2019, Eq. 3; the DRW weights.
    """
    counts = validate_class_counts(class_counts)
    beta = _as_float(beta, "beta")
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"`beta` must be in [0, 1), received {beta!r}.")
    # 1 - beta^n computed as -expm1(n * log(beta)) keeps precision for beta ~ 1.
    if beta == 0.0:
        weights = np.ones_like(counts)
    else:
        weights = (1.0 - beta) / -np.expm1(counts * math.log(beta))
    return weights * (counts.size / np.sum(weights))


def inverse_frequency_weights(class_counts):
    """Weights ``1 / n_j`` rescaled to sum to C (the IB loss's re-weighting)."""
    counts = validate_class_counts(class_counts)
    weights = 1.0 / counts
    return weights * (counts.size / np.sum(weights))


def priors(class_counts):
    """Class priors ``pi_j = n_j / sum_k n_k``."""
    counts = validate_class_counts(class_counts)
    return counts / np.sum(counts)


def log_priors(class_counts, tau=1.0):
    """Logit-adjustment offsets ``log(pi_j^tau + 1e-12)``. Menon et al. 2021."""
    tau = validate_non_negative(tau, "tau")
    return np.log(priors(class_counts) ** tau + 1e-12)


def kps_radii(class_counts, n_base=50):
    """KPS radii ``r_j = 1 + ln(n_j / n_min) / ln(n_base)`` (rarest class: 1)."""
    counts = validate_class_counts(class_counts)
    n_base = validate_n_base(n_base)
    return 1.0 + np.log(counts / np.min(counts)) / math.log(n_base)


def kps_relative_margins(class_counts, n_base=50):
    """KPS relative margins ``m'_j = max(r) + 1 - r_j`` (paper Eq. 28), >= 1."""
    radii = kps_radii(class_counts, n_base)
    return np.max(radii) + 1.0 - radii


def kps_margins(class_counts, max_margin=0.5, n_base=50):
    """KPS margins ``m_j = max_margin * m'_j / max(m')`` (paper Eq. 29).

    Uses the formula, not the authors' reversed radius list: both agree only
    when the counts are sorted in descending order.
    """
    max_margin = validate_non_negative(max_margin, "max_margin")
    relative = kps_relative_margins(class_counts, n_base)
    return max_margin * relative / np.max(relative)


def kps_scales(class_counts, scale=15.0, max_scale=50.0, n_base=50):
    """Gradient-adjustment scales ``s_j = clip(scale * m'_j, scale, max_scale)``."""
    scale = validate_positive(scale, "scale")
    max_scale = validate_positive(max_scale, "max_scale")
    if max_scale < scale:
        raise ValueError(f"`max_scale` must be >= `scale` ({scale:g}), received "
                         f"{max_scale:g}.")
    relative = kps_relative_margins(class_counts, n_base)
    return np.clip(scale * relative, scale, max_scale)


def cc_sam_weight_radii(class_counts, num_parameters, kappa=1e-6):
    """CC-SAM's per-class radius factor ``kappa P^(1/4) / (sqrt(2) (n_j - 1)^(1/4))``.

    The head's perturbation for class ``j`` is this factor times
    ``sqrt(||p|| / ||g_j||) g_j / ||g_j||`` for each head parameter ``p`` (``P``
    parameters in all). Needs ``n_j >= 2``.
    """
    counts = validate_class_counts(class_counts)
    if np.any(counts < 2):
        bad = int(np.flatnonzero(counts < 2)[0])
        raise ValueError(f"CC-SAM's weight radius needs at least 2 training samples per class "
                         f"(it has (n_j - 1)^(-1/4)), received {counts[bad]:g} for class {bad}.")
    num_parameters = validate_positive(num_parameters, "num_parameters")
    kappa = validate_non_negative(kappa, "kappa")
    return kappa * num_parameters ** 0.25 / (math.sqrt(2.0) * (counts - 1.0) ** 0.25)


def cc_sam_feature_weights(class_counts):
    """CC-SAM's second-stage class weights ``log(n_max / n_j + 0.01) / 2``."""
    counts = validate_class_counts(class_counts)
    return np.log(np.max(counts) / counts + 0.01) / 2.0
