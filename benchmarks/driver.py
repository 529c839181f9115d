"""What the benchmark scripts share: common options, one subprocess per backend,
the median, and the JSON + Markdown output.

A script builds its parser with ``parser(__doc__)`` (``--out`` and
``--markdown``; ``backends=True`` adds ``--backends`` and the hidden
``--worker-out``), runs ``run_backends(__file__, args, worker_argv)``: each
backend in its own ``python <script> --worker-out FILE <worker_argv>``
process with ``KERAS_BACKEND`` set (the backend is fixed before Keras is
imported), whose worker writes its JSON result with ``write_worker_result``.
``write_outputs`` then writes the JSON report, the Markdown table (also
printed).
"""

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

__all__ = ["BACKENDS", "median", "timed", "parser", "prepare_worker", "run_backends",
           "write_worker_result", "new_report", "write_outputs"]

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
BACKENDS = ("jax", "tensorflow", "torch")


def median(values):
    """Median of ``values`` (the mean of the middle two for an even count; NaN if empty)."""
    values = sorted(values)
    n = len(values)
    if n == 0:
        return float("nan")
    return values[n // 2] if n % 2 else 0.5 * (values[n // 2 - 1] + values[n // 2])


def timed(run, calls):
    """Seconds per call of ``run()`` over ``calls`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(calls):
        run()
    return (time.perf_counter() - start) / calls


def parser(doc, out, backends=None, epilog=True):
    """An ``ArgumentParser`` described by the script's docstring ``doc``, with
    ``--out`` (JSON report, default ``out``) and ``--markdown``; with
    ``backends`` (the default list) also ``--backends`` and ``--worker-out``."""
    kwargs = {}
    if epilog:
        kwargs = dict(epilog=doc.split("\n\n", 1)[1],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    result = argparse.ArgumentParser(description=doc.splitlines()[0], **kwargs)
    if backends is not None:
        result.add_argument("--backends", nargs="+", default=list(backends), choices=BACKENDS,
                            help=f"one subprocess per backend (default: {' '.join(backends)})")
        result.add_argument("--worker-out", help=argparse.SUPPRESS)
    result.add_argument("--out", default=out, help=f"JSON report (default {out})")
    result.add_argument("--markdown", default=None, help="also write the table here")
    return result


def prepare_worker(paths=(HERE, ROOT)):
    """In a worker: torch before TensorFlow (which Keras may import) and the
    benchmarks folder and the repository importable; returns the backend name."""
    if os.environ.get("KERAS_BACKEND") == "torch":
        import torch  # noqa: F401
    for path in paths:
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    import keras
    return keras.backend.backend()


def write_worker_result(args, result):
    """A worker's JSON result, where ``run_backends`` reads it."""
    pathlib.Path(args.worker_out).write_text(json.dumps(result, indent=1))


def run_backends(script, args, worker_argv, on_error="record"):
    """Runs ``python script --worker-out FILE *worker_argv`` once per
    ``args.backends`` with ``KERAS_BACKEND`` set; returns their results in order.

    A failed backend becomes ``{"backend": name, "error": <last lines of its
    stderr>}`` (``on_error="record"``) or ends the program (``"raise"``). The
    workers' progress lines (stderr lines starting with ``[``) are echoed.
    """
    results = []
    for backend in args.backends:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
            path = handle.name
        command = [sys.executable, str(script), "--worker-out", path, *map(str, worker_argv)]
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        start = time.perf_counter()
        try:
            proc = subprocess.run(command, env=env, stderr=subprocess.PIPE, text=True)
            print(f"{backend}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                if on_error == "raise":
                    raise SystemExit(f"{backend} failed")
                tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
                results.append({"backend": backend, "error": tail})
                continue
            for line in proc.stderr.splitlines():
                if line.startswith("["):
                    print(line, file=sys.stderr)
            results.append(json.loads(pathlib.Path(path).read_text()))
        finally:
            os.unlink(path)
    return results


def new_report(args):
    """A report's header: the command, the machine, the settings (every option but
    the hidden worker one); ``backends`` is filled by the caller."""
    return {"command": " ".join([os.path.basename(sys.executable)] + sys.argv),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                        "python": platform.python_version()},
            "settings": {k: v for k, v in vars(args).items() if k != "worker_out"},
            "backends": []}


def write_outputs(args, report, table):
    """Writes ``report`` to ``args.out`` (JSON) and ``table`` to ``args.markdown``
    (when given), and prints the table."""
    pathlib.Path(args.out).write_text(json.dumps(report, indent=1))
    if getattr(args, "markdown", None):
        pathlib.Path(args.markdown).write_text(table + "\n")
    print(table)
