"""The LM-Softmax recipes weight samples by class-balanced weights from the start.

LM-Softmax's gradient w.r.t. the target cosine is -1 whatever the confidence
(the non-target softmax weights sum to 1), so unweighted it hands every class a
pull proportional to its count: on long-tailed data the head classes fix the
prototypes. The recipes' class-balanced weights equalise the per-class pulls.
"""

import pathlib
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # applications/ lives beside keras_margins/, not installed
    sys.path.insert(0, str(REPO))

import keras_margins as km  # noqa: E402
from applications.hyperparameters import HYPERPARAMETERS  # noqa: E402
from applications.recipes import get_recipe  # noqa: E402
from backend_utils import loss_value_and_grad, to_numpy  # noqa: E402
from keras_margins.priors import class_balanced_weights  # noqa: E402

FMNIST_LT_COUNTS = [6000, 3596, 2156, 1292, 774, 464, 278, 166, 100, 60]


def _cosines(labels, num_classes=10, seed=0):
    """Cosines in [-0.9, 0.9] with the target clearly ahead (learned samples)."""
    cosines = np.random.RandomState(seed).uniform(-0.9, 0.2, (len(labels), num_classes))
    cosines[np.arange(len(labels)), labels] = 0.9
    return cosines.astype("float32")


def _pulls(loss, labels, num_classes=10):
    """Per class, the total ``-d loss / d c_y`` over that class's samples."""
    _, grad = loss_value_and_grad(loss, labels, _cosines(labels, num_classes))
    target = -grad[np.arange(len(labels)), labels]
    return np.bincount(labels, weights=target, minlength=num_classes)


@pytest.mark.parametrize("name", ["lm-softmax", "lm-softmax-zc"])
def test_lm_softmax_recipes_use_class_balanced_weights_from_the_start(name):
    recipe = get_recipe(name)
    loss = recipe.build_loss(FMNIST_LT_COUNTS)
    scale = HYPERPARAMETERS["lm-softmax"]["scale"]
    beta = HYPERPARAMETERS["class-balanced"]["beta"]
    assert scale == 5.0 and beta == 0.9999        # the paper's s and Cui et al.'s beta
    assert isinstance(loss, km.losses.LMSoftmaxLoss) and loss.scale == scale
    np.testing.assert_allclose(loss.class_weights,
                               class_balanced_weights(FMNIST_LT_COUNTS, beta), rtol=1e-12)
    assert loss.reduction == "mean_with_sample_weight"   # sum w_y l / sum w_y
    assert recipe.stage is None and recipe.callbacks(FMNIST_LT_COUNTS, 6) == []
    assert recipe.zero_centroid == name.endswith("-zc")
    # beta=0 is the unweighted loss: the plain mean of LM-Softmax.
    plain = recipe.build_loss(FMNIST_LT_COUNTS, {"beta": 0.0, "scale": 16.0})
    assert plain.class_weights is None and plain.scale == 16.0


def test_lm_softmax_target_gradient_never_vanishes():
    """d l / d c_y = -1 for every sample, however confident; NormFace's fades."""
    labels = np.array([0, 3, 7, 9])
    cosines = -np.ones((4, 10), "float32")
    cosines[np.arange(4), labels] = 1.0          # perfectly classified samples
    loss = km.losses.LMSoftmaxLoss(5.0, reduction="sum")
    _, grad = loss_value_and_grad(loss, labels, cosines)
    np.testing.assert_allclose(grad[np.arange(4), labels], -1.0, atol=1e-6)
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-5)   # sum_{j!=y} q_j = 1
    _, normface = loss_value_and_grad(km.losses.NormFaceLoss(5.0, reduction="sum"), labels,
                                      cosines)
    assert np.abs(normface[np.arange(4), labels]).max() < 0.01


def test_recipe_weights_equalise_the_per_class_pulls():
    """Labels in the long-tailed proportions: unweighted, the pull on each class
    is its count (ratio 100); with the recipe's weights within a factor 1.5."""
    counts = np.array(FMNIST_LT_COUNTS) // 10   # 600 ... 6 samples
    labels = np.repeat(np.arange(10), counts)
    recipe = get_recipe("lm-softmax-zc")
    unweighted = _pulls(recipe.build_loss(FMNIST_LT_COUNTS, {"beta": 0.0}), labels)
    np.testing.assert_allclose(unweighted / unweighted.sum(), counts / counts.sum(),
                               rtol=1e-4)
    weighted = _pulls(recipe.build_loss(FMNIST_LT_COUNTS), labels)
    assert weighted.max() / weighted.min() < 1.5, weighted
    assert unweighted.max() / unweighted.min() > 90


def test_weighted_value_is_the_weighted_mean():
    labels = np.array([0, 0, 5, 9])
    cosines = _cosines(labels, seed=1)
    loss = get_recipe("lm-softmax").build_loss(FMNIST_LT_COUNTS)
    per_sample = to_numpy(km.losses.LMSoftmaxLoss(5.0, reduction="none")(labels, cosines))
    weights = class_balanced_weights(FMNIST_LT_COUNTS, 0.9999)[labels]
    np.testing.assert_allclose(float(to_numpy(loss(labels, cosines))),
                               (weights * per_sample).sum() / weights.sum(), rtol=1e-5)


def test_lm_softmax_class_weights_survive_serialisation():
    """The recipe's weights are a constructor argument, so a saved loss keeps them."""
    import keras
    from applications.recipes import get_recipe
    loss = get_recipe("lm-softmax-zc").build_loss([5000, 500, 50])
    reloaded = keras.losses.deserialize(keras.losses.serialize(loss))
    np.testing.assert_allclose(reloaded.class_weights, loss.class_weights)
    assert reloaded.reduction == "mean_with_sample_weight"
