"""Shared helpers of the data tests: synthetic long-tailed labels, images, batches."""

import numpy as np


COUNTS = [500, 300, 180, 100, 60, 40, 20, 10]
LABELS = np.repeat(np.arange(len(COUNTS)), COUNTS)


def _images(n, shape=(6, 6, 3), seed=0):
    return np.random.RandomState(seed).randint(0, 256, (n, *shape)).astype("uint8")


def _write_image(path, pixels):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(path)


def _all_batches(batches):
    xs, ys = zip(*(batches[i] for i in range(len(batches))))
    return np.concatenate(xs), np.concatenate(ys)


def _tf_batches(ds):
    xs, ys = zip(*ds.as_numpy_iterator())
    return np.concatenate(xs), np.concatenate(ys)


def _sorted_rows(images):
    flat = np.asarray(images).reshape(len(images), -1)
    return flat[np.lexsort(flat.T[::-1])]


def _make_folder(root, classes, per_class=3, size=(8, 8)):
    for c, name in enumerate(classes):
        for i in range(per_class):
            _write_image(root / name / f"{i:02d}.png", _images(1, (*size, 3), seed=10 * c + i)[0])
