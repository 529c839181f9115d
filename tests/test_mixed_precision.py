"""Mixed precision (``mixed_float16`` / ``mixed_bfloat16``) for every public loss.

Every loss computes in float32 whatever the policy. Checked per policy and loss,
with scale 64 (KPS: max_scale 64), on cosines covering [-1, 1] with exact +-1
and on raw logits up to +-6e4 (the float16 limit is 65504; larger logits make
the true loss itself exceed float32 for bfloat16's range, so they are not a
meaningful test):

* value and gradient (through the 16-bit y_pred, as in a model) are finite;
* strict: the loss of the 16-bit y_pred equals the float32 loss of the same
  (rounded) values to 1e-6: nothing inside is computed in 16 bits;
* against float32 on the unrounded inputs: within ``atol = 2 * s * eps * max|x|``
  plus ``rtol = 8 * eps`` (eps = 2^-11 float16, 2^-8 bfloat16): rounding each
  input by eps moves a softmax cross-entropy by at most ``2 s eps max|x|``;
  per-class scales, radii, IB's factor and EQLv2's sum over classes enter ``s``.

Labels above 2048 (float16) and 256 (bfloat16) are not rounded by any cast, and
InfluenceBalancedLoss on large logits has gradients up to ``alpha / epsilon = 1e6``
times its cross-entropy, beyond float16 in any model: there its value is checked
in 16 bits and its gradient in float32 (use bfloat16 or float32 for IB). CosineDense
with an all-zero feature vector trains in a mixed model without the
loss-scale optimizer skipping steps. The global policy is restored after each test.
"""

import keras
import numpy as np
import pytest
from keras import ops

import keras_margins as km
from backend_utils import value_and_grad
from test_reliability_cases import (public_loss_classes, extra_columns, has_parameter, loss_case_names, make_loss,
                                    make_y_pred, numpy, prepare)

CASES = [case for case in loss_case_names() if case in public_loss_classes()]
EPS = {"mixed_float16": 2.0 ** -11, "mixed_bfloat16": 2.0 ** -8}
SCALE = 64.0


@pytest.fixture(params=["mixed_float16", "mixed_bfloat16"])
def policy(request):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(request.param)
    try:
        yield request.param
    finally:
        keras.mixed_precision.set_global_policy(previous)


def compute_dtype(policy):
    return keras.mixed_precision.Policy(policy).compute_dtype


def build(case, counts, policy_dtype=None):
    overrides = {"scale": SCALE}
    if has_parameter(case, "max_scale"):
        overrides["max_scale"] = SCALE
    if policy_dtype is not None:
        overrides["dtype"] = policy_dtype
    return prepare(make_loss(case, counts, **overrides), np.random.default_rng(1))


def effective_scale(loss, classes):
    scale = float(getattr(loss, "scale", 1.0))
    scale *= float(np.max(getattr(loss, "radii", [1.0])))
    scale = max(scale, float(np.max(getattr(loss, "kps_scales", [1.0]))))
    if isinstance(loss, km.losses.InfluenceBalancedLoss):
        scale *= loss.alpha * 10  # alpha / (||p - e_y|| * ||h|| + eps), ||h|| >= 0.5
    if isinstance(loss, (km.losses.EqualizationLossV2, km.losses.ClassBalancedLoss)):
        scale *= 5 * classes  # sigmoid terms summed over the classes, weights <= 5
    if isinstance(loss, km.losses.SampleMarginLoss):
        scale += 1.0
    return scale


def inputs(regime, rng, batch=8, classes=12):
    if regime == "cosines":
        x = rng.uniform(-1, 1, (batch, classes))
        x[0, :2], x[1, :2] = [1.0, -1.0], [-1.0, 1.0]
    else:
        x = rng.uniform(-1, 1, (batch, classes)) * rng.choice([1.0, 1e2, 6e4], (batch, 1))
        x[0, :2] = [6e4, -6e4]
    labels = rng.integers(0, classes, batch)
    labels[:2] = [0, 1]
    return labels, x.astype("float32")


@pytest.mark.parametrize("regime", ["cosines", "logits"])
@pytest.mark.parametrize("case", CASES)
def test_finite_and_close_to_float32(policy, case, regime):
    rng = np.random.default_rng(0)
    labels, x = inputs(regime, rng)
    counts = list(np.round(5000 * 0.05 ** (np.arange(x.shape[1]) / 11)).astype(int))
    y_pred = make_y_pred(case, x, rng)
    dtype16 = compute_dtype(policy)
    loss = build(case, counts)
    assert loss.dtype == "float32", (case, loss.dtype)

    def mixed(z):
        return loss(labels, ops.cast(z, dtype16))

    def mixed_float32_gradient(z):  # y_pred rounded to 16 bits, gradient kept in float32
        rounded = ops.cast(ops.cast(z, dtype16), "float32")
        return loss(labels, z + ops.stop_gradient(rounded - z))

    # IB's gradient is up to alpha / epsilon = 1e6 times the cross-entropy: on large
    # logits it exceeds float16 (65504) in any model; its float32 gradient is checked.
    ib_logits = regime == "logits" and extra_columns(case)
    value, grad = value_and_grad(mixed_float32_gradient if ib_logits else mixed, y_pred)
    assert np.isfinite(value), (case, regime, value)
    assert np.all(np.isfinite(grad)), (case, regime)
    # Strict: the same rounded inputs in float32 give the same value.
    rounded = numpy(ops.cast(ops.cast(ops.convert_to_tensor(y_pred), dtype16), "float32"))
    np.testing.assert_allclose(value, numpy(loss(labels, rounded)), rtol=1e-6, atol=1e-6)
    # A loss built with the policy name as dtype also computes in float32.
    assert build(case, counts, policy).dtype == "float32"
    # Against float32 on the unrounded inputs.
    reference = numpy(build(case, counts)(labels, y_pred))
    eps = EPS[policy]
    atol = 2 * effective_scale(loss, x.shape[1]) * eps * float(np.max(np.abs(x)))
    np.testing.assert_allclose(value, reference, rtol=8 * eps, atol=atol)


LARGE_CLASSES = 3001  # odd labels above 2048 are not float16 numbers, above 256 not bfloat16


@pytest.mark.parametrize("case", CASES)
def test_labels_above_16_bit_integer_range_are_not_rounded(policy, case):
    rng = np.random.default_rng(2)
    labels = np.array([2049, 2051, 2990, 2975, 257, 259, 1, 1025])
    counts = list(rng.integers(1, 500, LARGE_CLASSES))
    scores = rng.uniform(-1, 1, (len(labels), LARGE_CLASSES)).astype("float32")
    y_pred = make_y_pred(case, scores, rng)
    y16 = ops.cast(ops.convert_to_tensor(y_pred), compute_dtype(policy))
    y32 = numpy(ops.cast(y16, "float32"))
    rounded_labels = numpy(ops.cast(ops.cast(labels, compute_dtype(policy)), "int32"))
    assert np.any(rounded_labels != labels)  # the data would expose a 16-bit cast
    for loss_dtype in (None, policy):
        loss = prepare(make_loss(case, counts, reduction="none", dtype=loss_dtype))
        expected = numpy(loss(labels, y32))
        corrupted = numpy(loss(rounded_labels, y32))
        result = numpy(loss(labels, y16))
        np.testing.assert_allclose(result, expected, rtol=1e-6, atol=1e-6)
        moved = rounded_labels != labels
        assert np.all(np.abs(result[moved] - corrupted[moved]) > 1e-6), case


def test_mixed_model_evaluates_large_labels_exactly(policy):
    rng = np.random.default_rng(3)
    counts = list(rng.integers(1, 500, LARGE_CLASSES))
    labels = np.array([2049, 2051, 2990, 2975, 257, 259, 1, 1025], dtype="int32")
    x = rng.normal(size=(len(labels), 16)).astype("float32")
    keras.utils.set_random_seed(0)
    inputs_ = keras.Input((16,))
    model = keras.Model(inputs_, km.layers.CosineDense(LARGE_CLASSES)(inputs_))
    loss = km.losses.LDAMLoss(counts, scale=SCALE)
    model.compile(loss=loss)
    predictions = model.predict(x, verbose=0)
    assert str(predictions.dtype) == compute_dtype(policy)
    expected = float(numpy(loss(labels, numpy(ops.cast(predictions, "float32")))))
    result = model.evaluate(x, labels, batch_size=len(labels), verbose=0)
    np.testing.assert_allclose(result, expected, rtol=1e-5)


def test_cosine_dense_with_all_zero_features_trains_in_a_mixed_model(policy):
    rng = np.random.default_rng(4)
    keras.utils.set_random_seed(0)
    inputs_ = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="relu", bias_initializer="zeros")(inputs_)
    head = km.layers.CosineDense(3)
    model = keras.Model(inputs_, head(hidden))
    x = rng.uniform(0, 1, (8, 4)).astype("float32")
    x[0] = 0.0  # relu(0 @ W + 0) = 0: an all-zero feature vector
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    optimizer = keras.optimizers.SGD(0.1)
    if policy == "mixed_float16":
        # Scale 1 from the start: no step may be skipped for overflow.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=1.0)
    model.compile(optimizer=optimizer, loss=km.losses.LDAMLoss([10, 5, 2]))
    outputs = numpy(ops.cast(model(x[:2]), "float32"))
    assert np.all(np.isfinite(outputs)) and np.all(outputs[0] == 0.0)
    before = numpy(head.kernel).copy()
    history = model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert int(numpy(optimizer.iterations)) == 3  # no step skipped for inf/NaN gradients
    if policy == "mixed_float16":
        assert float(numpy(optimizer.dynamic_scale)) == 1.0
    after = numpy(head.kernel)
    assert np.all(np.isfinite(after)) and np.abs(after - before).max() > 1e-4
