"""The table of losses the benchmarks measure: one constructor per name.

Losses are discovered from ``keras_margins.losses.__all__``; this table only
says how to build each one for ``C`` classes (the hyper-parameters of the
papers). A loss in ``__all__`` that is missing here is reported as "no
constructor" by the benchmarks instead of being silently skipped, so a loss
that lands later shows up.
"""

import numpy as np

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
    table = {
        "LDAMLoss": lambda n: L.LDAMLoss(n, max_margin=0.5, scale=30.0),
        "ELMLoss": lambda n: L.ELMLoss(n, lam=1.0, max_margin=0.5, scale=30.0),
        "FocalLoss": lambda n: L.FocalLoss(gamma=1.0),
        "ClassBalancedLoss": lambda n: L.ClassBalancedLoss(n, beta=0.9999, loss_type="softmax"),
        "ClassBalancedLoss[focal]": lambda n: L.ClassBalancedLoss(n, beta=0.9999,
                                                                  loss_type="focal"),
        "ClassBalancedLoss[sigmoid]": lambda n: L.ClassBalancedLoss(n, beta=0.9999,
                                                                    loss_type="sigmoid"),
        "LogitAdjustedLoss": lambda n: L.LogitAdjustedLoss(n, tau=1.0),
        "InfluenceBalancedLoss": lambda n: L.InfluenceBalancedLoss(n, alpha=1000.0),
        "EqualizationLossV2": lambda n: L.EqualizationLossV2(num_classes=len(n)),
        "MaxMarginLoss": lambda n: L.MaxMarginLoss(delta_neg=1.29, beta=1.528, scale=26.0,
                                                   class_counts=n),
        "KPSLoss": lambda n: L.KPSLoss(n, max_margin=0.5, scale=15.0),
        "KPSLoss[GA]": lambda n: L.KPSLoss(n, max_margin=0.5, scale=15.0,
                                           gradient_adjustment=True),
        "LMSCELoss": lambda n: L.LMSCELoss(lam=0.3),
        "LMSoftmaxLoss": lambda n: L.LMSoftmaxLoss(scale=5.0),
        "GMSoftmaxLoss": lambda n: L.GMSoftmaxLoss(1.0, 1.0, 0.0, 0.5, scale=16.0),
        "SampleMarginLoss": lambda n: L.SampleMarginLoss(ce(), weight=0.5),
        "SampleMarginLoss[NormFace]": lambda n: L.SampleMarginLoss(L.NormFaceLoss(16.0),
                                                                   weight=0.5),
        "CombinedMarginLoss": lambda n: L.CombinedMarginLoss(1.0, 0.3, 0.2, scale=64.0),
        "NormFaceLoss": lambda n: L.NormFaceLoss(scale=16.0),
        "CosFaceLoss": lambda n: L.CosFaceLoss(margin=0.35, scale=64.0),
        "ArcFaceLoss": lambda n: L.ArcFaceLoss(margin=0.5, scale=64.0),
        "SphereFaceLoss": lambda n: L.SphereFaceLoss(margin=1.35, scale=30.0),
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
    exported = [n for n in L.__all__ if n not in NOT_LOSSES]
    names = [n for n in table if n.split("[")[0] in exported]
    missing = [n for n in exported if n not in table]
    if only:
        wanted = set(only)
        names = [n for n in names if n in wanted or n.split("[")[0] in wanted]
    return names, missing
