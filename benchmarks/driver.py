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

Inputs live where Keras computes: ``to_device`` converts arrays with
``keras.ops.convert_to_tensor`` onto Keras' default device (torch: CUDA when
available; JAX: ``jax.devices()[0]``; TensorFlow: its default device), and
every worker reports that device (``default_device``: "cpu" or "cuda:0" on
torch, "cpu:0" or "gpu:0" on JAX and TensorFlow) and, where the backend can
tell, the peak accelerator memory of each measurement (``PeakMemory``).
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
           "write_worker_result", "new_report", "write_outputs", "device_name",
           "default_device", "to_device", "synchronize", "PeakMemory"]

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


def device_name(tensor):
    """Where a backend tensor lives: torch "cpu" / "cuda:0"; JAX and TensorFlow
    "<platform>:<index>" in lower case ("cpu:0", "gpu:0")."""
    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        return str(tensor.device)
    if backend == "jax":
        (device,) = tensor.devices()
        return f"{device.platform}:{device.id}".lower()
    if backend == "tensorflow":
        import tensorflow as tf

        spec = tf.DeviceSpec.from_string(tensor.device)
        return f"{spec.device_type}:{spec.device_index or 0}".lower()
    return "cpu"


def default_device():
    """The device on which Keras creates tensors (that of ``keras.ops.zeros(1)``)."""
    import keras

    return device_name(keras.ops.zeros((1,)))


def to_device(*arrays):
    """``arrays`` as backend tensors on Keras' default device (one tensor for one array).

    ``keras.ops.convert_to_tensor`` places them there on torch and JAX; on
    TensorFlow a converted constant stays in host memory, so a copy made by an
    op (``tf.identity``) runs on the default device.
    """
    import keras

    tensors = [keras.ops.convert_to_tensor(a) for a in arrays]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tensors = [tf.identity(t) for t in tensors]
    return tensors[0] if len(tensors) == 1 else tuple(tensors)


def synchronize(device):
    """Waits for the accelerator's queued work (a no-op on the CPU)."""
    import keras

    if keras.backend.backend() == "torch" and device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


class PeakMemory:
    """Peak accelerator memory between ``reset()`` and ``peak()``, in bytes, above
    what was allocated at ``reset()`` (so earlier measurements' tensors do not count).

    torch on CUDA: ``torch.cuda.max_memory_allocated``; TensorFlow on a GPU:
    ``tf.config.experimental.get_memory_info(...)["peak"]``. Elsewhere (CPU,
    JAX, whose compiled programs report their memory instead) ``peak()`` is
    ``None``.
    """

    def __init__(self, device):
        import keras

        self.backend = keras.backend.backend()
        self.device = device
        self.available = ((self.backend == "torch" and device.startswith("cuda"))
                          or (self.backend == "tensorflow" and device.startswith("gpu")))
        self.baseline = 0

    def reset(self):
        if not self.available:
            return
        if self.backend == "torch":
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.baseline = int(torch.cuda.memory_allocated())
        else:
            import tensorflow as tf

            tf.config.experimental.reset_memory_stats(self.device.upper())
            self.baseline = int(
                tf.config.experimental.get_memory_info(self.device.upper())["current"])

    def peak(self):
        if not self.available:
            return None
        if self.backend == "torch":
            import torch

            torch.cuda.synchronize()
            return int(torch.cuda.max_memory_allocated()) - self.baseline
        import tensorflow as tf

        info = tf.config.experimental.get_memory_info(self.device.upper())
        return int(info["peak"]) - self.baseline


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
