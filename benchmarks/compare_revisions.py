"""Before/after: the same losses from two checkouts, timed in one process against CE.

    git worktree add ../km-before <old-commit>
    python benchmarks/compare_revisions.py --before ../km-before \
        --losses LMSCELoss InfluenceBalancedLoss --classes 1000 8142 100000

The package of ``--before`` (an older checkout of this repository) is
imported under a private name next to the installed one. On each backend (one
subprocess each) every loss is built from both packages with the constructor
table of ``loss_zoo.py`` and compiled as in ``loss_overhead.py`` (forward +
backward w.r.t. the logits, batch 512); each repeat times CE, the old loss and
the new loss back to back, and the table reports the median over repeats of
``time / time(CE)`` for both (and, on JAX, peak memory / CE). Interleaving in one
process makes a before/after claim robust to the machine's load, which runs of
``loss_overhead.py`` at different times are not. A measurement, not a test.
"""

import argparse
import importlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent


def _import_before(path):
    """``keras_margins.losses`` of the checkout at ``path``, under ``before_*`` names."""
    path = str(pathlib.Path(path).resolve())
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k.startswith("keras_margins")}
    sys.path.insert(0, path)
    try:
        module = importlib.import_module("keras_margins.losses")
        if not module.__file__.startswith(path):
            raise ValueError(f"--before {path} holds no keras_margins package "
                             f"(imported {module.__file__}).")
    finally:
        sys.path.remove(path)
        for k in [k for k in sys.modules if k.startswith("keras_margins")]:
            sys.modules["before_" + k] = sys.modules.pop(k)
        sys.modules.update(saved)
    return module


def worker(args):
    if os.environ.get("KERAS_BACKEND") == "torch":
        import torch  # noqa: F401  (before TensorFlow)
    import keras

    before = _import_before(args.before)
    from keras_margins import losses as after

    sys.path.insert(0, str(HERE))
    from loss_overhead import CE, _inputs, _median, _step_jax, _step_tensorflow, _step_torch, \
        _time
    from loss_zoo import constructors, long_tail_counts, loss_names

    backend = keras.backend.backend()
    build = {"jax": _step_jax, "tensorflow": _step_tensorflow, "torch": _step_torch}[backend]
    tables = {"before": constructors(before), "after": constructors(after)}
    names, _ = loss_names(args.losses)
    rows = []
    for num_classes in args.classes:
        counts = long_tail_counts(num_classes)
        scores, labels = _inputs(num_classes, args.batch_size, 0)
        ce_run, ce_memory = build(keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                                  scores, labels)
        ce_run()
        calls = max(1, int(args.min_time / max(_time(ce_run, 1), 1e-6)))
        for name in names:
            runs, memory = {}, {}
            for tag, table in tables.items():
                if name not in table:
                    continue
                make, extra = table[name]
                s, y = _inputs(num_classes, args.batch_size, extra)
                runs[tag], memory[tag] = build(make(counts), s, y)
                runs[tag]()
            ratios = {tag: [] for tag in runs}
            for _ in range(args.repeats):
                t_ce = _time(ce_run, calls)
                for tag, run in runs.items():
                    ratios[tag].append(_time(run, calls) / t_ce)
            row = {"backend": backend, "loss": name, "classes": num_classes}
            for tag in runs:
                row[tag] = _median(ratios[tag])
                if memory[tag] is not None and ce_memory:
                    row[f"{tag}_memory"] = memory[tag] / ce_memory
            rows.append(row)
            print(f"[{backend}] {row}", file=sys.stderr, flush=True)
    pathlib.Path(args.worker_out).write_text(json.dumps(rows))


def markdown(rows):
    memory = any("after_memory" in r for r in rows)
    head = ["backend", "loss", "C", "before / CE", "after / CE"]
    head += ["mem before / CE", "mem after / CE"] if memory else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["backend"], r["loss"], str(r["classes"])]
        cells += [f"{r[t]:.2f}" if t in r else "-" for t in ("before", "after")]
        if memory:
            cells += [f"{r[t]:.2f}" if t in r else "-" for t in ("before_memory", "after_memory")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--before", required=True, help="path of the older checkout")
    parser.add_argument("--backends", nargs="+", default=["jax", "tensorflow"],
                        choices=("jax", "tensorflow", "torch"))
    parser.add_argument("--losses", nargs="+", default=None)
    parser.add_argument("--classes", nargs="+", type=int, default=[1000, 8142, 100000])
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=0.1, help="seconds per timing")
    parser.add_argument("--out", default="compare_revisions.json")
    parser.add_argument("--markdown", default=None)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker_out:
        return worker(args)
    rows = []
    for backend in args.backends:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
            path = handle.name
        cmd = [sys.executable, __file__, "--worker-out", path, "--before", args.before,
               "--classes", *map(str, args.classes), "--batch-size", str(args.batch_size),
               "--repeats", str(args.repeats), "--min-time", str(args.min_time)]
        if args.losses:
            cmd += ["--losses", *args.losses]
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.run(cmd, env=env, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{backend} failed")
        rows += json.loads(pathlib.Path(path).read_text())
        os.unlink(path)
    pathlib.Path(args.out).write_text(json.dumps(rows, indent=1))
    table = markdown(rows)
    if args.markdown:
        pathlib.Path(args.markdown).write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
