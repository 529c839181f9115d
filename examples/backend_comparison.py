"""The same training script on TensorFlow, JAX and PyTorch.

Title: One Keras script, three backends
Description: keras-margins uses only ``keras.ops``, so a model trained with
LDAM-DRW runs unchanged on every Keras backend. This script trains the same
small CNN on Fashion-MNIST-LT once per backend (each in a fresh process, since
the backend is chosen before Keras is imported) and prints accuracy and speed
side by side.

    python examples/backend_comparison.py                       # all three
    python examples/backend_comparison.py --backends jax torch --epochs 3
    python examples/backend_comparison.py --smoke --backends jax  # a few steps (CI)

Accuracies agree up to the backends' random number generators and float
rounding; seconds per epoch compare the backends on this machine's CPU.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from applications import cli  # noqa: E402  (does not import Keras)


def train(args):
    """Runs in a child process whose KERAS_BACKEND is already set."""
    if args.worker == "torch":
        import torch  # noqa: F401  (import torch before TensorFlow)
    import keras
    import numpy as np

    import keras_margins as km

    from applications.data import load_dataset  # tf.data or PyDataset, on every backend
    from applications.protocol import PAPER_PROTOCOL

    data = load_dataset("fashion-mnist-lt", args.data_dir, imbalance_ratio=100,
                        max_per_class=50 if args.smoke else None)
    counts = data.class_counts
    train_data = data.train.take(3) if args.smoke else data.train

    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    h = inputs
    for filters in (32, 64):   # conv-BN-ReLU: the scale-30 cosine head needs normalisation
        h = keras.layers.Conv2D(filters, 3, use_bias=False)(h)
        h = keras.layers.ReLU()(keras.layers.BatchNormalization()(h))
        h = keras.layers.MaxPooling2D()(h) if filters == 32 else h
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, km.layers.CosineDense(10)(h))
    drw_epoch = PAPER_PROTOCOL.rescaled(args.epochs).drw_epoch
    learning_rate = keras.optimizers.schedules.PiecewiseConstantDecay(
        [drw_epoch * len(train_data)], [0.05, 0.005])     # ten-fold decay with DRW
    model.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9),
                  loss=km.losses.LDAMLoss(counts), metrics=["accuracy"])
    drw = km.callbacks.DeferredReweighting(counts, start_epoch=drw_epoch)
    times = []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: times.append(time.perf_counter()),
        on_epoch_end=lambda epoch, logs: times.append(time.perf_counter() - times.pop()))
    history = model.fit(train_data, epochs=args.epochs, callbacks=[drw, timer], verbose=0,
                        shuffle=False)
    report = km.evaluate_long_tailed(model, data.test, counts)
    print("RESULT " + json.dumps({
        "backend": keras.backend.backend(), "top1": report["top1"], "many": report["many"],
        "medium": report["medium"], "few": report["few"],
        "final_loss": history.history["loss"][-1],
        "first_epoch_s": times[0],
        "later_epochs_s": float(np.mean(times[1:])) if len(times) > 1 else None}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=list(cli.BACKENDS),
                        choices=cli.BACKENDS,
                        help="Keras backends to compare, each in a fresh process with "
                             "KERAS_BACKEND set (default: all three)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs (default 3)")
    cli.add_data_dir_argument(parser, "; reads its fashion-mnist/ folder")
    parser.add_argument("--smoke", action="store_true",
                        default=os.environ.get("KERAS_MARGINS_SMOKE", "") == "1",
                        help="2 epochs of 3 steps per backend (also KERAS_MARGINS_SMOKE=1)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.epochs = 2
    if args.worker:
        return train(args)

    rows = []
    for backend in args.backends:
        command = [sys.executable, __file__, "--worker", backend, "--epochs", str(args.epochs)]
        command += ["--data-dir", str(args.data_dir)] if args.data_dir else []
        command += ["--smoke"] if args.smoke else []
        env = dict(os.environ, KERAS_BACKEND=backend)
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        lines = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            print(done.stdout[-2000:], done.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"{backend} failed (exit code {done.returncode})")
        rows.append(json.loads(lines[-1][len("RESULT "):]))

    def pct(value):
        return "–" if value is None else f"{100 * value:.1f}"

    print("| Backend | Top-1 | Many | Medium | Few | Final loss | 1st epoch (s) | "
          "Later epochs (s) |")
    print("|:--|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        later = "–" if r["later_epochs_s"] is None else f"{r['later_epochs_s']:.1f}"
        print(f"| {r['backend']} | {pct(r['top1'])} | {pct(r['many'])} | {pct(r['medium'])} "
              f"| {pct(r['few'])} | {r['final_loss']:.3f} | {r['first_epoch_s']:.1f} | "
              f"{later} |")


if __name__ == "__main__":
    main()
