"""Loss hyper-parameters of the seed papers: one table for the recipes, the
benchmarks and the tests.

``HYPERPARAMETERS[name]`` holds constructor keyword arguments of a
``keras_margins.losses`` class (or of the class-balanced weights), as the
papers set them; ``hyperparameters(name, **overrides)`` returns a fresh copy
with overrides applied. Entries ending in ``-face`` are the face-recognition
settings of the normalised-softmax papers (scale 16 to 64), which the
benchmarks time; the recipes use the CIFAR-LT settings of the largest-margins
paper (scale 5). Importing this module does not import Keras.
"""

import copy

__all__ = ["HYPERPARAMETERS", "hyperparameters"]

HYPERPARAMETERS = {
    # Cao et al., NeurIPS 2019 (LDAM-DRW): LDAMLoss, focal baseline.
    "ldam": {"max_margin": 0.5, "scale": 30.0},
    "focal": {"gamma": 1.0},
    # Cui et al. 2019: effective-number weights (ClassBalancedLoss, DRW, CB recipes).
    "class-balanced": {"beta": 0.9999},
    # Menon et al. 2021: LogitAdjustedLoss.
    "logit-adjusted": {"tau": 1.0},
    # Kato & Hotta: ELMLoss (the recipes also run lam 0.5 and 0.1).
    "elm": {"lam": 1.0, "max_margin": 0.5, "scale": 30.0},
    # Kang, Vu & Yoo: MaxMarginLoss, CIFAR-10-LT ratio 100 (Table 2) and CIFAR-100-LT.
    "mm": {"delta_neg": 0.6, "beta": 1.5, "scale": 19.0},
    "mm-ldam": {"delta_neg": 0.6, "beta": 1.5, "scale": 26.0},
    "mm-ldam-cifar100": {"delta_neg": 1.29, "beta": 1.528, "scale": 26.0},
    # Li, Cheung & Hu: KPSLoss.
    "kps": {"max_margin": 0.5, "scale": 15.0, "n_base": 50},
    # Kobayashi 2019: LMSCELoss.
    "lmsce": {"lam": 0.3},
    # Zhou et al., ICLR 2022 (largest margins), 10-class CIFAR setting.
    "lm-softmax": {"scale": 5.0},
    "normface": {"scale": 5.0},
    "cosface": {"margin": 0.1, "scale": 5.0},
    "arcface": {"margin": 0.1, "scale": 5.0},
    "sample-margin": {"weight": 0.5},
    "gm-softmax": {"alpha1": 1.0, "alpha2": 1.0, "beta1": 0.0, "beta2": 0.5, "scale": 16.0},
    # Park et al., ICCV 2021: InfluenceBalancedLoss (the recipe adds focal's gamma).
    "influence-balanced": {"alpha": 1000.0},
    # Kini et al., NeurIPS 2021: VSLoss (the authors' CIFAR-10-LT ratio-100 command).
    "vs": {"gamma": 0.2, "tau": 1.2},
    # Hong et al., CVPR 2021: LADELoss (the authors' CIFAR-100-LT configuration).
    "lade": {"alpha": 0.1, "remine_lambda": 0.1},
    # Zhong et al., CVPR 2021 (MiSLAS): LabelAwareSmoothingLoss, CIFAR-10-LT ratio 100.
    "label-aware-smoothing": {"eps_max": 0.3, "eps_min": 0.0, "shape": "concave"},
    # Rangwani et al., NeurIPS 2022: the SAM radius of the -sam recipes (our choice
    # for the reduced protocol; the paper tunes rho per method and dataset).
    "sam": {"rho": 0.5},
    # Second stages of the two-stage recipes (applications.decoupled): epochs as in
    # Kang et al., ICLR 2020; tau 1 (the paper picks tau on validation data).
    "second-stage": {"epochs": 10, "tau": 1.0},
    # Alshammari et al., CVPR 2022: stage-1 weight decay; the MaxNorm cap of stage 2
    # (our choice).
    "weight-balancing": {"weight_decay": 5e-3, "max_norm": 1.0},
    # Zhong et al., CVPR 2021 (MiSLAS): MixUp alpha of stage 1.
    "mislas": {"mixup_alpha": 1.0},
    # Zhou et al., CVPR 2023 (CC-SAM): the authors' released CIFAR configuration
    # (stage 1: weight radius kappa, flat ratio beta, MixUp alpha; stage 2: feature
    # radius lambda, beta ramped to 1).
    "cc-sam": {"weight_radius": 1e-6, "flat_ratio": 0.3, "mixup_alpha": 1.0,
               "feature_radius": 1.0},
    # Face-recognition settings: NormFace, CosFace, ArcFace (and its combined
    # margin), SphereFace.
    "normface-face": {"scale": 16.0},
    "cosface-face": {"margin": 0.35, "scale": 64.0},
    "arcface-face": {"margin": 0.5, "scale": 64.0},
    "combined-margin-face": {"m1": 1.0, "m2": 0.3, "m3": 0.2, "scale": 64.0},
    "sphereface-face": {"margin": 1.35, "scale": 30.0},
}


def hyperparameters(name, **overrides):
    """A copy of ``HYPERPARAMETERS[name]`` updated with ``overrides``."""
    if name not in HYPERPARAMETERS:
        raise ValueError(f"Unknown hyper-parameter set {name!r}; choose from "
                         f"{sorted(HYPERPARAMETERS)}.")
    return {**copy.deepcopy(HYPERPARAMETERS[name]), **overrides}
