"""Size of CC-SAM's class-conditional weight perturbation on a trained network's head.

For each class ``c`` of a few training batches, CC-SAM (``perturb="weights"``)
moves the head's kernel by ``||E_c|| = kappa P^(1/4) sqrt(||W|| ||g_c||) /
(sqrt(2) (n_c - 1)^(1/4)) / ||g_c||``; this prints ``||E_c|| / ||W||`` per class
(median and largest over the batches) for softmax cross-entropy, the loss of the
authors' first stage.

    python benchmarks/cc_sam_radius.py --model RUN/model.keras --data-dir ../shared/datasets \
        --json benchmarks/results/cc_sam_radius.json

``RUN/model.keras`` is a model saved by ``python -m applications.train --dataset
cifar10-lt --recipe ce`` (without ``--no-save-model``).
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def measure(model_path, data_dir, batches, radius):
    import keras
    import numpy as np

    import applications.models  # noqa: F401  (registers the ResNet blocks)
    from applications.data import load_dataset
    from keras_margins.priors import cc_sam_weight_radii
    from keras_margins.decoupling import find_head

    model = keras.models.load_model(model_path, compile=False)
    head = find_head(model)
    backbone = keras.Model(model.inputs, head.input)
    data = load_dataset("cifar10-lt", data_dir, pipeline="numpy", batch_size=128)
    kernel, bias = (w.astype("float64") for w in head.get_weights())
    counts = [int(n) for n in data.class_counts]
    scales = cc_sam_weight_radii(counts, kernel.size + bias.size, radius)
    eye = np.eye(len(counts))
    ratios = {c: [] for c in range(len(counts))}
    for step, (x, y) in enumerate(data.train_batches(None)):
        if step == batches:
            break
        y = keras.ops.convert_to_numpy(y).reshape(-1).astype(int)
        f = keras.ops.convert_to_numpy(backbone(x, training=False)).astype("float64")
        z = f @ kernel + bias
        p = np.exp(z - z.max(axis=1, keepdims=True))
        d = p / p.sum(axis=1, keepdims=True) - eye[y]
        for c in np.unique(y):
            rows = y == c
            grad = f[rows].T @ d[rows] / rows.sum()
            size = scales[c] * np.sqrt(np.linalg.norm(kernel) / np.linalg.norm(grad))
            ratios[int(c)].append(size / np.linalg.norm(kernel))
    return {"model": model_path, "backend": keras.backend.backend(), "radius": radius,
            "batches": batches, "batch_size": 128, "kernel_norm": float(np.linalg.norm(kernel)),
            "classes": [{"class": c, "count": counts[c], "samples": len(v),
                         "median": float(np.median(v)), "max": float(np.max(v))}
                        for c, v in ratios.items() if v]}


def table(result):
    lines = [f"kappa = {result['radius']:g}, ||W|| = {result['kernel_norm']:.2f}, "
             f"{result['batches']} batches of {result['batch_size']}", "",
             "| Class | n_c | median ‖E_c‖/‖W‖ | largest |", "|---:|---:|---:|---:|"]
    lines += [f"| {c['class']} | {c['count']} | {c['median']:.2e} | {c['max']:.2e} |"
              for c in result["classes"]]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a saved CIFAR-10-LT model (.keras)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--radius", type=float, default=1e-6, help="kappa (1e-6)")
    parser.add_argument("--json", help="write the result here")
    parser.add_argument("--table", help="print the table of this JSON file and exit")
    args = parser.parse_args(argv)
    if args.table:
        with open(args.table) as handle:
            print(table(json.load(handle)))
        return
    if not args.model:
        parser.error("--model is required (or --table)")
    result = measure(args.model, args.data_dir, args.batches, args.radius)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)
    print(table(result))


if __name__ == "__main__":
    main()
