"""Images/second of the CIFAR-10-LT training pipeline (JPEG folder, CIFAR augmentation,
batch 128), printed as a Markdown table. A measurement, not a test.

    python benchmarks/data_pipeline.py [--root EXTRACTED_CIFAR10_JPEG] [--epochs 3]

Without --root, ../shared/datasets/cifar10/cifar10-jpeg.tar.gz is extracted to a
temporary folder (about 2 s). Epoch 1 decodes the JPEG files and fills the
cache; later epochs read decoded images from the cache and only augment.
"""

import argparse
import os
import pathlib
import shutil
import subprocess
import tempfile
import time

if os.environ.get("KERAS_BACKEND", "tensorflow") == "torch":
    try:  # torch before TensorFlow
        import torch  # noqa: F401
    except ImportError:
        pass

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared"


def _images_per_second(dataset):
    start, count = time.perf_counter(), 0
    for _, labels in dataset:
        count += int(labels.shape[0])
    return count, count / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="extracted CIFAR-10 JPEG folder (train/, test/)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from keras_margins import data

    tmp = None
    root = args.root
    if root is None:
        tmp = tempfile.mkdtemp(prefix="cifar10_jpeg_")
        archive = SHARED / "datasets" / "cifar10" / "cifar10-jpeg.tar.gz"
        subprocess.run(["tar", "xzf", str(archive), "-C", tmp], check=True)
        root = tmp
    try:
        rows = []
        for label, kwargs in [("instance-balanced (cache)", {}),
                              ("class-balanced re-sampling (no cache)",
                               {"sampler": "class_balanced"})]:
            train_ds, _, info = data.image_folder_lt(root, 100, batch_size=args.batch_size,
                                                     **kwargs)
            for epoch in range(1, args.epochs + 1):
                count, rate = _images_per_second(train_ds)
                rows.append((label, epoch, count, rate))
        print(f"CIFAR-10-LT (ratio 100, {info.train_size} images), pad-4 + random crop + flip "
              f"+ normalise, batch {args.batch_size}; Keras {keras.__version__} "
              f"({keras.backend.backend()}), TensorFlow {tf.__version__}, "
              f"{os.cpu_count()} CPU cores\n")
        print("| pipeline | epoch | images | images/s |")
        print("|---|---:|---:|---:|")
        for label, epoch, count, rate in rows:
            print(f"| {label} | {epoch} | {count} | {rate:,.0f} |")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
