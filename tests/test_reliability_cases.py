"""Shared cases for the reliability tests: every public loss, built generically.

The reliability, property, mixed-precision, serialization and distributed
tests iterate ``keras_margins.losses.__all__`` and build each loss from its
constructor signature with the table ``REQUIRED`` below, so a loss that lands
later is covered without editing the tests (add an entry to ``REQUIRED`` only
for a new *required* argument name). The one test here fails when a public
loss cannot be built that way.
"""

import inspect

import keras
import numpy as np
from keras import ops

import keras_margins as km

# Values for required constructor arguments, by name (valid for every loss).
REQUIRED = {
    "scale": 16.0, "delta_neg": 0.6, "beta": 1.5, "m1": 1.2, "m2": 0.3, "m3": 0.2,
    "alpha1": 1.0, "alpha2": 0.8, "beta1": 0.0, "beta2": 0.2, "margin": 0.3,
}
REQUIRED_BY_CLASS = {"SphereFaceLoss": {"margin": 1.35}}  # multiplicative margin >= 1
# Extra variants worth covering besides the plain constructor.
VARIANTS = {
    "ELMLoss_lam05": ("ELMLoss", {"lam": 0.5}),
    "KPSLoss_GA": ("KPSLoss", {"gradient_adjustment": True}),
    "MaxMarginLoss_LDAM": ("MaxMarginLoss", {"class_counts": "counts"}),
    "SampleMarginLoss_NormFace": ("SampleMarginLoss", {"base_loss": "normface"}),
    "ClassBalancedLoss_focal": ("ClassBalancedLoss", {"loss_type": "focal"}),
    "InfluenceBalancedLoss_focal": ("InfluenceBalancedLoss", {"gamma": 1.0}),
}


def public_loss_classes():
    """Name -> class of every concrete loss in ``keras_margins.losses.__all__``."""
    classes = {}
    for name in km.losses.__all__:
        cls = getattr(km.losses, name)
        if not (inspect.isclass(cls) and issubclass(cls, keras.losses.Loss)):
            continue
        if cls is km.losses.MarginLoss:  # abstract base: per_sample not implemented
            continue
        classes[name] = cls
    return classes


def loss_case_names():
    return sorted(public_loss_classes()) + sorted(VARIANTS)


def has_parameter(case, parameter):
    cls = public_loss_classes()[VARIANTS[case][0] if case in VARIANTS else case]
    return parameter in inspect.signature(cls.__init__).parameters


def class_of(case):
    return public_loss_classes()[VARIANTS[case][0] if case in VARIANTS else case]


def make_loss(case, counts, **overrides):
    """Builds loss ``case`` for per-class ``counts`` (its length is C).

    ``overrides`` replace constructor arguments the loss has (others are
    ignored, e.g. ``scale`` for a loss without one).
    """
    cls = class_of(case)
    kwargs = dict(VARIANTS[case][1]) if case in VARIANTS else {}
    parameters = inspect.signature(cls.__init__).parameters
    for name, parameter in parameters.items():
        if name in ("self", "args", "kwargs") or name in kwargs:
            continue
        if name == "class_counts" and parameter.default is inspect.Parameter.empty:
            kwargs[name] = list(counts)
        elif name == "num_classes":
            kwargs[name] = len(counts)
        elif parameter.default is inspect.Parameter.empty:
            kwargs[name] = REQUIRED_BY_CLASS.get(cls.__name__, {}).get(name, REQUIRED[name])
    for name, value in overrides.items():
        if name in parameters:
            kwargs[name] = value
    if kwargs.get("class_counts") == "counts":
        kwargs["class_counts"] = list(counts)
    if kwargs.get("base_loss") == "normface":
        kwargs["base_loss"] = km.losses.NormFaceLoss(scale=kwargs.get("scale", 16.0))
    return cls(**kwargs)


def prepare(loss, rng=None):
    """Freezes stateful losses (EQLv2's statistics) so repeated calls agree.

    With ``rng`` the statistics get random positive values (non-trivial weights).
    """
    if hasattr(loss, "statistics_layer"):
        layer = loss.statistics_layer()
        layer.update_flag.assign(0.0)
        if rng is not None:
            size = layer.num_classes
            layer.positive_gradients.assign(rng.uniform(0.5, 5.0, size).astype("float32"))
            layer.negative_gradients.assign(rng.uniform(0.5, 5.0, size).astype("float32"))
    return loss


def extra_columns(case):
    """Columns appended to the class scores in ``y_pred`` (IB: the feature norm)."""
    return 1 if issubclass(class_of(case), km.losses.InfluenceBalancedLoss) else 0


def make_y_pred(case, scores, rng):
    """``y_pred`` for ``case`` from (B, C) scores: IB gets a positive norm column."""
    if not extra_columns(case):
        return scores
    norms = rng.uniform(0.5, 20.0, (scores.shape[0], 1)).astype(scores.dtype)
    return np.concatenate([scores, norms], axis=1)


def permute_y_pred(case, y_pred, perm):
    if not extra_columns(case):
        return y_pred[:, perm]
    return np.concatenate([y_pred[:, :-1][:, perm], y_pred[:, -1:]], axis=1)


def numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


# ----------------------------------------------------------------------------- test

def test_every_public_loss_is_built_and_gives_finite_values():
    rng = np.random.default_rng(0)
    counts = [50, 20, 9, 5]
    assert len(public_loss_classes()) >= 15, sorted(public_loss_classes())
    for case in loss_case_names():
        loss = prepare(make_loss(case, counts))
        assert isinstance(loss, keras.losses.Loss), case
        scores = rng.uniform(-1, 1, (6, 4)).astype("float32")
        value = numpy(loss(np.array([0, 1, 2, 3, 3, 2]), make_y_pred(case, scores, rng)))
        assert value.shape == () and np.isfinite(value), (case, value)


def _variable(values):
    """A framework variable holding ``values``: tf.Variable on TensorFlow (Keras'
    own losses accept it), keras.Variable elsewhere."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        return tf.Variable(values)
    return keras.Variable(values)


def test_every_public_loss_accepts_lists_and_variables_like_keras_losses():
    rng = np.random.default_rng(1)
    counts = [50, 20, 9, 5]
    labels = np.array([0, 1, 2, 3, 3, 2])
    for case in loss_case_names():
        loss = prepare(make_loss(case, counts))
        y_pred = make_y_pred(case, rng.uniform(-1, 1, (6, 4)).astype("float32"), rng)
        expected = numpy(loss(labels, y_pred))
        for y_true, scores in ((labels.tolist(), y_pred.tolist()),
                               (labels, _variable(y_pred))):
            np.testing.assert_allclose(numpy(loss(y_true, scores)), expected, rtol=1e-6,
                                       err_msg=case)
