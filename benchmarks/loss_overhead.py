"""Cost of every loss relative to softmax cross-entropy: time and memory, per backend.

For each loss of ``keras_margins.losses.__all__`` (built from the table in
``benchmarks/loss_zoo.py``), on each backend in its own subprocess, the
forward + backward pass with respect to the logits (batch 512, C classes) is
compiled and timed against ``keras.losses.SparseCategoricalCrossentropy(
from_logits=True)`` *interleaved in the same process*: each repeat times CE
and then the loss back to back (same number of calls), and the reported ratio
is the median over repeats of ``time(loss) / time(CE)``. A measurement, not a
test.

Compilation:
  * jax: ``jax.jit(jax.value_and_grad(loss))``;
  * tensorflow: ``tf.function(jit_compile=True)`` around a ``GradientTape`` (XLA);
  * torch: eager autograd (``torch.autograd.grad``); ``--torch-compile`` compiles
    the loss with ``torch.compile(fullgraph=True)`` (inductor, static shapes; AOTAutograd
    compiles the backward pass with it), as ``jit_compile=True`` does in a Keras
    model (seconds per loss to compile on a CPU).

Device: the inputs are made with NumPy (identical on every backend) and
converted with ``keras.ops.convert_to_tensor`` onto Keras' default device
(torch: CUDA when available; JAX: ``jax.devices()[0]``; TensorFlow: its
default device); each backend's result and table heading name that device
("cpu", "cuda:0", "cpu:0", "gpu:0"). On a GPU every timed call waits for its
result (``block_until_ready``, ``torch.cuda.synchronize``, reading the value).

Traffic (``traffic`` columns, ratio to CE): bytes the step's kernels read and
write, counted by ``traffic.py`` (XLA: operands + results of every kernel of the
optimised program; eager torch: of every ATen operator). Deterministic, so it
holds on a loaded machine where timings do not; a memory-bound loss (large C)
takes time in proportion to it.

Memory (``mem`` columns, ratio to CE):
  * jax: XLA's memory analysis of the compiled forward+backward program,
    ``argument + output + temp - alias`` bytes (exact for that program; TF's
    XLA compiles the same computation);
  * torch: bytes of the tensors autograd saves for the backward pass
    (``torch.autograd.graph.saved_tensors_hooks``, deduplicated by storage);
  * tensorflow: not measured (``tf.config.experimental.get_memory_info`` has no
    allocator statistics for the CPU device).
  * on a GPU also ``peak`` columns (torch: ``torch.cuda.max_memory_allocated``,
    TensorFlow: ``get_memory_info(...)["peak"]``) over building, compiling and
    two calls of each step, in MiB.

    python benchmarks/loss_overhead.py                       # all backends, all C
    python benchmarks/loss_overhead.py --quick               # ~3 minutes
    python benchmarks/loss_overhead.py --backends jax --classes 1000 100000 --repeats 7
    python benchmarks/loss_overhead.py --losses LDAMLoss ELMLoss --out results.json
    python benchmarks/loss_overhead.py --table results.json  # the table of a report
    python benchmarks/loss_overhead.py --table cpu.json gpu.json --summary  # side by side
"""

import json
import math
import pathlib
import sys
import time

from traffic import TorchTraffic, hlo_bytes_accessed
from driver import BACKENDS, PeakMemory, default_device, median, new_report, parser, \
    prepare_worker, run_backends, synchronize, timed, to_device, write_outputs, \
    write_worker_result

CLASSES = (10, 100, 1000, 8142, 100000)
CE = "CrossEntropy"


# --------------------------------------------------------------------------- worker


def _inputs(num_classes, batch_size, extra, seed=0):
    """``(scores, labels)`` on Keras' default device, the same values on every backend."""
    import numpy as np

    rng = np.random.default_rng(seed)
    # Cosine-like scores in (-1, 1): valid for the cosine losses and ordinary logits
    # for the others.
    scores = rng.uniform(-0.95, 0.95, size=(batch_size, num_classes)).astype("float32")
    if extra:  # InfluenceBalancedLoss: last column = ||h||_1 > 0
        norms = rng.uniform(1.0, 10.0, size=(batch_size, 1)).astype("float32")
        scores = np.concatenate([scores, norms], axis=1)
    labels = rng.integers(0, num_classes, size=(batch_size,)).astype("int32")
    return to_device(scores, labels)


def _step_jax(loss, scores, labels):
    import jax

    fn = jax.jit(jax.value_and_grad(lambda z, y: loss(y, z)))
    z, y = scores, labels
    compiled = fn.lower(z, y).compile()
    memory = None
    try:
        ma = compiled.memory_analysis()
        memory = int(ma.argument_size_in_bytes + ma.output_size_in_bytes
                     + ma.temp_size_in_bytes - ma.alias_size_in_bytes)
    except Exception:  # memory analysis not available on this jaxlib
        pass

    def run():
        value, grad = compiled(z, y)
        grad.block_until_ready()
        return value

    return run, memory, hlo_bytes_accessed(compiled.as_text())


def _step_tensorflow(loss, scores, labels):
    import tensorflow as tf

    z, y = scores, labels
    on_gpu = "GPU" in z.device.upper()

    @tf.function(jit_compile=True)
    def fn(z, y):
        with tf.GradientTape() as tape:
            tape.watch(z)
            value = loss(y, z)
        return value, tape.gradient(value, z)

    def run():  # CPU execution is synchronous: the gradient exists on return
        value, _ = fn(z, y)
        if on_gpu:  # one XLA program: its value exists once the gradient does
            value.numpy()
        return value

    program = fn.experimental_get_compiler_ir(z, y)(stage="optimized_hlo")
    return run, None, hlo_bytes_accessed(program)


def _step_torch(loss, scores, labels, compile_step=False):
    import torch

    z, y = scores, labels
    device = str(z.device)

    def forward(y, z):
        return loss(y, z)

    if compile_step:  # the loss compiled whole; AOTAutograd compiles its backward too
        # dynamo caches per code object (at most 8 graphs): a copy for each loss
        forward.__code__ = forward.__code__.replace()
        forward = torch.compile(forward, fullgraph=True, dynamic=False)

    def step(z, y):
        zz = z.detach().requires_grad_(True)
        value = forward(y, zz)
        (grad,) = torch.autograd.grad(value, zz)
        return value, grad

    saved = {}

    def pack(t):
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        saved[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step(z, y)
    memory = int(sum(saved.values()))
    traffic = None
    if not compile_step:
        with TorchTraffic() as counter:
            step(z, y)
        traffic = counter.bytes

    def run():
        value, _ = step(z, y)
        synchronize(device)
        return value

    return run, memory, traffic


def step_builder(backend, torch_compile=False):
    """The compiled forward + backward step of ``backend``: ``f(loss, scores, labels)
    -> (run, memory_bytes, traffic_bytes)``."""
    return {"jax": _step_jax, "tensorflow": _step_tensorflow,
            "torch": lambda l, s, y: _step_torch(l, s, y, torch_compile)}[backend]


def worker(args):
    backend = prepare_worker()
    import keras

    from loss_zoo import constructors, long_tail_counts, loss_names

    table = constructors()
    names, missing = loss_names(args.losses)
    build = step_builder(backend, args.torch_compile)
    device = default_device()
    peak = PeakMemory(device)
    out = {"backend": backend, "device": device, "missing_constructors": missing,
           "results": []}
    if backend == "torch":
        out["mode"] = "torch.compile" if args.torch_compile else "eager"
    for num_classes in args.classes:
        counts = long_tail_counts(num_classes)
        steps, errors, memory, traffic = {}, {}, {}, {}
        compile_s, peaks = {}, {}
        for name in [CE] + names:
            try:
                if name == CE:
                    loss, extra = keras.losses.SparseCategoricalCrossentropy(
                        from_logits=True), 0
                else:
                    make, extra = table[name]
                    loss = make(counts)
                peak.reset()
                scores, labels = _inputs(num_classes, args.batch_size, extra)
                start = time.perf_counter()
                run, mem, moved = build(loss, scores, labels)
                value = float(run())  # compile (tf/torch) and warm up
                run()
                compile_s[name] = time.perf_counter() - start
                peaks[name] = peak.peak()
                del scores, labels
                if not math.isfinite(value):
                    raise FloatingPointError(f"non-finite loss {value}")
                steps[name], memory[name], traffic[name] = run, mem, moved
            except Exception as error:  # report, keep going
                errors[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
        if CE not in steps:
            raise RuntimeError(f"cross-entropy failed on {backend}: {errors.get(CE)}")
        single = timed(steps[CE], 1)
        calls = max(1, int(math.ceil(args.min_time / max(single, 1e-6))))
        times = {name: [] for name in steps}
        ratios = {name: [] for name in steps if name != CE}
        for _ in range(args.repeats):
            for name in ratios:  # CE, then the loss, back to back: paired ratio
                t_ce = timed(steps[CE], calls)
                t_loss = timed(steps[name], calls)
                times[CE].append(t_ce)
                times[name].append(t_loss)
                ratios[name].append(t_loss / t_ce)
        ce_ms = 1e3 * median(times[CE])
        ce_mem, ce_traffic = memory.get(CE), traffic.get(CE)
        for name in [CE] + names:
            row = {"loss": name, "classes": num_classes, "batch_size": args.batch_size,
                   "calls_per_timing": calls}
            if name in errors:
                row["error"] = errors[name]
            else:
                row.update(
                    ms=1e3 * median(times[name]),
                    ce_ms=ce_ms,
                    ratio=1.0 if name == CE else median(ratios[name]),
                    ratio_min=1.0 if name == CE else min(ratios[name]),
                    ratio_max=1.0 if name == CE else max(ratios[name]),
                    compile_s=compile_s[name],
                    memory_bytes=memory[name],
                    peak_memory_bytes=peaks[name],
                    memory_ratio=(None if memory[name] is None or not ce_mem
                                  else memory[name] / ce_mem),
                    traffic_bytes=traffic[name],
                    traffic_ratio=(None if traffic[name] is None or not ce_traffic
                                   else traffic[name] / ce_traffic))
            out["results"].append(row)
        print(f"[{backend} {device}] C={num_classes}: CE {ce_ms:.2f} ms, {calls} calls x "
              f"{args.repeats} repeats", file=sys.stderr, flush=True)
    write_worker_result(args, out)


# --------------------------------------------------------------------------- report


def _fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(report):
    lines = []
    for backend_result in report["backends"]:
        backend = backend_result["backend"]
        if "error" in backend_result:
            lines += [f"### {backend}", "", f"failed: {backend_result['error']}", ""]
            continue
        rows = backend_result["results"]
        classes = sorted({r["classes"] for r in rows})
        names = list(dict.fromkeys(r["loss"] for r in rows))
        by_key = {(r["loss"], r["classes"]): r for r in rows}
        has_mem = any(r.get("memory_ratio") is not None for r in rows)
        has_peak = any(r.get("peak_memory_bytes") is not None for r in rows)
        has_traffic = any(r.get("traffic_ratio") is not None for r in rows)
        where = _label(backend_result)
        where += f", {backend_result['device']}" if "device" in backend_result else ""
        lines += [f"### {where}: forward+backward time / CE time"
                  + (" (mem: peak memory / CE)" if has_mem else "")
                  + (" (traffic: bytes read + written / CE)" if has_traffic else "")
                  + (" (peak: device memory, MiB)" if has_peak else ""), ""]
        head = ["loss"] + [f"C={c}" for c in classes]
        if has_mem:
            head += [f"mem C={c}" for c in classes]
        if has_traffic:
            head += [f"traffic C={c}" for c in classes]
        if has_peak:
            head += [f"peak C={c}" for c in classes]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name in names:
            cells = [name]
            for c in classes:
                r = by_key.get((name, c), {})
                if "error" in r:
                    cells.append("error")
                elif name == CE:
                    cells.append(f"{_fmt(r.get('ms'))} ms")
                else:
                    cells.append(_fmt(r.get("ratio")))
            for shown, quantity in ((has_mem, "memory"), (has_traffic, "traffic")):
                if shown:  # CE: MiB; every other loss: its ratio to CE
                    for c in classes:
                        r = by_key.get((name, c), {})
                        if name == CE and r.get(f"{quantity}_bytes"):
                            cells.append(f"{r[f'{quantity}_bytes'] / 2**20:.1f} MiB")
                        else:
                            cells.append(_fmt(r.get(f"{quantity}_ratio")))
            if has_peak:
                for c in classes:
                    r = by_key.get((name, c), {})
                    value = r.get("peak_memory_bytes")
                    cells.append("-" if value is None else f"{value / 2**20:.1f}")
            lines.append("| " + " | ".join(cells) + " |")
        errors = [(r["loss"], r["classes"], r["error"]) for r in rows if "error" in r]
        for name, c, error in errors:
            lines.append(f"\n- {name} C={c}: {error}")
        if backend_result.get("missing_constructors"):
            lines.append(f"\n- no constructor in loss_zoo.py: "
                         f"{', '.join(backend_result['missing_constructors'])}")
        lines.append("")
    return "\n".join(lines)


#: The time / traffic ratio each backend's losses should stay under (eager PyTorch
#: runs each op as its own kernel: a looser target; compiled PyTorch fuses them,
#: like XLA).
TARGETS = {"jax": 1.1, "tensorflow": 1.1, "torch": 1.3, "torch.compile": 1.1}


def _label(backend_result):
    """``jax``, ``tensorflow``, ``torch`` (eager) or ``torch.compile``."""
    backend = backend_result["backend"]
    return "torch.compile" if backend_result.get("mode") == "torch.compile" else backend


def merge_reports(reports):
    """One report holding the backend results of several, in their order (a CPU
    and a GPU run of the same benchmark: one table)."""
    return {"backends": [b for report in reports for b in report["backends"]]}


def summary(report):
    """Markdown: per backend and C, how many losses stay within the backend's
    target (``TARGETS``) in time and in traffic, and the worst one. Results of
    one backend on several devices (merged reports) are adjacent rows, in the
    order the backend first appears."""
    classes = sorted({r["classes"] for b in report["backends"] for r in b.get("results", [])})
    lines = ["| Backend (device) | Measure | Target | "
             + " | ".join(f"C={c}" for c in classes) + " |",
             "|:--|:--|--:|" + "--:|" * len(classes)]
    order = list(dict.fromkeys(_label(b) for b in report["backends"]))
    for backend_result in sorted(report["backends"], key=lambda b: order.index(_label(b))):
        if "error" in backend_result:
            continue
        backend = _label(backend_result)
        target = TARGETS[backend]
        for measure, key in (("time", "ratio"), ("traffic", "traffic_ratio")):
            cells = []
            for c in classes:
                rows = [r for r in backend_result["results"] if r["classes"] == c
                        and r["loss"] != CE and r.get(key) is not None]
                if not rows:
                    cells.append("–")
                    continue
                worst = max(rows, key=lambda r: r[key])
                within = sum(r[key] <= target for r in rows)
                cells.append(f"{within}/{len(rows)}; worst {worst['loss']} {worst[key]:.2f}")
            if any(cell != "–" for cell in cells):
                lines.append(f"| {backend} ({backend_result.get('device', '?')}) | {measure} "
                             f"| {target:g}x | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    options = parser(__doc__, "loss_overhead.json", backends=BACKENDS)
    options.add_argument("--classes", nargs="+", type=int, default=None,
                         help=f"numbers of classes (default {' '.join(map(str, CLASSES))})")
    options.add_argument("--losses", nargs="+", default=None,
                         help="only these losses (default: every loss in __all__)")
    options.add_argument("--batch-size", type=int, default=512, help="default 512")
    options.add_argument("--repeats", type=int, default=None,
                         help="paired timings per loss (default 7, --quick 3)")
    options.add_argument("--min-time", type=float, default=None,
                         help="seconds per timing, sets calls per timing from CE "
                              "(default 0.1, --quick 0.02)")
    options.add_argument("--table", nargs="+", default=None,
                         help="print (and with --markdown write) the table of existing "
                              "JSON reports (several: one table, e.g. CPU and GPU side "
                              "by side), measuring nothing")
    options.add_argument("--summary", action="store_true",
                         help="with --table: the per-backend summary (losses within the "
                              "target, the worst) instead of the full table")
    options.add_argument("--quick", action="store_true",
                         help="C in {1000, 100000}, 3 repeats, short timings (~3 min)")
    options.add_argument("--torch-compile", action="store_true",
                         help="torch: compile each loss with torch.compile (inductor), "
                              "as jit_compile=True does; default eager")
    args = options.parse_args(argv)
    if args.table:
        report = merge_reports([json.loads(pathlib.Path(path).read_text())
                                for path in args.table])
        text = summary(report) if args.summary else markdown(report)
        if args.markdown:
            pathlib.Path(args.markdown).write_text(text + "\n")
        return print(text)
    if args.classes is None:
        args.classes = [1000, 100000] if args.quick else list(CLASSES)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 7
    if args.min_time is None:
        args.min_time = 0.02 if args.quick else 0.1

    if args.worker_out:
        return worker(args)

    report = new_report(args)
    worker_argv = ["--classes", *args.classes, "--repeats", args.repeats,
                   "--min-time", args.min_time, "--batch-size", args.batch_size]
    worker_argv += ["--losses", *args.losses] if args.losses else []
    worker_argv += ["--torch-compile"] if args.torch_compile else []
    report["backends"] = run_backends(__file__, args, worker_argv)
    write_outputs(args, report, markdown(report))


if __name__ == "__main__":
    main()
