"""``keras_margins.ops``: the single-pass helpers match their two-pass definitions,
and ``max_non_target`` (max + first-index reductions instead of argmax) matches numpy.

``non_target_softmax_statistics`` (LMSCE) and ``sigmoid_cross_entropy_terms``
(class-balanced sigmoid/focal, EQLv2) replace a second softmax / log-sigmoid
pass; the influence-balanced loss uses ``||softmax(x) - e_y||_1 = 2 (1 - p_y)``.
Each is checked in value and gradient against the direct formula in float64
numpy, including rows whose target dominates and logits far outside [-1, 1].
"""

import keras
import numpy as np
import pytest
from keras import ops

from keras_margins import losses
from keras_margins import ops as km_ops
from backend_utils import float64_enabled, value_and_grad


def _scores(num_classes, seed, spread=3.0):
    rng = np.random.default_rng(seed)
    scores = rng.normal(scale=spread, size=(17, num_classes))
    labels = rng.integers(0, num_classes, 17).astype("int32")
    # rows where the target dominates by far (p_y -> 1) and a large negative row
    scores[0, labels[0]] = 80.0
    scores[1] = -70.0
    scores[1, labels[1]] = 40.0
    scores[2] = 0.0  # exact zeros: the softplus gradient at 0 must be 1/2
    return scores, labels


def _numpy_non_target(scores, labels):
    masked = scores.copy()
    masked[np.arange(len(labels)), labels] = -np.inf
    top = masked.max(-1, keepdims=True)
    lse = np.log(np.exp(masked - top).sum(-1)) + top[:, 0]
    q = np.exp(masked - lse[:, None])
    return lse, np.nansum(np.where(np.isfinite(masked), q * scores, 0.0), -1)


@pytest.mark.parametrize("num_classes", [2, 10, 1000])
def test_non_target_statistics_match_numpy(num_classes):
    scores, labels = _scores(num_classes, num_classes)
    lse, expected = km_ops.non_target_softmax_statistics(
        ops.convert_to_tensor(scores.astype("float32")), ops.convert_to_tensor(labels))
    want_lse, want_expected = _numpy_non_target(scores, labels)
    np.testing.assert_allclose(ops.convert_to_numpy(lse), want_lse, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(expected), want_expected,
                               rtol=1e-5, atol=1e-4)


def test_cross_entropy_from_non_target_lse_matches_logsumexp():
    scores, labels = _scores(10, 3)
    lse, _ = km_ops.non_target_softmax_statistics(ops.convert_to_tensor(scores.astype("float32")),
                                                  ops.convert_to_tensor(labels))
    target = scores[np.arange(17), labels]
    top = scores.max(-1, keepdims=True)
    want = np.log(np.exp(scores - top).sum(-1)) + top[:, 0] - target
    got = ops.convert_to_numpy(ops.softplus(lse - ops.convert_to_tensor(target.astype("float32"))))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _lmsce_two_pass(scores, labels, lam):
    """The paper's definition, literally: CE + lam/2 sum_{j!=y} (q_j - 1/(C-1)) log q_j."""
    n, c = scores.shape
    top = scores.max(-1, keepdims=True)
    ce = np.log(np.exp(scores - top).sum(-1)) + top[:, 0] - scores[np.arange(n), labels]
    lse, _ = _numpy_non_target(scores, labels)
    log_q = scores - lse[:, None]
    terms = (np.exp(log_q) - 1.0 / (c - 1)) * log_q
    terms[np.arange(n), labels] = 0.0
    return ce + 0.5 * lam * terms.sum(-1)


@pytest.mark.parametrize("num_classes", [2, 10, 100])
def test_lmsce_single_pass_equals_two_pass_definition_with_gradient(num_classes):
    scores, labels = _scores(num_classes, 7 + num_classes, spread=2.0)
    n = len(labels)

    def mean_two_pass(x):
        return _lmsce_two_pass(x, labels, 0.3).mean()

    loss = losses.LMSCELoss(lam=0.3)
    with float64_enabled():
        value, grad = value_and_grad(lambda z: loss(labels, z), scores, "float64")
    np.testing.assert_allclose(value, mean_two_pass(scores), rtol=1e-5)
    # central differences of the literal definition
    eps = 1e-6
    numeric = np.zeros_like(scores)
    for i in range(n):
        for j in range(num_classes):
            up, down = scores.copy(), scores.copy()
            up[i, j] += eps
            down[i, j] -= eps
            numeric[i, j] = (mean_two_pass(up) - mean_two_pass(down)) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-6)


def test_sigmoid_terms_match_numpy_in_value_and_gradient():
    scores, labels = _scores(12, 5, spread=10.0)
    mask = np.arange(12)[None, :] == labels[:, None]
    signed = np.where(mask, scores, -scores)
    want_bce = np.logaddexp(0.0, -signed)
    want_log_residual = -np.logaddexp(0.0, signed)  # log sigmoid(-signed)
    bce, residual, log_residual = km_ops.sigmoid_cross_entropy_terms(
        ops.convert_to_tensor(scores.astype("float32")), ops.convert_to_tensor(mask))
    np.testing.assert_allclose(ops.convert_to_numpy(bce), want_bce, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ops.convert_to_numpy(residual), np.exp(want_log_residual),
                               rtol=1e-5, atol=1e-30)
    np.testing.assert_allclose(ops.convert_to_numpy(log_residual), want_log_residual,
                               rtol=1e-5, atol=1e-5)
    # d bce / d x = sigmoid(x) - e_y, including 1/2 at exactly x = 0 (row 2)
    _, grad = value_and_grad(
        lambda z: ops.sum(km_ops.sigmoid_cross_entropy_terms(z, ops.convert_to_tensor(mask))[0]),
        scores, "float32")
    want_grad = 1.0 / (1.0 + np.exp(-scores)) - mask
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-6)
    assert np.allclose(grad[2][~mask[2]], 0.5) and np.allclose(grad[2][mask[2]], -0.5)
    # the softplus-only form (no residual) gives the same values and gradient
    plain, none, _ = km_ops.sigmoid_cross_entropy_terms(
        ops.convert_to_tensor(scores.astype("float32")), ops.convert_to_tensor(mask),
        with_residual=False)
    assert none is None
    np.testing.assert_allclose(ops.convert_to_numpy(plain), want_bce, rtol=1e-5, atol=1e-7)
    _, plain_grad = value_and_grad(
        lambda z: ops.sum(km_ops.sigmoid_cross_entropy_terms(
            z, ops.convert_to_tensor(mask), with_residual=False)[0]), scores, "float32")
    np.testing.assert_allclose(plain_grad, want_grad, rtol=1e-5, atol=1e-6)


def test_influence_gradient_norm_identity():
    """IB's ``||softmax(x) - e_y||_1`` equals ``2 (1 - p_y)``: the loss with the
    identity equals the literal formula (no second softmax)."""
    scores, labels = _scores(10, 11, spread=2.0)
    counts = [500, 300, 200, 120, 80, 50, 30, 20, 12, 8]
    norms = np.abs(np.random.default_rng(0).normal(size=(17, 1))) * 5 + 0.1
    y_pred = np.concatenate([scores, norms], axis=1)
    loss = losses.InfluenceBalancedLoss(counts, alpha=1000.0)
    with float64_enabled():
        got = ops.convert_to_numpy(loss(labels, ops.convert_to_tensor(y_pred, "float64")))
    top = scores.max(-1, keepdims=True)
    p = np.exp(scores - top)
    p /= p.sum(-1, keepdims=True)
    one_hot = np.eye(10)[labels]
    ce = -np.log(p[np.arange(17), labels])
    weights = 1.0 / np.asarray(counts, float)
    weights = weights / weights.sum() * 10
    influence = np.abs(p - one_hot).sum(-1) * norms[:, 0]
    want = (weights[labels] * ce * 1000.0 / (influence + 0.001)).mean()
    np.testing.assert_allclose(got, want, rtol=1e-6)


# ------------------------------------------------------------------ max_non_target

def _reference(scores, labels):
    masked = scores.copy()
    masked[np.arange(len(labels)), labels] = -np.inf
    return masked.max(-1), masked.argmax(-1)


@pytest.mark.parametrize("num_classes", [2, 7, 1000])
def test_values_and_indices_match_numpy(num_classes):
    rng = np.random.default_rng(num_classes)
    scores = rng.normal(size=(33, num_classes)).astype("float32")
    labels = rng.integers(0, num_classes, 33).astype("int32")
    # the target is the row maximum in some rows: it must still be excluded
    scores[:5, :] = 0.0
    scores[np.arange(5), labels[:5]] = 9.0
    values, indices = km_ops.max_non_target(ops.convert_to_tensor(scores),
                                            ops.convert_to_tensor(labels))
    want_values, want_indices = _reference(scores, labels)
    np.testing.assert_allclose(ops.convert_to_numpy(values), want_values)
    np.testing.assert_array_equal(ops.convert_to_numpy(indices), want_indices)
    assert str(ops.dtype(indices)) == "int32"


def test_ties_give_the_first_index_like_argmax():
    scores = np.array([[1.0, 3.0, 3.0, 3.0], [3.0, 3.0, 0.0, 3.0]], "float32")
    labels = np.array([1, 0], "int32")
    values, indices = km_ops.max_non_target(ops.convert_to_tensor(scores),
                                            ops.convert_to_tensor(labels))
    np.testing.assert_array_equal(ops.convert_to_numpy(indices), [2, 1])
    np.testing.assert_allclose(ops.convert_to_numpy(values), [3.0, 3.0])


def test_float16_scores_stay_finite():
    scores = np.array([[60000.0, -60000.0, 1.0]], "float16")
    values, indices = km_ops.max_non_target(ops.convert_to_tensor(scores),
                                            ops.convert_to_tensor(np.array([0], "int32")))
    np.testing.assert_allclose(ops.convert_to_numpy(values).astype("float32"), [1.0])
    np.testing.assert_array_equal(ops.convert_to_numpy(indices), [2])


# ----------------------------------------------------------------- hand-written gradients


def _compiled_value_and_grad(function, x):
    """``function(x)`` and its gradient in the training step's mode: ``jax.jit``,
    ``tf.function(jit_compile=True)`` (XLA), eager PyTorch."""
    import keras

    x = np.asarray(x, dtype="float32")
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        value, grad = jax.jit(jax.value_and_grad(function))(x)
        return np.asarray(value), np.asarray(grad)
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def step(z):
            with tf.GradientTape() as tape:
                tape.watch(z)
                value = function(z)
            return value, tape.gradient(value, z)
        value, grad = step(tf.constant(x))
        return value.numpy(), grad.numpy()
    return value_and_grad(function, x)


def _numpy_margin_cross_entropy(scores, labels, scale, exclude, slope, offset):
    """Sum over rows of ``lse(a) - s t`` with ``t = slope z_y + offset`` and its
    gradient, in float64 from the definition (softmax of the adjusted scores)."""
    rows = np.arange(len(labels))
    target = slope * scores[rows, labels] + offset
    adjusted = scores.copy()
    adjusted[rows, labels] = -np.inf if exclude else target
    adjusted = adjusted * scale[:, None]
    top = adjusted.max(-1, keepdims=True)
    lse = np.log(np.exp(adjusted - top).sum(-1)) + top[:, 0]
    probabilities = np.exp(adjusted - lse[:, None])
    grad = scale[:, None] * probabilities
    grad[rows, labels] = scale * slope * (probabilities[rows, labels] - 1.0)
    return float(np.sum(lse - scale * target)), grad


@pytest.mark.parametrize("exclude", [False, True])
@pytest.mark.parametrize("per_sample_scale", [False, True])
@pytest.mark.parametrize("with_shift", [False, True])
def test_margin_cross_entropy_gradient_matches_numpy(exclude, per_sample_scale, with_shift):
    """The core op's gradient (written out on JAX / TensorFlow, autograd on PyTorch)
    equals the softmax formula, including the target's path through ``t(z_y)``."""
    scores, labels = _scores(9, 21, spread=2.0)
    scales = (np.random.default_rng(1).uniform(1.0, 20.0, 17) if per_sample_scale
              else np.full(17, 7.5))
    slope, offset = 0.5, -0.3
    want_value, want_grad = _numpy_margin_cross_entropy(
        scores, labels, scales, exclude, slope, offset)

    def function(z):
        y = ops.convert_to_tensor(labels)
        target = slope * km_ops.gather_target(z, y) + offset
        shift = km_ops.max_non_target(z, y)[0] if with_shift else None
        scale = ops.convert_to_tensor(scales.astype("float32")) if per_sample_scale else 7.5
        return ops.sum(km_ops.margin_softmax_cross_entropy(
            y, z, target_scores=target, scale=scale, exclude_target=exclude,
            non_target_max=shift))

    value, grad = _compiled_value_and_grad(function, scores)
    np.testing.assert_allclose(value, want_value, rtol=1e-5)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("exclude", [False, True])
@pytest.mark.parametrize("shift_kind", ["per_sample", "scalar"])
def test_target_shift_is_an_additive_margin_without_gradient(exclude, shift_kind):
    """``target_shift``: ``t = z_y + shift``, the shift a constant (value and
    gradient of the softmax formula with slope 1), on every backend's path."""
    scores, labels = _scores(9, 21, spread=2.0)
    shifts = (np.random.default_rng(2).uniform(-0.8, 0.3, 17) if shift_kind == "per_sample"
              else None)
    offset = shifts if shifts is not None else -0.35
    want_value, want_grad = _numpy_margin_cross_entropy(
        scores, labels, np.full(17, 6.0), exclude, 1.0, offset)

    def function(z):
        # A shift whose value does not depend on z but whose gradient would.
        total = ops.sum(z)
        shift = (ops.convert_to_tensor(shifts.astype("float32"))
                 * (1.0 + total - ops.stop_gradient(total)) if shifts is not None else -0.35)
        return ops.sum(km_ops.margin_softmax_cross_entropy(
            ops.convert_to_tensor(labels), z, target_shift=shift, scale=6.0,
            exclude_target=exclude))

    value, grad = _compiled_value_and_grad(function, scores)
    np.testing.assert_allclose(value, want_value, rtol=1e-5)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="not both"):
        km_ops.margin_softmax_cross_entropy(
            ops.convert_to_tensor(labels), ops.convert_to_tensor(scores),
            target_scores=ops.convert_to_tensor(scores[:, 0]), target_shift=-0.1)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
def test_sigmoid_focal_sum_matches_numpy_in_value_and_gradient(gamma):
    """``sum_j sigmoid(-u)^gamma softplus(-u)`` against float64 NumPy: values, and
    the gradient against central differences of the NumPy function."""
    scores, labels = _scores(8, 9, spread=10.0)
    mask = np.arange(8)[None, :] == labels[:, None]

    def numpy_terms(x):
        signed = np.where(mask, x, -x)
        return np.exp(-gamma * np.logaddexp(0.0, signed)) * np.logaddexp(0.0, -signed)

    want = numpy_terms(scores).sum(-1)
    value, grad = _compiled_value_and_grad(
        lambda z: ops.sum(km_ops.sigmoid_focal_cross_entropy(
            z, ops.convert_to_tensor(mask), gamma)), scores)
    np.testing.assert_allclose(value, want.sum(), rtol=1e-5)
    eps = 1e-6
    numeric = (numpy_terms(scores + eps) - numpy_terms(scores - eps)) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-6)
    rows = km_ops.sigmoid_focal_cross_entropy(
        ops.convert_to_tensor(scores.astype("float32")), ops.convert_to_tensor(mask), gamma)
    np.testing.assert_allclose(ops.convert_to_numpy(rows), want, rtol=1e-5, atol=1e-6)


def test_gather_target_gradient_is_the_label_mask():
    scores, labels = _scores(6, 4)
    _, grad = _compiled_value_and_grad(
        lambda z: ops.sum(3.0 * km_ops.gather_target(z, ops.convert_to_tensor(labels))),
        scores)
    np.testing.assert_array_equal(grad, 3.0 * (np.arange(6)[None, :] == labels[:, None]))


def test_column_is_the_slice_with_its_gradient_and_on_torch_owns_its_storage():
    scores = _scores(5, 4)[0].astype("float32")
    weights = np.linspace(-2.0, 3.0, scores.shape[0]).astype("float32")
    value, grad = _compiled_value_and_grad(
        lambda z: ops.sum(ops.convert_to_tensor(weights) * km_ops.column(z, 4)), scores)
    np.testing.assert_allclose(value, (weights * scores[:, 4]).sum(), rtol=1e-6)
    want = np.zeros_like(scores)
    want[:, 4] = weights
    np.testing.assert_array_equal(grad, want)
    tensor = ops.convert_to_tensor(scores)
    column = km_ops.column(tensor, 4)
    np.testing.assert_array_equal(ops.convert_to_numpy(column), scores[:, 4])
    if keras.backend.backend() == "torch":  # not a view: saving it keeps no (B, C) alive
        assert column.untyped_storage().nbytes() == 4 * scores.shape[0]
        assert column.untyped_storage().data_ptr() != tensor.untyped_storage().data_ptr()


def test_non_target_max_gradient_splits_among_ties_and_skips_the_target():
    """The written-out gradient of ``max_{j != y}``: the upstream split equally
    among the tied non-target maxima, zero at the target even when it is larger."""
    scores = np.array([[1.0, 3.0, 3.0, 3.0], [3.0, 3.0, 0.0, 3.0], [9.0, 2.0, 5.0, 1.0],
                       [0.5, -1.0, 4.0, 0.25]], "float32")
    labels = np.array([1, 0, 0, 3], "int32")
    weights = np.array([1.0, 2.0, -3.0, 0.5], "float32")
    value, grad = _compiled_value_and_grad(
        lambda z: ops.sum(ops.convert_to_tensor(weights) * km_ops.max_non_target(
            z, ops.convert_to_tensor(labels))[0]), scores)
    want = np.zeros_like(scores)
    want[0, [2, 3]] = 1.0 / 2
    want[1, [1, 3]] = 2.0 / 2
    want[2, 2] = -3.0
    want[3, 2] = 0.5
    np.testing.assert_allclose(value, np.dot(weights, [3.0, 3.0, 5.0, 4.0]), rtol=1e-6)
    np.testing.assert_allclose(grad, want, rtol=1e-6)


import keras  # noqa: E402

if keras.backend.backend() == "jax":
    def test_compiled_core_keeps_no_batch_by_class_residual():
        """Under ``jax.jit`` the LDAM forward + backward program allocates no
        temporary of the scores' size: the softmax is recomputed in the backward
        pass, not stored (XLA memory analysis; C = 4096, batch 256)."""
        import jax
        counts = np.maximum(1, (5000 * 0.01 ** (np.arange(4096) / 4095))).astype("int64")
        loss = losses.LDAMLoss(counts)
        z = np.random.default_rng(0).uniform(-0.9, 0.9, (256, 4096)).astype("float32")
        y = np.random.default_rng(1).integers(0, 4096, 256).astype("int32")
        compiled = jax.jit(jax.value_and_grad(lambda z, y: loss(y, z))).lower(z, y).compile()
        assert compiled.memory_analysis().temp_size_in_bytes < z.nbytes
