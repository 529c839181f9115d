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
``time / time(CE)`` for both (on JAX also peak memory / CE; on every backend
the bytes moved / CE's, counted by ``traffic.py``). Interleaving in one
process makes a before/after claim robust to the machine's load, which runs of
``loss_overhead.py`` at different times are not. A measurement, not a test.
"""

import importlib
import pathlib
import sys

from driver import median, parser, prepare_worker, run_backends, timed, write_outputs, \
    write_worker_result


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
    backend = prepare_worker()
    import keras

    before = _import_before(args.before)
    from keras_margins import losses as after

    from loss_overhead import _inputs, step_builder
    from loss_zoo import constructors, long_tail_counts, loss_names

    compiled = backend == "torch" and args.torch_compile
    build = step_builder(backend, compiled)
    label = "torch.compile" if compiled else backend
    tables = {"before": constructors(before), "after": constructors(after)}
    names, _ = loss_names(args.losses)
    rows = []
    for num_classes in args.classes:
        counts = long_tail_counts(num_classes)
        scores, labels = _inputs(num_classes, args.batch_size, 0)
        ce_run, ce_memory, ce_traffic = build(
            keras.losses.SparseCategoricalCrossentropy(from_logits=True), scores, labels)
        ce_run()
        calls = max(1, int(args.min_time / max(timed(ce_run, 1), 1e-6)))
        for name in names:
            runs, memory, traffic = {}, {}, {}
            for tag, table in tables.items():
                if name not in table:
                    continue
                make, extra = table[name]
                s, y = _inputs(num_classes, args.batch_size, extra)
                runs[tag], memory[tag], traffic[tag] = build(make(counts), s, y)
                runs[tag]()
            ratios = {tag: [] for tag in runs}
            for _ in range(args.repeats):
                t_ce = timed(ce_run, calls)
                for tag, run in runs.items():
                    ratios[tag].append(timed(run, calls) / t_ce)
            row = {"backend": label, "loss": name, "classes": num_classes}
            for tag in runs:
                row[tag] = median(ratios[tag])
                if memory[tag] is not None and ce_memory:
                    row[f"{tag}_memory"] = memory[tag] / ce_memory
                if traffic[tag] is not None and ce_traffic:
                    row[f"{tag}_traffic"] = traffic[tag] / ce_traffic
            rows.append(row)
            print(f"[{label}] {row}", file=sys.stderr, flush=True)
    write_worker_result(args, rows)


def markdown(rows):
    head = ["backend", "loss", "C", "before / CE", "after / CE"]
    pairs = [("before", "after")]
    for quantity, label in (("memory", "mem"), ("traffic", "traffic")):
        if any(f"after_{quantity}" in r for r in rows):
            head += [f"{label} before / CE", f"{label} after / CE"]
            pairs.append((f"before_{quantity}", f"after_{quantity}"))
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["backend"], r["loss"], str(r["classes"])]
        for pair in pairs:
            cells += [f"{r[t]:.2f}" if t in r else "-" for t in pair]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    options = parser(__doc__, "compare_revisions.json", backends=("jax", "tensorflow"))
    options.add_argument("--before", required=True, help="path of the older checkout")
    options.add_argument("--losses", nargs="+", default=None,
                         help="only these losses (default: every loss in __all__)")
    options.add_argument("--classes", nargs="+", type=int, default=[1000, 8142, 100000],
                         help="numbers of classes (default 1000 8142 100000)")
    options.add_argument("--batch-size", type=int, default=512, help="default 512")
    options.add_argument("--repeats", type=int, default=5, help="default 5")
    options.add_argument("--min-time", type=float, default=0.1,
                         help="seconds per timing (default 0.1)")
    options.add_argument("--torch-compile", action="store_true",
                         help="torch: compile each loss as loss_overhead.py --torch-compile "
                              "(rows labelled torch.compile); default eager")
    args = options.parse_args(argv)
    if args.worker_out:
        return worker(args)
    worker_argv = ["--before", args.before, "--classes", *args.classes, "--batch-size",
                   args.batch_size, "--repeats", args.repeats, "--min-time", args.min_time]
    worker_argv += ["--losses", *args.losses] if args.losses else []
    worker_argv += ["--torch-compile"] if args.torch_compile else []
    rows = [row for rows in run_backends(__file__, args, worker_argv, on_error="raise")
            for row in rows]
    write_outputs(args, rows, markdown(rows))


if __name__ == "__main__":
    main()
