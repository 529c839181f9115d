"""ResNet-32 CIFAR-LT training-step throughput per backend, CE versus each loss.

Per backend (one subprocess each) every loss gets its own ResNet-32
(``applications.models.resnet32``; cosine head, ``dense_l1`` for
InfluenceBalancedLoss, the statistics layer appended for EqualizationLossV2)
compiled with SGD (momentum 0.9) and ``jit_compile=True`` on JAX and
TensorFlow (eager autograd on torch). ``train_on_batch`` on one fixed CIFAR-
shaped batch is timed round-robin over all losses (CE first in every round),
``--repeats`` rounds of ``--steps`` steps; the reported figures are the median
images/s and the median over rounds of ``time(loss) / time(CE)`` minus 1 (the
extra cost of the loss over CE). A measurement, not a test.

The batch is made with NumPy (the same on every backend) and converted with
``keras.ops.convert_to_tensor`` onto Keras' default device (torch: CUDA when
available), so every step reads it there; each backend's result names that
device (``device``: "cpu", "cuda:0", "cpu:0", "gpu:0", also in the table) and,
on a GPU, the peak device memory of each loss's build and first two steps
(``peak_memory_bytes``: ``torch.cuda.max_memory_allocated`` or TensorFlow's
``get_memory_info``).

Next to it: the input pipeline's images/s (``keras_margins.data.arrays_lt`` on
synthetic uint8 CIFAR-shaped arrays: long-tailed subsampling, CIFAR
augmentation, batch 128, tf.data), so the step can be compared to what the
pipeline can feed.

Cross-backend check (``--check``, on by default): the same weights (a fixed
numpy initialisation, identical on every backend) and the same batch give the
loss value of every loss on every backend; the report lists the largest
relative difference between backends against the tolerance ``--rtol``.

    python benchmarks/train_step.py                 # all backends, all losses
    python benchmarks/train_step.py --quick         # a few losses, short
    python benchmarks/train_step.py --backends jax --losses LDAMLoss ELMLoss --repeats 5
    python benchmarks/train_step.py --table train_step.json   # the table of a report
"""

import json
import pathlib
import sys
import time

from driver import BACKENDS, PeakMemory, default_device, median, new_report, parser, \
    prepare_worker, run_backends, timed, to_device, write_outputs, write_worker_result
from loss_overhead import CE

QUICK_LOSSES = ["LDAMLoss", "ELMLoss", "MaxMarginLoss", "KPSLoss", "LMSCELoss",
                "SampleMarginLoss", "InfluenceBalancedLoss"]


def _batch(batch_size, num_classes, seed=0):
    """``(x, y)`` on Keras' default device, the same values on every backend."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch_size, 32, 32, 3)).astype("float32")
    y = rng.integers(0, num_classes, size=(batch_size,)).astype("int32")
    return to_device(x, y)


def _fixed_weights(model, seed=0):
    """Deterministic weights from numpy, identical on every backend."""
    import numpy as np

    for index, variable in enumerate(model.weights):
        rng = np.random.default_rng(seed + index)
        shape = tuple(variable.shape)
        path = variable.path
        if "moving_variance" in path or path.endswith("gamma"):
            value = rng.uniform(0.8, 1.2, size=shape)
        elif len(shape) >= 2:
            fan_in = int(np.prod(shape[:-1]))
            value = rng.normal(size=shape) * np.sqrt(2.0 / fan_in)
        else:
            value = 0.05 * rng.normal(size=shape)
        if "gradients" in path or "update_flag" in path:  # EQLv2 statistics: keep
            continue
        variable.assign(value.astype(variable.dtype))


def _build(name, table, counts, seed=0):
    import keras

    from applications.models import resnet32

    if name == CE:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        extra = 0
    else:
        make, extra = table[name]
        loss = make(counts)
    model = resnet32(len(counts), head="dense_l1" if extra else "cosine", seed=seed)
    if hasattr(loss, "statistics_layer"):  # EQLv2: the statistics live in the model
        model = keras.Model(model.inputs, loss.statistics_layer()(model.outputs[0]))
    return model, loss


def _pipeline_throughput(batch_size, seconds):
    """images/s of keras_margins.data.arrays_lt (synthetic CIFAR arrays, augmentation)."""
    import numpy as np

    try:
        from keras_margins import data
    except Exception as error:  # data package not landed
        return {"error": f"{type(error).__name__}: {error}"}
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(50000, 32, 32, 3), dtype="uint8")
    y = np.repeat(np.arange(10), 5000)
    try:
        train_ds, _, info = data.arrays_lt(x, y, imbalance_ratio=100, augment="cifar",
                                           mean=data.CIFAR10_MEAN, std=data.CIFAR10_STD,
                                           batch_size=batch_size)
    except Exception as error:
        return {"error": f"{type(error).__name__}: {str(error)[:200]}"}
    for _ in train_ds.take(2):  # warm up
        pass
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _, labels in train_ds:
            count += int(labels.shape[0])
            if time.perf_counter() - start >= seconds:
                break
    return {"images_per_s": count / (time.perf_counter() - start),
            "images": count, "train_size": int(sum(info.class_counts))}


def _loss_share(out, table, counts, args):
    """The loss's own extra cost, as a share of the CE step.

    The step of every loss runs the same network, optimizer and batch; only the
    loss's forward + backward on the (batch, classes) head outputs differs. That
    part is timed alone (compiled as in ``loss_overhead.py``, many calls, median
    of rounds, CE interleaved) and ``(t_loss - t_CE) / t_step(CE)`` is reported:
    a figure that does not drown in the step's round-to-round noise.
    """
    import keras

    from loss_overhead import _inputs, step_builder

    build = step_builder(keras.backend.backend())
    runs = {}
    for name, result in out["losses"].items():
        if "error" in result:
            continue
        if name == CE:
            loss, extra = keras.losses.SparseCategoricalCrossentropy(from_logits=True), 0
        else:
            make, extra = table[name]
            loss = make(counts)
        scores, labels = _inputs(len(counts), args.batch_size, extra)
        runs[name], _, _ = build(loss, scores, labels)
        runs[name]()
        runs[name]()
    calls = max(1, int(0.05 / max(timed(runs[CE], 3), 1e-6)))
    times = {name: [] for name in runs}
    for _ in range(5):
        for name, run in runs.items():
            times[name].append(timed(run, calls))
    ce_loss_s = median(times[CE])
    ce_step_s = out["losses"][CE]["step_ms"] / 1e3
    for name in runs:
        loss_s = median(times[name])
        out["losses"][name].update(loss_only_ms=1e3 * loss_s,
                                   loss_share_vs_ce_step=(loss_s - ce_loss_s) / ce_step_s)


def worker(args):
    backend = prepare_worker()
    import keras
    import numpy as np

    from loss_zoo import constructors, long_tail_counts, loss_names

    table = constructors()
    names, missing = loss_names(args.losses)
    counts = long_tail_counts(args.num_classes)
    device = default_device()
    peak = PeakMemory(device)
    out = {"backend": backend, "device": device, "missing_constructors": missing,
           "losses": {}}
    x, y = _batch(args.batch_size, args.num_classes)

    if args.check:  # same weights, same batch: loss values
        values = {}
        for name in [CE] + names:
            try:
                keras.utils.set_random_seed(0)
                model, loss = _build(name, table, counts)
                _fixed_weights(model)
                y_pred = model(x, training=False)
                values[name] = float(keras.ops.convert_to_numpy(loss(y, y_pred)))
            except Exception as error:
                values[name] = f"{type(error).__name__}: {str(error)[:200]}"
        out["check_values"] = values

    if args.pipeline_seconds > 0:
        out["pipeline"] = _pipeline_throughput(args.batch_size, args.pipeline_seconds)
        print(f"[{backend}] pipeline {out['pipeline']}", file=sys.stderr, flush=True)

    steps = {}
    for name in [CE] + names:
        try:
            keras.utils.set_random_seed(0)
            peak.reset()
            model, loss = _build(name, table, counts)
            model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss=loss,
                          jit_compile=backend != "torch")
            start = time.perf_counter()
            model.train_on_batch(x, y)
            model.train_on_batch(x, y)
            compile_s = time.perf_counter() - start
            steps[name] = model
            out["losses"][name] = {"compile_s": compile_s, "times": [],
                                   "peak_memory_bytes": peak.peak()}
        except Exception as error:
            out["losses"][name] = {"error": f"{type(error).__name__}: {str(error)[:200]}"}
    if CE not in steps:
        raise RuntimeError(f"CE step failed: {out['losses'][CE]}")
    for _ in range(args.repeats):
        for name, model in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                model.train_on_batch(x, y)
            out["losses"][name]["times"].append((time.perf_counter() - start) / args.steps)
    ce_times = out["losses"][CE]["times"]
    for name in steps:
        times = out["losses"][name]["times"]
        ratios = [t / c for t, c in zip(times, ce_times)]
        out["losses"][name].update(
            step_ms=1e3 * median(times),
            images_per_s=args.batch_size / median(times),
            extra_vs_ce=median(ratios) - 1.0,
            extra_min=min(ratios) - 1.0, extra_max=max(ratios) - 1.0)
    print(f"[{backend} {device}] CE step {out['losses'][CE]['step_ms']:.0f} ms",
          file=sys.stderr, flush=True)
    if args.loss_share:
        _loss_share(out, table, counts, args)
    np.asarray(0)
    write_worker_result(args, out)


def markdown(report, rtol):
    lines = []
    good = [b for b in report["backends"] if "error" not in b]
    backends = [b["backend"] for b in good]
    names = list(dict.fromkeys(n for b in good for n in b["losses"]))
    if good:
        lines += ["### ResNet-32 training step (batch {}), images/s and extra time vs CE"
                  .format(report["settings"]["batch_size"]), ""]
        if any("device" in b for b in good):
            lines += ["Devices: " + ", ".join(f"{b['backend']} {b.get('device', '?')}"
                                              for b in good) + ".", ""]
        share = any("loss_share_vs_ce_step" in r for b in good for r in b["losses"].values())
        head = (["loss"] + [f"{b} img/s" for b in backends] + [f"{b} vs CE" for b in backends]
                + ([f"{b} loss alone, extra / CE step" for b in backends] if share else []))
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name in names:
            cells, extras, shares = [name], [], []
            for b in good:
                r = b["losses"].get(name, {})
                if "loss_share_vs_ce_step" in r and name != CE:
                    shares.append(f"{100 * r['loss_share_vs_ce_step']:+.3f}% "
                                  f"({r['loss_only_ms']:.3f} ms)")
                elif "loss_only_ms" in r:
                    shares.append(f"({r['loss_only_ms']:.3f} ms)")
                else:
                    shares.append("-")
                if "error" in r or not r:
                    cells.append("error" if r else "-")
                    extras.append("-")
                    continue
                cells.append(f"{r['images_per_s']:.0f}")
                extras.append("-" if name == CE else
                              f"{100 * r['extra_vs_ce']:+.1f}% "
                              f"[{100 * r['extra_min']:+.0f}, {100 * r['extra_max']:+.0f}]")
            lines.append("| " + " | ".join(cells + extras + (shares if share else [])) + " |")
        cells = ["input pipeline (arrays_lt, CIFAR aug.)"]
        for b in good:
            p = b.get("pipeline", {})
            cells.append(f"{p['images_per_s']:.0f}" if "images_per_s" in p else
                         p.get("error", "-")[:40])
        lines.append("| " + " | ".join(cells + ["-"] * len(good) * (2 if share else 1)) + " |")
        peaks = [(b["backend"], name, r["peak_memory_bytes"]) for b in good
                 for name, r in b["losses"].items() if r.get("peak_memory_bytes")]
        if peaks:
            lines += ["", "Peak device memory (build + first two steps): "
                      + ", ".join(f"{b} {name} {value / 2**20:.0f} MiB"
                                  for b, name, value in peaks) + "."]
        for b in good:
            for name, r in b["losses"].items():
                if "error" in r:
                    lines.append(f"\n- {b['backend']} {name}: {r['error']}")
        lines.append("")
    checks = [b for b in good if "check_values" in b]
    if len(checks) >= 2:
        lines += [f"### Same weights, same batch: loss value per backend (rtol {rtol:g})", ""]
        head = ["loss"] + [b["backend"] for b in checks] + ["max rel. diff", "ok"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name in names:
            values = [b["check_values"].get(name) for b in checks]
            numbers = [v for v in values if isinstance(v, float)]
            if len(numbers) == len(values):
                ref = max(abs(v) for v in numbers) or 1.0
                diff = (max(numbers) - min(numbers)) / ref
                ok = "yes" if diff <= rtol else "NO"
                cells = [f"{v:.7g}" for v in numbers] + [f"{diff:.1e}", ok]
            else:
                cells = [str(v)[:30] for v in values] + ["-", "error"]
            lines.append("| " + " | ".join([name] + cells) + " |")
        lines.append("")
    for b in report["backends"]:
        if "error" in b:
            lines.append(f"- {b['backend']} failed: {b['error']}")
    return "\n".join(lines)


def main(argv=None):
    options = parser(__doc__, "train_step.json", backends=BACKENDS)
    options.add_argument("--losses", nargs="+", default=None,
                         help="only these losses (default: every loss in __all__)")
    options.add_argument("--num-classes", type=int, default=10, help="default 10")
    options.add_argument("--batch-size", type=int, default=128, help="default 128")
    options.add_argument("--steps", type=int, default=None,
                         help="steps per timing (default 5, --quick 2)")
    options.add_argument("--repeats", type=int, default=None,
                         help="round-robin rounds (default 5, --quick 2)")
    options.add_argument("--pipeline-seconds", type=float, default=None,
                         help="seconds of input-pipeline timing (default 15, --quick 5)")
    options.add_argument("--no-check", dest="check", action="store_false")
    options.add_argument("--no-loss-share", dest="loss_share", action="store_false",
                         help="skip timing each loss alone (its extra cost as a share "
                              "of the CE step)")
    options.add_argument("--rtol", type=float, default=1e-4, help="default 1e-4")
    options.add_argument("--table", default=None,
                         help="print (and with --markdown write) the table of an existing "
                              "JSON report, measuring nothing")
    options.add_argument("--quick", action="store_true",
                         help=f"losses {', '.join(QUICK_LOSSES)}; 2 rounds of 2 steps")
    args = options.parse_args(argv)
    if args.table:
        report = json.loads(pathlib.Path(args.table).read_text())
        text = markdown(report, args.rtol)
        if args.markdown:
            pathlib.Path(args.markdown).write_text(text + "\n")
        return print(text)
    if args.losses is None and args.quick:
        args.losses = QUICK_LOSSES
    args.steps = args.steps or (2 if args.quick else 5)
    args.repeats = args.repeats or (2 if args.quick else 5)
    if args.pipeline_seconds is None:
        args.pipeline_seconds = 5.0 if args.quick else 15.0
    if args.worker_out:
        return worker(args)

    report = new_report(args)
    worker_argv = ["--num-classes", args.num_classes, "--batch-size", args.batch_size,
                   "--steps", args.steps, "--repeats", args.repeats,
                   "--pipeline-seconds", args.pipeline_seconds]
    worker_argv += ["--losses", *args.losses] if args.losses else []
    worker_argv += [] if args.check else ["--no-check"]
    worker_argv += [] if args.loss_share else ["--no-loss-share"]
    report["backends"] = run_backends(__file__, args, worker_argv)
    write_outputs(args, report, markdown(report, args.rtol))


if __name__ == "__main__":
    main()
