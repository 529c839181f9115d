"""Bad input: a clear ValueError naming what was expected and received.

Generic over ``keras_margins.losses.__all__`` (constructor table in
``test_reliability_cases``). Labels outside ``[0, C)`` raise in eager mode;
under ``jit`` (TensorFlow graphs, ``jax.jit``) they cannot be inspected, and
the losses return NaN for those samples (``ops.nan_for_invalid_labels``), so a
reduced batch loss is NaN too: loud, never a silently wrong number.
"""

import inspect

import keras
import numpy as np
import pytest

import keras_margins as km
from backend_utils import BACKEND
from test_reliability_cases import (class_of, extra_columns, has_parameter,
                                    public_loss_classes, make_loss, make_y_pred, numpy, prepare)

CASES = sorted(public_loss_classes())
COUNTS = [40, 20, 9, 5]
BAD_COUNTS = [([], "at least 2"), ([10, 0, 3, 2], "positive"), ([10, -4, 3, 2], "positive"),
              ([10, float("nan"), 3, 2], "finite"), ([10, 2.5, 3, 2], "integer")]
COUNT_CASES = [case for case in CASES if has_parameter(case, "class_counts")]


@pytest.mark.parametrize("counts, message", BAD_COUNTS)
@pytest.mark.parametrize("case", COUNT_CASES)
def test_bad_class_counts(case, counts, message):
    with pytest.raises(ValueError, match=rf"`class_counts`.*{message}.*received"):
        make_loss(case, counts, class_counts=counts)


@pytest.mark.parametrize("counts, message", BAD_COUNTS)
def test_bad_class_counts_in_callbacks_and_metrics(counts, message):
    with pytest.raises(ValueError, match=rf"`class_counts`.*{message}"):
        km.callbacks.DeferredReweighting(counts, start_epoch=1)
    with pytest.raises(ValueError, match=rf"`class_counts`.*{message}"):
        km.metrics.ShotGroupAccuracy(counts, "many")


@pytest.mark.parametrize("case", [c for c in COUNT_CASES
                                  if inspect.signature(class_of(c).__init__)
                                  .parameters["class_counts"].default is inspect.Parameter.empty
                                  or c == "MaxMarginLoss"])
def test_class_counts_of_the_wrong_length_for_the_logits(case):
    loss = prepare(make_loss(case, COUNTS, class_counts=COUNTS))
    rng = np.random.default_rng(0)
    y_pred = make_y_pred(case, rng.uniform(-1, 1, (3, 5)).astype("float32"), rng)
    with pytest.raises(ValueError, match=r"4.*5|5.*4"):
        loss(np.array([0, 1, 2]), y_pred)


@pytest.mark.parametrize("case", CASES)
def test_labels_out_of_range_raise_in_eager_mode(case):
    loss = prepare(make_loss(case, COUNTS))
    rng = np.random.default_rng(0)
    y_pred = make_y_pred(case, rng.uniform(-1, 1, (3, 4)).astype("float32"), rng)
    for bad in (4, -1):
        with pytest.raises(ValueError, match=rf"label {bad}, outside \[0, 4\)"):
            loss(np.array([0, bad, 1]), y_pred)


@pytest.mark.parametrize("case", CASES)
def test_non_integer_sparse_labels_raise_in_eager_mode(case):
    loss = prepare(make_loss(case, COUNTS))
    rng = np.random.default_rng(0)
    y_pred = make_y_pred(case, rng.uniform(-1, 1, (3, 4)).astype("float32"), rng)
    for labels in (np.array([0.0, 3.5, 1.0]), np.array([[0.0], [1.0], [2.25]])):
        with pytest.raises(ValueError, match=r"integer class ids, received (3\.5|2\.25)"):
            loss(labels, y_pred)
    loss(np.array([0.0, 3.0, 1.0]), y_pred)   # integral floats are labels


def _jit(function):
    if BACKEND == "jax":
        import jax
        return jax.jit(function)
    if BACKEND == "tensorflow":
        import tensorflow as tf
        return tf.function(function)
    return None


if BACKEND in ("jax", "tensorflow"):  # torch trains eagerly: the eager check applies
    @pytest.mark.parametrize("case", CASES)
    def test_labels_out_of_range_give_nan_under_jit(case):
        loss = prepare(make_loss(case, COUNTS, reduction="none"))
        mean_loss = prepare(make_loss(case, COUNTS))
        rng = np.random.default_rng(0)
        y_pred = make_y_pred(case, rng.uniform(-1, 1, (4, 4)).astype("float32"), rng)
        labels = np.array([0, 4, 1, -2], dtype="int32")
        values = numpy(_jit(lambda y, p: loss(y, p))(labels, y_pred))
        if values.ndim == 1:
            assert np.all(np.isnan(values[[1, 3]])) and np.all(np.isfinite(values[[0, 2]])), \
                (case, values)
        assert np.isnan(numpy(_jit(lambda y, p: mean_loss(y, p))(labels, y_pred))), case


@pytest.mark.parametrize("shape", [(6,), (2, 3, 4)])
@pytest.mark.parametrize("case", CASES)
def test_y_pred_of_rank_1_or_3(case, shape):
    loss = prepare(make_loss(case, COUNTS))
    shape = shape[:-1] + (shape[-1] + extra_columns(case),)
    with pytest.raises(ValueError, match=r"y_pred.*(rank|shape).*" + str(shape[-1])):
        loss(np.zeros(shape[:1], "int32"), np.zeros(shape, "float32"))


BAD_ARGUMENTS = [("scale", 0.0), ("scale", -1.0), ("scale", float("nan")),
                 ("max_margin", -0.1), ("lam", -0.5), ("margin", -0.2), ("gamma", -1.0),
                 ("tau", -1.0), ("delta_neg", -0.1), ("m3", -0.1), ("m2", 4.0), ("m1", 0.5),
                 ("alpha1", 0.2), ("alpha", -1.0), ("weight", -1.0), ("epsilon", 0.0),
                 ("n_base", 1.0), ("max_scale", 0.0)]


@pytest.mark.parametrize("case", CASES)
def test_out_of_range_hyper_parameters(case):
    checked = 0
    for name, value in BAD_ARGUMENTS:
        if not has_parameter(case, name):
            continue
        if name == "margin" and case == "SphereFaceLoss":
            value = 0.5  # multiplicative margin must be >= 1
        with pytest.raises(ValueError, match=rf"`{name}`.*received"):
            make_loss(case, COUNTS, **{name: value})
        checked += 1
    assert checked >= 1 or not any(has_parameter(case, n) for n, _ in BAD_ARGUMENTS), case


def test_arcface_margin_must_be_below_pi():
    with pytest.raises(ValueError, match=r"`margin`.*\[0, pi\).*received 3.2"):
        km.losses.ArcFaceLoss(3.2, 16.0)
    with pytest.raises(ValueError, match=r"`alpha2` must be <= alpha1"):
        km.losses.GMSoftmaxLoss(1.0, 2.0, 0.0, 0.0, 16.0)


@pytest.mark.parametrize("case", CASES)
def test_callbacks_on_a_model_whose_loss_cannot_be_switched(case):
    loss = prepare(make_loss(case, COUNTS))
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(4 + extra_columns(case))(inputs))
    model.compile(optimizer="sgd", loss=loss)
    for callback, accepted in (
            (km.callbacks.DeferredReweighting(COUNTS, 0),
             bool(getattr(loss, "accepts_class_weights", False))),
            (km.callbacks.GradientAdjustment(0), isinstance(loss, km.losses.KPSLoss))):
        callback.set_model(model)
        if accepted:
            callback.on_train_begin()
            callback.on_epoch_begin(0)
            assert callback.second_stage is True
        else:
            with pytest.raises(ValueError, match=rf"{type(callback).__name__} needs a model "
                                                 rf"compiled with .*received loss"):
                callback.on_train_begin()


# ------------------------------------------------------------------ data builders

def _folder(root, classes=("a", "b"), images=2, payload=b"\xff\xd8\xff\xe0fakejpeg"):
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(images):
            (root / name / f"{i}.jpg").write_bytes(payload)
    return root


def test_data_builders_reject_bad_input(tmp_path):
    data = km.data
    with pytest.raises(ValueError, match="image folder not found"):
        data.image_folder_lt(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        data.image_folder_lt(tmp_path / "empty")
    _folder(tmp_path / "empty_class", classes=("a",))
    (tmp_path / "empty_class" / "b").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        data.image_folder_lt(tmp_path / "empty_class")
    _folder(tmp_path / "unreadable", payload=b"not an image")
    with pytest.raises(ValueError, match=r"unreadable image file .*\.jpg"):
        data.image_folder_lt(tmp_path / "unreadable", imbalance_ratio=1, max_count=2)
    x = np.zeros((8, 4, 4, 3), "uint8")
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    for ratio in (0.5, 0.0, -3, float("nan")):
        with pytest.raises(ValueError, match=r"`imbalance_ratio` must be a .*number >= 1"):
            data.arrays_lt(x, y, imbalance_ratio=ratio)
        with pytest.raises(ValueError, match="imbalance_ratio"):
            data.image_folder_lt(_folder(tmp_path / "ok"), imbalance_ratio=ratio)
    with pytest.raises(ValueError, match="not found"):
        data.fashion_mnist_lt(idx_dir=tmp_path / "missing", download=False)
    with pytest.raises(ValueError, match="split file not found"):
        data.split_file_lt(tmp_path / "no_train.txt", tmp_path / "no_test.txt", tmp_path)
