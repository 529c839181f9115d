"""The table of losses the benchmarks measure: one constructor per name.

Losses are discovered from ``keras_margins.losses.__all__``; this table only
says how to build each one for ``C`` classes, with the papers' hyper-parameters
from ``applications.hyperparameters.HYPERPARAMETERS`` (the table the training
recipes read). A loss in ``__all__`` that is missing here is reported as "no
constructor" by the benchmarks instead of being silently skipped, so a loss
that lands later shows up.
"""

import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from applications.hyperparameters import hyperparameters as hp  # noqa: E402

#: Names in ``keras_margins.losses.__all__`` that are not losses.
NOT_LOSSES = {"MarginLoss", "EqualizationStatistics"}


def long_tail_counts(num_classes, max_count=5000, imbalance_ratio=100.0):
    """Exponential long-tailed counts ``max_count * ratio^(-j / (C - 1))``."""
    j = np.arange(num_classes)
    return np.maximum(1, np.floor(max_count * imbalance_ratio ** (-j / (num_classes - 1))))\
        .astype("int64").tolist()


def constructors(losses_module=None):
    """``{name: (f(counts) -> loss, extra_columns)}`` for every known loss.

    ``extra_columns`` is 1 for losses whose ``y_pred`` carries an extra column
    (InfluenceBalancedLoss: ``concat([logits, ||h||_1])``). ``losses_module``:
    build from another ``keras_margins.losses`` (``compare_revisions.py``
    passes an older checkout's); default the installed one.
    """
    import keras

    if losses_module is None:
        from keras_margins import losses as losses_module
    L = losses_module

    ce = lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True)  # noqa: E731
    def class_balanced(loss_type):
        return lambda n: L.ClassBalancedLoss(n, **hp("class-balanced", loss_type=loss_type))

    table = {
        "LDAMLoss": lambda n: L.LDAMLoss(n, **hp("ldam")),
        "ELMLoss": lambda n: L.ELMLoss(n, **hp("elm")),
        "FocalLoss": lambda n: L.FocalLoss(**hp("focal")),
        "ClassBalancedLoss": class_balanced("softmax"),
        "ClassBalancedLoss[focal]": class_balanced("focal"),
        "ClassBalancedLoss[sigmoid]": class_balanced("sigmoid"),
        "LogitAdjustedLoss": lambda n: L.LogitAdjustedLoss(n, **hp("logit-adjusted")),
        "InfluenceBalancedLoss": lambda n: L.InfluenceBalancedLoss(n, **hp("influence-balanced")),
        "VSLoss": lambda n: L.VSLoss(n, **hp("vs")),
        "LADELoss": lambda n: L.LADELoss(n, **hp("lade")),
        "LabelAwareSmoothingLoss": lambda n: L.LabelAwareSmoothingLoss(
            n, **hp("label-aware-smoothing")),
        "EqualizationLossV2": lambda n: L.EqualizationLossV2(num_classes=len(n)),
        "MaxMarginLoss": lambda n: L.MaxMarginLoss(**hp("mm-ldam-cifar100", class_counts=n)),
        "KPSLoss": lambda n: L.KPSLoss(n, **hp("kps")),
        "KPSLoss[GA]": lambda n: L.KPSLoss(n, **hp("kps", gradient_adjustment=True)),
        "LMSCELoss": lambda n: L.LMSCELoss(**hp("lmsce")),
        "LMSoftmaxLoss": lambda n: L.LMSoftmaxLoss(**hp("lm-softmax")),
        "GMSoftmaxLoss": lambda n: L.GMSoftmaxLoss(**hp("gm-softmax")),
        "SampleMarginLoss": lambda n: L.SampleMarginLoss(ce(), **hp("sample-margin")),
        "SampleMarginLoss[NormFace]": lambda n: L.SampleMarginLoss(
            L.NormFaceLoss(**hp("normface-face")), **hp("sample-margin")),
        "CombinedMarginLoss": lambda n: L.CombinedMarginLoss(**hp("combined-margin-face")),
        "NormFaceLoss": lambda n: L.NormFaceLoss(**hp("normface-face")),
        "CosFaceLoss": lambda n: L.CosFaceLoss(**hp("cosface-face")),
        "ArcFaceLoss": lambda n: L.ArcFaceLoss(**hp("arcface-face")),
        "SphereFaceLoss": lambda n: L.SphereFaceLoss(**hp("sphereface-face")),
    }
    extra = {"InfluenceBalancedLoss": 1}
    return {name: (make, extra.get(name, 0)) for name, make in table.items()}


def loss_names(only=None):
    """Benchmark rows: every loss of ``__all__`` (and its variants), in table order.

    Returns ``(names, missing)``; ``missing`` lists losses in ``__all__`` with
    no constructor in the table.
    """
    from keras_margins import losses as L

    table = constructors()
    # classes only: the functional forms (``ldam_loss``, ...) compute the same values
    exported = [n for n in L.__all__
                if n not in NOT_LOSSES and isinstance(getattr(L, n), type)]
    names = [n for n in table if n.split("[")[0] in exported]
    missing = [n for n in exported if n not in table]
    if only:
        wanted = set(only)
        names = [n for n in names if n in wanted or n.split("[")[0] in wanted]
    return names, missing
