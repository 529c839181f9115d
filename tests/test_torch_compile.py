"""``torch.compile`` (Keras' ``jit_compile=True`` on PyTorch) traces every loss whole,
with static or symbolic (batch, classes) shapes.

The eager-only checks (label values, class-weight vectors) read tensor values,
which splits a compiled graph; under ``torch.compile`` they are skipped as under
``jit`` on the other backends, and NumPy constants become tensors without Keras'
dtype inspection. Checked with dynamo's own graph-break count, and the compiled
value and gradient against eager (``aot_eager``: AOTAutograd traces forward and
backward like inductor, without its code generation, which takes seconds per
graph on a CPU).
"""

import functools

import keras
import numpy as np
import pytest

import keras_margins as km
from backend_utils import BACKEND
from test_reliability_cases import loss_case_names, make_loss, make_y_pred, prepare

if BACKEND == "torch":
    import torch

    COUNTS = [50, 20, 9, 5]

    def _inputs(case, seed=0):
        rng = np.random.default_rng(seed)
        scores = rng.uniform(-0.9, 0.9, (8, len(COUNTS))).astype("float32")
        labels = np.array([0, 1, 2, 3, 3, 2, 1, 0], "int64")
        return torch.tensor(labels), torch.tensor(make_y_pred(case, scores, rng))

    def _graph_breaks(function, *args):
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(function)(*args)
        return explanation.graph_break_count, [str(b.reason).splitlines()[0]
                                               for b in explanation.break_reasons]

    def _value_and_grad(function, y, z):
        z = z.detach().clone().requires_grad_(True)
        value = function(y, z)
        (grad,) = torch.autograd.grad(value, z)
        return value.detach().numpy(), grad.numpy()

    @pytest.mark.parametrize("case", loss_case_names())
    def test_every_loss_compiles_without_graph_breaks_and_matches_eager(case):
        """No graph break with static shapes; compiled with symbolic (batch,
        classes) shapes (Keras' last, smaller batch recompiles so), value and
        gradient equal eager at two batch sizes."""
        loss = prepare(make_loss(case, COUNTS), np.random.default_rng(1))
        y, z = _inputs(case)
        breaks, reasons = _graph_breaks(lambda y, z: loss(y, z), y, z)
        assert breaks == 0, (case, reasons)
        torch._dynamo.reset()
        compiled = torch.compile(lambda y, z: loss(y, z), backend="aot_eager", fullgraph=True,
                                 dynamic=True)
        for size in (8, 5):
            value, grad = _value_and_grad(compiled, y[:size], z[:size])
            want_value, want_grad = _value_and_grad(lambda y, z: loss(y, z), y[:size], z[:size])
            np.testing.assert_allclose(value, want_value, rtol=1e-6, err_msg=case)
            np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-7, err_msg=case)
            assert np.any(grad != 0), case

    def test_class_weights_and_soft_labels_compile_without_graph_breaks():
        loss = km.losses.LDAMLoss(COUNTS, class_weights=[0.5, 1.0, 2.0, 4.0])
        _, z = _inputs("LDAMLoss")
        soft = torch.tensor(np.eye(4, dtype="float32")[[0, 1, 2, 3, 3, 2, 1, 0]] * 0.7
                            + np.eye(4, dtype="float32")[[1, 2, 3, 0, 0, 1, 2, 3]] * 0.3)
        breaks, reasons = _graph_breaks(lambda y, z: loss(y, z), soft, z)
        assert breaks == 0, reasons
        torch._dynamo.reset()
        compiled = torch.compile(lambda y, z: loss(y, z), backend="aot_eager", fullgraph=True)
        np.testing.assert_allclose(_value_and_grad(compiled, soft, z)[0],
                                   _value_and_grad(lambda y, z: loss(y, z), soft, z)[0], rtol=1e-6)

    def test_labels_outside_the_classes_give_nan_when_compiled_and_an_error_in_eager():
        loss = km.losses.LDAMLoss(COUNTS, reduction=None)
        _, z = _inputs("LDAMLoss")
        y = torch.tensor([0, 1, 2, 7, 3, 2, 1, 0])
        with pytest.raises(ValueError, match="outside"):
            loss(y, z)
        torch._dynamo.reset()
        values = torch.compile(lambda y, z: loss(y, z), backend="aot_eager", fullgraph=True)(y, z)
        values = values.detach().numpy()
        assert np.isnan(values[3]) and np.all(np.isfinite(np.delete(values, 3)))

    @pytest.mark.parametrize("metric", [
        lambda: km.metrics.PerClassAccuracy(4), lambda: km.metrics.BalancedAccuracy(4),
        lambda: km.metrics.ShotGroupAccuracy([500, 50, 10, 2]),
        lambda: km.metrics.ExpectedCalibrationError(from_logits=True)])
    def test_every_metric_updates_without_graph_breaks(metric):
        """Keras updates compiled metrics inside the compiled train step."""
        y, z = _inputs("LDAMLoss")
        compiled, eager = metric(), metric()
        breaks, reasons = _graph_breaks(lambda y, z: compiled.update_state(y, z), y, z)
        assert breaks == 0, reasons
        eager.update_state(y, z)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(compiled.result()),
                                   keras.ops.convert_to_numpy(eager.result()), rtol=1e-6)

    def _train_step_graph_breaks(monkeypatch, head, loss):
        """Dynamo's graph breaks over one epoch of ``fit(jit_compile=True)``."""
        monkeypatch.setattr(torch, "compile", functools.partial(torch.compile,
                                                                backend="aot_eager"))
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        keras.utils.set_random_seed(0)
        inputs = keras.Input((6,))
        model = keras.Model(inputs, head(keras.layers.Dense(8, activation="relu")(inputs)))
        model.compile(optimizer="sgd", loss=loss, jit_compile=True)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(32, 6)).astype("float32")
        history = model.fit(x, rng.integers(0, 4, 32), batch_size=16, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][-1])
        return sum(torch._dynamo.utils.counters["graph_break"].values())

    def test_compiled_train_step_breaks_no_more_than_with_keras_cross_entropy(monkeypatch):
        """Keras' own train step breaks the graph (``backward``, metric updates);
        a margin loss, a cosine head and the zero-centroid regulariser add none."""
        ce = _train_step_graph_breaks(
            monkeypatch, lambda h: keras.layers.Dense(4)(h),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        margin = _train_step_graph_breaks(
            monkeypatch,
            lambda h: km.layers.CosineDense(4, kernel_regularizer=km.regularizers.ZeroCentroid(0.1))(h),
            km.losses.LDAMLoss(COUNTS, class_weights=[0.5, 1.0, 2.0, 4.0]))
        assert margin == ce
