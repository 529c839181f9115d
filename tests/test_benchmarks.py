"""The benchmark scripts run end to end (tiny settings) and print their tables.

Not timings: the scripts must keep working when a loss or the data package
changes, and their reports must hold what the README's Performance section
pastes (ratios, memory, cross-backend values), and their inputs must live on
Keras' default device (a GPU when there is one), which the reports name.
"""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BACKEND = keras.backend.backend()
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))


def _expected_device():
    """The backend's own default device, spelled as the reports spell it."""
    if BACKEND == "torch":
        import torch
        from keras.src.backend.torch.core import get_device

        device = torch.device(get_device())
        if device.type == "cuda":
            assert torch.cuda.is_available()
            return f"cuda:{torch.cuda.current_device() if device.index is None else device.index}"
        assert not torch.cuda.is_available(), "Keras ignores the CUDA device"
        return str(device)
    if BACKEND == "jax":
        import jax

        device = jax.devices()[0]
        return f"{device.platform}:{device.id}"
    import tensorflow as tf

    spec = tf.DeviceSpec.from_string(keras.ops.zeros((1,)).device)
    expected = "gpu:0" if tf.config.list_logical_devices("GPU") else "cpu:0"
    assert f"{spec.device_type}:{spec.device_index}".lower() == expected
    return expected


def _device_of(tensor):
    if BACKEND == "torch":
        return str(tensor.device)
    if BACKEND == "jax":
        (device,) = tensor.devices()
        return f"{device.platform}:{device.id}"
    import tensorflow as tf

    spec = tf.DeviceSpec.from_string(tensor.device)
    return f"{spec.device_type}:{spec.device_index}".lower()


def test_benchmark_inputs_live_on_the_default_device():
    """Scores, labels and the training batch: backend tensors on the default device."""
    import driver
    from loss_overhead import _inputs
    from train_step import _batch

    expected = _expected_device()
    assert driver.default_device() == expected
    scores, labels = _inputs(7, 4, extra=1)
    x, y = _batch(2, 3)
    for tensor in (scores, labels, x, y):
        assert keras.ops.is_tensor(tensor) and not isinstance(tensor, np.ndarray)
        assert _device_of(tensor) == expected
    assert tuple(scores.shape) == (4, 8) and tuple(x.shape) == (2, 32, 32, 3)
    assert keras.backend.standardize_dtype(labels.dtype) == "int32"
    # same values on every backend
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(_batch(2, 3)[0]),
                                  keras.ops.convert_to_numpy(x))


if BACKEND == "torch":   # only torch can move Keras' default device to "meta"
    def test_benchmark_inputs_and_device_field_follow_keras_default_device():
        """With Keras' torch device switched (to "meta"), inputs and the field follow it."""
        import driver
        from loss_overhead import _inputs
        from train_step import _batch

        with keras.device("meta"):
            assert driver.default_device() == "meta"
            scores, labels = _inputs(5, 3, extra=0)
            x, _ = _batch(2, 3)
        assert {scores.device.type, labels.device.type, x.device.type} == {"meta"}
        assert driver.default_device() == _expected_device()


def _run(script, *args, tmp_path):
    out = tmp_path / "report.json"
    table = tmp_path / "table.md"
    env = dict(os.environ, KERAS_BACKEND=BACKEND)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--backends", BACKEND,
         *args, "--out", str(out), "--markdown", str(table)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), table.read_text()


def test_loss_overhead_reports_ratios_against_cross_entropy(tmp_path):
    report, table = _run("loss_overhead.py", "--classes", "10", "--losses", "LDAMLoss",
                         "LMSCELoss", "InfluenceBalancedLoss", "--repeats", "1",
                         "--min-time", "0.001", "--batch-size", "16", tmp_path=tmp_path)
    (backend,) = report["backends"]
    assert backend["backend"] == BACKEND and "error" not in backend
    assert backend["device"] == _expected_device()
    assert f"### {BACKEND}, {backend['device']}:" in table
    rows = {r["loss"]: r for r in backend["results"]}
    assert set(rows) == {"CrossEntropy", "LDAMLoss", "LMSCELoss", "InfluenceBalancedLoss"}
    for name, row in rows.items():
        assert "error" not in row, row
        assert row["ms"] > 0 and row["ratio"] > 0
        if backend["device"].startswith("cuda") or backend["device"].startswith("gpu"):
            if BACKEND != "jax":  # JAX reports its compiled programs' memory instead
                assert row["peak_memory_bytes"] > 0
        else:
            assert row["peak_memory_bytes"] is None
    assert rows["CrossEntropy"]["ratio"] == 1.0
    assert "| LMSCELoss |" in table and "C=10" in table


def test_train_step_reports_throughput_loss_share_and_backend_value(tmp_path):
    report, table = _run("train_step.py", "--losses", "LDAMLoss", "--batch-size", "4",
                         "--steps", "1", "--repeats", "1", "--pipeline-seconds", "0.2",
                         tmp_path=tmp_path)
    (backend,) = report["backends"]
    assert "error" not in backend, backend
    assert backend["device"] == _expected_device()
    assert f"{BACKEND} {backend['device']}" in table
    ce, ldam = backend["losses"]["CrossEntropy"], backend["losses"]["LDAMLoss"]
    assert ce["images_per_s"] > 0 and ldam["images_per_s"] > 0
    assert ldam["loss_only_ms"] > 0 and "loss_share_vs_ce_step" in ldam
    # both losses evaluated on identical weights and batch: finite, positive values
    values = backend["check_values"]
    assert 0 < values["CrossEntropy"] < 50 and 0 < values["LDAMLoss"] < 100
    assert backend["pipeline"]["images_per_s"] > 0
    assert "loss alone, extra / CE step" in table and "| LDAMLoss |" in table


def test_compare_revisions_times_two_checkouts_side_by_side(tmp_path):
    """Against itself (--before = this checkout): both columns filled, same losses."""
    out = tmp_path / "compare.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compare_revisions.py"), "--before",
         str(ROOT), "--backends", BACKEND, "--losses", "LMSCELoss", "--classes", "10",
         "--repeats", "1", "--min-time", "0.001", "--batch-size", "8", "--out", str(out)],
        cwd=tmp_path, env=dict(os.environ, KERAS_BACKEND=BACKEND), capture_output=True,
        text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads(out.read_text())
    assert row["loss"] == "LMSCELoss" and row["classes"] == 10 and row["backend"] == BACKEND
    assert row["before"] > 0 and row["after"] > 0
    # the same code on both sides moves the same bytes
    assert row["before_traffic"] == row["after_traffic"] > 0
    assert "| LMSCELoss | 10 |" in proc.stdout and "traffic after / CE" in proc.stdout


if BACKEND == "torch":
    def test_compare_revisions_compiles_both_sides_with_torch_compile(tmp_path):
        """``--torch-compile``: both checkouts' losses compiled whole, rows labelled."""
        out = tmp_path / "compare.json"
        proc = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "compare_revisions.py"), "--before",
             str(ROOT), "--backends", "torch", "--torch-compile", "--losses", "LDAMLoss",
             "--classes", "10", "--repeats", "1", "--min-time", "0.001", "--batch-size", "8",
             "--out", str(out)],
            cwd=tmp_path, env=dict(os.environ, KERAS_BACKEND="torch"), capture_output=True,
            text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (row,) = json.loads(out.read_text())
        assert row["backend"] == "torch.compile" and row["before"] > 0 and row["after"] > 0
        assert "before_traffic" not in row  # inductor's kernels are not ATen operators
        assert "| torch.compile | LDAMLoss | 10 |" in proc.stdout


# ------------------------------------------------------------------------ traffic.py

_HLO = """HloModule m, entry_computation_layout={(f32[4,8]{1,0})->(f32[4]{0})}

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %s = f32[] add(f32[] %a, f32[] %b)
}

ENTRY %main (p: f32[4,8]) -> (f32[4]) {
  %p = f32[4,8]{1,0} parameter(0)
  %v = f32[32]{0} bitcast(f32[4,8]{1,0} %p)
  %c = f32[] constant(0)
  %e = f32[4,8]{1,0} exponential(f32[4,8]{1,0} %p)
  %r = f32[4]{0} reduce(f32[4,8]{1,0} %e, f32[] %c), dimensions={1}, to_apply=%add
  ROOT %t = (f32[4]{0}) tuple(f32[4]{0} %r)
}
"""


def test_hlo_bytes_accessed_counts_kernel_operands_and_results():
    """exp: 128 B in + 128 B out; reduce: 128 + 4 in, 16 out; parameter, bitcast,
    constant and tuple move nothing; the nested ``%add`` computation is not a kernel."""
    from traffic import hlo_bytes_accessed

    assert hlo_bytes_accessed(_HLO) == 256 + 148
    with pytest.raises(ValueError, match="ENTRY"):
        hlo_bytes_accessed("HloModule m\n")


# eager PyTorch: bytes / CE bytes. The scaled scores are copied once more to shift the
# target column (LDAM, CosFace); KPS also scales by r_j; MM and ELM also take the
# non-target maximum (ELM its argmax).
_EAGER_TORCH_TRAFFIC = {"LDAMLoss": 1.8, "CosFaceLoss": 1.8, "KPSLoss": 2.3,
                        "MaxMarginLoss": 2.25, "ELMLoss": 2.35, "ArcFaceLoss": 2.45,
                        "LMSoftmaxLoss": 2.45}


@pytest.mark.parametrize("loss_name", sorted(_EAGER_TORCH_TRAFFIC))
def test_loss_traffic_is_reported_and_the_core_moves_at_most_cross_entropy_bytes(loss_name):
    """The step builders count bytes moved on every backend (deterministic, unlike
    time). The margin losses over 2,048 classes move at most 1.1x Keras'
    cross-entropy bytes under XLA (the core's written-out gradient); on eager
    PyTorch, whose kernels are unfused, at most the bound above."""
    from loss_overhead import _inputs, step_builder
    from loss_zoo import constructors, long_tail_counts

    counts = long_tail_counts(2048)
    build = step_builder(BACKEND)
    scores, labels = _inputs(2048, 64, extra=0)
    _, _, ce_bytes = build(keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                           scores, labels)
    _, _, loss_bytes = build(constructors()[loss_name][0](counts), scores, labels)
    one_pass = 64 * 2048 * 4
    assert ce_bytes >= 2 * one_pass and loss_bytes >= 2 * one_pass  # read + write at least
    bound = _EAGER_TORCH_TRAFFIC[loss_name] if BACKEND == "torch" else 1.1
    if BACKEND == "tensorflow" and loss_name == "ELMLoss":
        bound = 1.4  # TensorFlow's CPU program writes the masked scores before their max
    assert loss_bytes <= bound * ce_bytes, loss_bytes / ce_bytes


if BACKEND == "torch":
    @pytest.mark.parametrize("loss_name", ["ArcFaceLoss", "GMSoftmaxLoss", "MaxMarginLoss",
                                           "LabelAwareSmoothingLoss", "LMSoftmaxLoss",
                                           "InfluenceBalancedLoss", "LDAMLoss"])
    def test_eager_torch_losses_keep_cross_entropys_autograd_memory(loss_name):
        """Tensors autograd keeps for the backward pass, deduplicated by storage:
        the gathered target keeps no (batch, classes) tensor alive (``index_select``
        into the flattened scores, not ``gather``, which keeps its input) and
        LM-Softmax's excluded target is a scatter, not a mask, so these losses keep
        what PyTorch's cross-entropy keeps (its log-softmax). With ``gather`` the
        first four kept 2x, with the mask LM-Softmax 1.25x; influence-balanced
        kept all of ``y_pred`` through a view of its feature-norm column (2x)."""
        from loss_overhead import _inputs, step_builder
        from loss_zoo import constructors, long_tail_counts

        make, extra = constructors()[loss_name]   # extra: IB's feature-norm column
        build = step_builder("torch")
        _, ce_memory, _ = build(keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                                *_inputs(2048, 64, extra=0))
        _, memory, _ = build(make(long_tail_counts(2048)), *_inputs(2048, 64, extra=extra))
        assert ce_memory >= 64 * 2048 * 4    # the (batch, classes) log-softmax
        assert memory <= 1.05 * ce_memory, memory / ce_memory

    def test_torch_traffic_counts_operators_and_skips_views():
        import torch
        from traffic import TorchTraffic

        x, y = torch.ones(4, 8), torch.ones(4, 8)
        with TorchTraffic() as traffic:
            x.t()              # a view: nothing moves
            (x + y).sum()      # add: 3 x 128 B; sum: 128 B in, 4 B out
        assert traffic.bytes == 3 * 128 + 132 and traffic.operators == 2


def test_loss_overhead_summary_counts_losses_within_each_backends_target():
    from loss_overhead import summary

    def row(loss, ratio, traffic):
        return {"loss": loss, "classes": 1000, "ratio": ratio, "traffic_ratio": traffic}
    report = {"backends": [
        {"backend": "jax", "device": "gpu:0", "results": [
            row("CrossEntropy", 1.0, 1.0), row("A", 1.05, 0.6), row("B", 1.4, 1.2)]},
        {"backend": "torch", "device": "cuda:0", "results": [
            row("CrossEntropy", 1.0, 1.0), row("A", 1.25, 2.0), row("B", 1.35, 1.1)]},
        {"backend": "torch", "mode": "torch.compile", "device": "cpu", "results": [
            row("CrossEntropy", 1.0, None), row("A", 1.05, None), row("B", 1.2, None)]},
        {"backend": "tensorflow", "error": "failed"}]}
    lines = summary(report).splitlines()
    assert lines[0] == "| Backend (device) | Measure | Target | C=1000 |"
    assert lines[2] == "| jax (gpu:0) | time | 1.1x | 1/2; worst B 1.40 |"
    assert lines[3] == "| jax (gpu:0) | traffic | 1.1x | 1/2; worst B 1.20 |"
    assert lines[4] == "| torch (cuda:0) | time | 1.3x | 1/2; worst B 1.35 |"
    assert lines[5] == "| torch (cuda:0) | traffic | 1.3x | 1/2; worst A 2.00 |"
    # compiled PyTorch fuses like XLA: XLA's target, no traffic count
    assert lines[6] == "| torch.compile (cpu) | time | 1.1x | 1/2; worst B 1.20 |"
    assert len(lines) == 7


def test_loss_overhead_table_of_two_reports_puts_each_backends_devices_side_by_side(
        tmp_path, capsys):
    """``--table cpu.json gpu.json --summary``: one table, a backend's CPU and GPU
    rows adjacent (in the order the backends first appear), each C of either."""
    from loss_overhead import main

    def backend(name, device, classes, ratio, **extra):
        return {"backend": name, "device": device, **extra, "results": [
            {"loss": loss, "classes": c, "ratio": value, "traffic_ratio": None}
            for c in classes for loss, value in (("CrossEntropy", 1.0), ("A", ratio))]}
    cpu = {"backends": [backend("jax", "cpu:0", (1000, 8142), 1.2),
                        backend("torch", "cpu", (1000, 8142), 2.0)]}
    gpu = {"backends": [backend("torch", "cuda:0", (1000, 100000), 1.25),
                        backend("jax", "gpu:0", (1000, 100000), 1.05),
                        backend("torch", "cuda:0", (1000,), 1.5, mode="torch.compile")]}
    paths = []
    for name, report in (("cpu", cpu), ("gpu", gpu)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(report))
    markdown_path = tmp_path / "summary.md"
    main(["--table", *map(str, paths), "--summary", "--markdown", str(markdown_path)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == markdown_path.read_text().strip().splitlines()
    assert lines[0] == "| Backend (device) | Measure | Target | C=1000 | C=8142 | C=100000 |"
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| jax (cpu:0)", "| jax (gpu:0)", "| torch (cpu)", "| torch (cuda:0)",
        "| torch.compile (cuda:0)"]
    assert lines[3] == "| jax (gpu:0) | time | 1.1x | 1/1; worst A 1.05 | – | 1/1; worst A 1.05 |"
    assert lines[4] == "| torch (cpu) | time | 1.3x | 0/1; worst A 2.00 | 0/1; worst A 2.00 | – |"
    # the full table of the same two reports: one section per backend and device
    main(["--table", *map(str, paths)])
    headings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("###")]
    assert [h.split(":")[0] for h in headings] == [
        "### jax, cpu", "### torch, cpu", "### torch, cuda", "### jax, gpu",
        "### torch.compile, cuda"]


if BACKEND == "torch":
    def test_torch_compile_loss_step_is_one_graph_and_labelled():
        """``--torch-compile`` compiles the loss whole (``fullgraph``: a graph break
        is an error) and the report names the mode in its heading."""
        import torch
        from loss_overhead import _inputs, markdown, step_builder
        from loss_zoo import constructors, long_tail_counts

        torch._dynamo.reset()
        run, memory, traffic = step_builder("torch", torch_compile=True)(
            constructors()["LDAMLoss"][0](long_tail_counts(16)), *_inputs(16, 4, extra=0))
        assert np.isfinite(float(run())) and memory > 0 and traffic is None
        report = {"backends": [{"backend": "torch", "mode": "torch.compile", "device": "cpu",
                                "results": [{"loss": "CrossEntropy", "classes": 16, "ms": 1.0}]}]}
        assert markdown(report).startswith("### torch.compile, cpu: forward+backward time / CE")


if BACKEND == "jax":  # the same loop on every backend; timed once per suite
    def test_data_pipeline_measures_the_device_pipelines_fit_loop(tmp_path, datasets_dir):
        """``--pipelines device``: the whole long-tailed subset through ``fit`` on a
        do-nothing model with on-device crops, once per ``steps_per_execution``."""
        import data_pipeline

        out, table = tmp_path / "pipeline.json", tmp_path / "pipeline.md"
        data_pipeline.main(["--pipelines", "device", "--epochs", "2", "--out", str(out),
                            "--markdown", str(table)])
        report = json.loads(out.read_text())
        assert report["train_size"] == 12406   # CIFAR-10-LT, ratio 100
        labels = [f"device, steps_per_execution={steps}" for steps in (1, 8)]
        for label in labels:
            rows = [r for r in report["rows"] if r["pipeline"] == label]
            assert [r["epoch"] for r in rows] == ["build", 1, 2]
            assert rows[0]["seconds"] > 0
            for row in rows[1:]:   # every image of the subset, every epoch
                assert row["images"] == 12406
                assert row["images_per_s"] == pytest.approx(12406 / row["seconds"])
            assert f"| {label} | instance-balanced |" in table.read_text()


def test_cc_sam_radius_measures_the_head_of_a_saved_model(tmp_path, datasets_dir):
    """The perturbation's relative size is positive for every class of the batches
    and scales linearly with kappa (identity of CC-SAM's radius rule)."""
    import cc_sam_radius

    inputs = keras.Input((32, 32, 3), name="images")
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(pooled))
    path = str(tmp_path / "model.keras")
    model.save(path)
    small = cc_sam_radius.measure(path, str(datasets_dir), batches=2, radius=1e-6)
    large = cc_sam_radius.measure(path, str(datasets_dir), batches=2, radius=3e-6)
    assert small["classes"] and all(c["median"] > 0 for c in small["classes"])
    assert [c["count"] for c in small["classes"]] == sorted(
        (c["count"] for c in small["classes"]), reverse=True)
    for a, b in zip(small["classes"], large["classes"]):
        np.testing.assert_allclose(b["median"], 3 * a["median"], rtol=1e-9)
    table = cc_sam_radius.table(small)
    assert table.count("\n| ") == len(small["classes"]) + 1 and "kappa = 1e-06" in table
