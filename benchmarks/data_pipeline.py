"""Images/second of the CIFAR-10-LT training input (JPEG copy, CIFAR augmentation,
batch 128) on the host pipelines, tf.data and the NumPy ``keras.utils.PyDataset``,
and the loop of the device pipeline. A measurement, not a test; the table is
generated from the JSON it writes.

    python benchmarks/data_pipeline.py [--root EXTRACTED_CIFAR10_JPEG] [--epochs 3] \\
        [--pipelines tfdata numpy device] [--out benchmarks/results/data_pipeline.json]
    python benchmarks/data_pipeline.py --table benchmarks/results/data_pipeline.json

Without --root, ``cifar10/cifar10-jpeg.tar.gz`` of the datasets folder
(``applications.cli.default_data_dir()``) is extracted to a temporary folder
(about 2 s). tf.data decodes the JPEG files in epoch 1 and
fills its cache; the NumPy path decodes every selected image once (threaded
Pillow) when the dataset is built (reported as "build"), then only augments.
Batches are produced the way ``model.fit`` consumes them (tf.data: iteration;
PyDataset: ``batches[i]`` for every index, one thread).

``device`` (``applications.train --pipeline device``): the normalised float32
training array is given to ``model.fit(x, y, shuffle=True)`` whole, and the
model crops and flips inside its compiled step (``RandomPadCropFlip``). What is
left on the host is Keras' slicing of each batch and its transfer; its rate is
measured as ``fit``'s on a model that does nothing else (the augmentation,
global average pooling and a Dense layer), with ``steps_per_execution`` 1 and 8
(1 only on PyTorch):
the most images/s the device pipeline's loop can feed (epoch 1 includes
compilation; "build" is decoding and normalising the subset).
"""

import json
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile
import time

from driver import parser, prepare_worker, write_outputs
SAMPLERS = (("instance-balanced", None), ("class-balanced re-sampling", "class_balanced"))


def _batches(source, pipeline):
    if pipeline == "tfdata":
        yield from source
    else:
        for index in range(len(source)):
            yield source[index]
        source.on_epoch_end()


def measure(root, pipeline, epochs, batch_size):
    """Rows ``{pipeline, sampler, epoch, images, images_per_s}`` (epoch 0 = build)."""
    from keras_margins import data
    rows = []
    for label, sampler in SAMPLERS:
        start = time.perf_counter()
        train, _, info = data.image_folder_lt(root, 100, batch_size=batch_size,
                                              sampler=sampler, pipeline=pipeline)
        rows.append({"pipeline": pipeline, "sampler": label, "epoch": "build",
                     "seconds": time.perf_counter() - start})
        for epoch in range(1, epochs + 1):
            start, count = time.perf_counter(), 0
            for _, labels in _batches(train, pipeline):
                count += int(labels.shape[0])
            seconds = time.perf_counter() - start
            rows.append({"pipeline": pipeline, "sampler": label, "epoch": epoch,
                         "images": count, "seconds": seconds, "images_per_s": count / seconds})
    return rows, info.train_size


def measure_device_loop(root, epochs, batch_size):
    """Rows as ``measure``'s, for the device pipeline's ``fit`` loop (module doc)."""
    import keras
    import numpy as np

    from applications.data import device_training_array
    from keras_margins import data

    start = time.perf_counter()
    (images, labels), _, info = data.image_folder_lt(root, 100, pipeline="arrays")
    (x, black), y = device_training_array(images), np.asarray(labels, "int32")
    build = time.perf_counter() - start

    class EpochTimes(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.start)

    rows = []
    # Keras' PyTorch trainer runs one step per call only.
    for steps in (1,) if keras.backend.backend() == "torch" else (1, 8):
        model = keras.Sequential([
            keras.Input(x.shape[1:]),
            data.RandomPadCropFlip(padding=4, fill_value=black, seed=0),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(info.num_classes)])
        model.compile(optimizer="sgd", steps_per_execution=steps,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        times = EpochTimes()
        times.seconds = []
        model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0,
                  callbacks=[times])
        label = f"device, steps_per_execution={steps}"
        rows.append({"pipeline": label, "sampler": "instance-balanced", "epoch": "build",
                     "seconds": build})
        rows += [{"pipeline": label, "sampler": "instance-balanced", "epoch": epoch,
                  "images": len(y), "seconds": seconds, "images_per_s": len(y) / seconds}
                 for epoch, seconds in enumerate(times.seconds, start=1)]
    return rows, info.train_size


def table(report):
    """The Markdown table of a report written by ``main``."""
    lines = [f"CIFAR-10-LT ratio 100 ({report['train_size']} images), pad 4 + random crop + "
             f"flip + normalise, batch {report['batch_size']}; {report['machine']}", "",
             "| pipeline | sampling | build (s) | epoch 1 images/s | later epochs images/s |",
             "|:--|:--|--:|--:|--:|"]
    groups = {}
    for row in report["rows"]:
        groups.setdefault((row["pipeline"], row["sampler"]), []).append(row)
    for (pipeline, sampler), rows in groups.items():
        build = next(r["seconds"] for r in rows if r["epoch"] == "build")
        epochs = [r["images_per_s"] for r in rows if r["epoch"] != "build"]
        later = " / ".join(f"{rate:,.0f}" for rate in epochs[1:]) or "–"
        lines.append(f"| {pipeline} | {sampler} | {build:.1f} | {epochs[0]:,.0f} | {later} |")
    return "\n".join(lines)


def main(argv=None):
    options = parser(__doc__, "data_pipeline.json", epilog=False)
    options.add_argument("--root", help="extracted CIFAR-10 JPEG folder (train/, test/)")
    options.add_argument("--epochs", type=int, default=3, help="default 3")
    options.add_argument("--batch-size", type=int, default=128, help="default 128")
    options.add_argument("--pipelines", nargs="+", default=["tfdata", "numpy", "device"],
                         choices=["tfdata", "numpy", "device"],
                         help="default: tfdata numpy device")
    options.add_argument("--table", help="print the table of an existing JSON report")
    args = options.parse_args(argv)
    if args.table:
        print(table(json.loads(pathlib.Path(args.table).read_text())))
        return

    prepare_worker()
    import keras

    from applications.cli import default_data_dir
    tmp = None
    root = args.root
    if root is None:
        tmp = tempfile.mkdtemp(prefix="cifar10_jpeg_")
        archive = default_data_dir() / "cifar10" / "cifar10-jpeg.tar.gz"
        subprocess.run(["tar", "xzf", str(archive), "-C", tmp], check=True)
        root = tmp
    try:
        rows = []
        for pipeline in args.pipelines:
            if pipeline == "device":
                measured, train_size = measure_device_loop(root, args.epochs, args.batch_size)
            else:
                measured, train_size = measure(root, pipeline, args.epochs, args.batch_size)
            rows += measured
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    report = {"train_size": train_size, "batch_size": args.batch_size, "rows": rows,
              "machine": f"{os.cpu_count()} CPU cores ({platform.processor() or 'cpu'}), "
                         f"Keras {keras.__version__} ({keras.backend.backend()})"}
    write_outputs(args, report, table(report))


if __name__ == "__main__":
    main()
