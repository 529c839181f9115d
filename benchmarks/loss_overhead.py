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
  * torch: eager autograd (``torch.autograd.grad``); ``--torch-compile`` wraps the
    step in ``torch.compile`` instead (slow to compile on CPU).

Memory (``mem`` columns, ratio to CE):
  * jax: XLA's memory analysis of the compiled forward+backward program,
    ``argument + output + temp - alias`` bytes (exact for that program; TF's
    XLA compiles the same computation);
  * torch: bytes of the tensors autograd saves for the backward pass
    (``torch.autograd.graph.saved_tensors_hooks``, deduplicated by storage);
  * tensorflow: not measured (``tf.config.experimental.get_memory_info`` has no
    allocator statistics for the CPU device).

    python benchmarks/loss_overhead.py                       # all backends, all C
    python benchmarks/loss_overhead.py --quick               # ~3 minutes
    python benchmarks/loss_overhead.py --backends jax --classes 1000 100000 --repeats 7
    python benchmarks/loss_overhead.py --losses LDAMLoss ELMLoss --out results.json
"""

import argparse
import json
import math
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
BACKENDS = ("jax", "tensorflow", "torch")
CLASSES = (10, 100, 1000, 8142, 100000)
CE = "CrossEntropy"


def _median(values):
    values = sorted(values)
    n = len(values)
    if n == 0:
        return float("nan")
    return values[n // 2] if n % 2 else 0.5 * (values[n // 2 - 1] + values[n // 2])


# --------------------------------------------------------------------------- worker


def _inputs(num_classes, batch_size, extra, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    # Cosine-like scores in (-1, 1): valid for the cosine losses and ordinary logits
    # for the others.
    scores = rng.uniform(-0.95, 0.95, size=(batch_size, num_classes)).astype("float32")
    if extra:  # InfluenceBalancedLoss: last column = ||h||_1 > 0
        norms = rng.uniform(1.0, 10.0, size=(batch_size, 1)).astype("float32")
        scores = np.concatenate([scores, norms], axis=1)
    labels = rng.integers(0, num_classes, size=(batch_size,)).astype("int32")
    return scores, labels


def _step_jax(loss, scores, labels):
    import jax

    fn = jax.jit(jax.value_and_grad(lambda z, y: loss(y, z)))
    z, y = jax.numpy.asarray(scores), jax.numpy.asarray(labels)
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

    return run, memory


def _step_tensorflow(loss, scores, labels):
    import tensorflow as tf

    z, y = tf.constant(scores), tf.constant(labels)

    @tf.function(jit_compile=True)
    def fn(z, y):
        with tf.GradientTape() as tape:
            tape.watch(z)
            value = loss(y, z)
        return value, tape.gradient(value, z)

    def run():  # CPU execution is synchronous: the gradient exists on return
        value, _ = fn(z, y)
        return value

    return run, None


def _step_torch(loss, scores, labels, compile_step=False):
    import torch

    z, y = torch.from_numpy(scores), torch.from_numpy(labels)

    def step(z, y):
        zz = z.detach().requires_grad_(True)
        value = loss(y, zz)
        (grad,) = torch.autograd.grad(value, zz)
        return value, grad

    if compile_step:
        step = torch.compile(step)

    saved = {}

    def pack(t):
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        saved[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step(z, y)
    memory = int(sum(saved.values()))

    def run():
        value, _ = step(z, y)
        return value

    return run, memory


def _time(run, calls):
    start = time.perf_counter()
    for _ in range(calls):
        run()
    return (time.perf_counter() - start) / calls


def worker(args):
    if os.environ.get("KERAS_BACKEND") == "torch":
        import torch  # noqa: F401  (before TensorFlow, which keras may import)
    import keras  # noqa: F401  (backend chosen by KERAS_BACKEND)

    sys.path.insert(0, str(HERE))
    from loss_zoo import constructors, long_tail_counts, loss_names

    backend = keras.backend.backend()
    table = constructors()
    names, missing = loss_names(args.losses)
    builders = {"jax": _step_jax, "tensorflow": _step_tensorflow,
                "torch": lambda l, s, y: _step_torch(l, s, y, args.torch_compile)}
    build = builders[backend]
    out = {"backend": backend, "missing_constructors": missing, "results": []}
    for num_classes in args.classes:
        counts = long_tail_counts(num_classes)
        steps, errors, memory = {}, {}, {}
        compile_s = {}
        for name in [CE] + names:
            try:
                if name == CE:
                    loss, extra = keras.losses.SparseCategoricalCrossentropy(
                        from_logits=True), 0
                else:
                    make, extra = table[name]
                    loss = make(counts)
                scores, labels = _inputs(num_classes, args.batch_size, extra)
                start = time.perf_counter()
                run, mem = build(loss, scores, labels)
                value = float(run())  # compile (tf/torch) and warm up
                run()
                compile_s[name] = time.perf_counter() - start
                if not math.isfinite(value):
                    raise FloatingPointError(f"non-finite loss {value}")
                steps[name], memory[name] = run, mem
            except Exception as error:  # report, keep going
                errors[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
        if CE not in steps:
            raise RuntimeError(f"cross-entropy failed on {backend}: {errors.get(CE)}")
        single = _time(steps[CE], 1)
        calls = max(1, int(math.ceil(args.min_time / max(single, 1e-6))))
        times = {name: [] for name in steps}
        ratios = {name: [] for name in steps if name != CE}
        for _ in range(args.repeats):
            for name in ratios:  # CE, then the loss, back to back: paired ratio
                t_ce = _time(steps[CE], calls)
                t_loss = _time(steps[name], calls)
                times[CE].append(t_ce)
                times[name].append(t_loss)
                ratios[name].append(t_loss / t_ce)
        ce_ms = 1e3 * _median(times[CE])
        ce_mem = memory.get(CE)
        for name in [CE] + names:
            row = {"loss": name, "classes": num_classes, "batch_size": args.batch_size,
                   "calls_per_timing": calls}
            if name in errors:
                row["error"] = errors[name]
            else:
                row.update(
                    ms=1e3 * _median(times[name]),
                    ce_ms=ce_ms,
                    ratio=1.0 if name == CE else _median(ratios[name]),
                    ratio_min=1.0 if name == CE else min(ratios[name]),
                    ratio_max=1.0 if name == CE else max(ratios[name]),
                    compile_s=compile_s[name],
                    memory_bytes=memory[name],
                    memory_ratio=(None if memory[name] is None or not ce_mem
                                  else memory[name] / ce_mem))
            out["results"].append(row)
        print(f"[{backend}] C={num_classes}: CE {ce_ms:.2f} ms, {calls} calls x "
              f"{args.repeats} repeats", file=sys.stderr, flush=True)
    pathlib.Path(args.worker_out).write_text(json.dumps(out, indent=1))


# --------------------------------------------------------------------------- driver


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
        lines += [f"### {backend}: forward+backward time / CE time"
                  + (" (mem: peak memory / CE)" if has_mem else ""), ""]
        head = ["loss"] + [f"C={c}" for c in classes]
        if has_mem:
            head += [f"mem C={c}" for c in classes]
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
            if has_mem:
                for c in classes:
                    r = by_key.get((name, c), {})
                    if name == CE and r.get("memory_bytes"):
                        cells.append(f"{r['memory_bytes'] / 2**20:.1f} MiB")
                    else:
                        cells.append(_fmt(r.get("memory_ratio")))
            lines.append("| " + " | ".join(cells) + " |")
        errors = [(r["loss"], r["classes"], r["error"]) for r in rows if "error" in r]
        for name, c, error in errors:
            lines.append(f"\n- {name} C={c}: {error}")
        if backend_result.get("missing_constructors"):
            lines.append(f"\n- no constructor in loss_zoo.py: "
                         f"{', '.join(backend_result['missing_constructors'])}")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--classes", nargs="+", type=int, default=None)
    parser.add_argument("--losses", nargs="+", default=None,
                        help="only these losses (default: every loss in __all__)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=None, help="paired timings per loss")
    parser.add_argument("--min-time", type=float, default=None,
                        help="seconds per timing (sets calls per timing from CE)")
    parser.add_argument("--quick", action="store_true",
                        help="C in {1000, 100000}, 3 repeats, short timings (~3 min)")
    parser.add_argument("--torch-compile", action="store_true")
    parser.add_argument("--out", default="loss_overhead.json", help="JSON output path")
    parser.add_argument("--markdown", default=None, help="also write the table here")
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.classes is None:
        args.classes = [1000, 100000] if args.quick else list(CLASSES)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 7
    if args.min_time is None:
        args.min_time = 0.02 if args.quick else 0.1

    if args.worker_out:
        return worker(args)

    report = {"command": " ".join([os.path.basename(sys.executable)] + sys.argv),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "python": platform.python_version()},
              "settings": {k: v for k, v in vars(args).items() if k != "worker_out"},
              "backends": []}
    for backend in args.backends:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
            path = handle.name
        cmd = [sys.executable, __file__, "--worker-out", path,
               "--classes", *map(str, args.classes), "--repeats", str(args.repeats),
               "--min-time", str(args.min_time), "--batch-size", str(args.batch_size)]
        if args.losses:
            cmd += ["--losses", *args.losses]
        if args.torch_compile:
            cmd.append("--torch-compile")
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, stderr=subprocess.PIPE, text=True)
        print(f"{backend}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
            report["backends"].append({"backend": backend, "error": tail})
            print(proc.stderr[-3000:], file=sys.stderr)
        else:
            for line in proc.stderr.splitlines():
                if line.startswith("["):
                    print(line, file=sys.stderr)
            report["backends"].append(json.loads(pathlib.Path(path).read_text()))
        os.unlink(path)
    pathlib.Path(args.out).write_text(json.dumps(report, indent=1))
    table = markdown(report)
    if args.markdown:
        pathlib.Path(args.markdown).write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
