"""Readers for the long-tailed split lists of ImageNet-LT, Places-LT and iNaturalist.

Text lists (plain or ``.gz``) hold one ``relative/path label`` per line (the
Decoupling / OLTR protocol files); iNaturalist 2018 also ships COCO-style JSON
(``images``, ``annotations``, ``categories``). Every problem raises a
``ValueError`` naming the file and the line (or JSON entry).
"""

import gzip
import json
import os

import numpy as np

from keras_margins.data.folders import check_image_file

__all__ = ["read_split_file", "read_inaturalist_json", "read_split"]


def _open_text(path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"split file not found: {path}")
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _check_labels(labels, num_classes, describe):
    if num_classes is None:
        return
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{describe(i)}: label {labels[i]} out of range [0, {num_classes}).")


def _check_files(paths, image_root, describe):
    if image_root is None:
        return
    for i, path in enumerate(paths):
        if not os.path.exists(path):
            raise ValueError(f"{describe(i)}: image file not found: {path} "
                             f"(image_root={os.fspath(image_root)}).")


def read_split_file(list_file, image_root=None, num_classes=None, check_files=True):
    """Reads a ``relative/path label`` list.

    Args:
        list_file: the text list, plain or gzip (``.gz``).
        image_root: folder the relative paths start from; ``None`` keeps them
            relative (and skips the file checks).
        num_classes: when given, labels must lie in ``[0, num_classes)``.
        check_files: check that every image exists under ``image_root``.

    Returns:
        ``(paths, labels)``: numpy arrays of str (joined with ``image_root``)
        and int64, in file order.

    Raises:
        ValueError: naming the file and line for a malformed line (not
            ``path label``, or a non-integer or negative label), a label out
            of range, a missing image, or a list with no entries.
    """
    list_file = os.fspath(list_file)
    paths, labels, lines = [], [], []
    with _open_text(list_file) as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text:
                continue
            parts = text.rsplit(None, 1)
            if len(parts) != 2:
                raise ValueError(f"{list_file}, line {number}: malformed line {text!r} "
                                 f"(expected 'relative/path label').")
            try:
                label = int(parts[1])
            except ValueError:
                raise ValueError(f"{list_file}, line {number}: malformed line {text!r} "
                                 f"(the label {parts[1]!r} is not an integer).") from None
            if label < 0:
                raise ValueError(f"{list_file}, line {number}: label {label} out of range "
                                 f"(labels must be >= 0).")
            paths.append(parts[0])
            labels.append(label)
            lines.append(number)
    if not paths:
        raise ValueError(f"{list_file}: empty list (no 'relative/path label' lines).")
    labels = np.asarray(labels, dtype=np.int64)
    describe = lambda i: f"{list_file}, line {lines[i]}"  # noqa: E731
    _check_labels(labels, num_classes, describe)
    if image_root is not None:
        paths = [os.path.join(os.fspath(image_root), p) for p in paths]
        if check_files:
            _check_files(paths, image_root, describe)
    return np.asarray(paths, dtype=str), labels


def read_inaturalist_json(json_file, image_root=None, num_classes=None, check_files=True):
    """Reads an iNaturalist-2018 (COCO-style) annotation file.

    ``images`` give ``id`` and ``file_name``, ``annotations`` give ``image_id``
    and ``category_id`` (the class id, as in the published lists),
    ``categories`` (optional) give ``id`` and ``name``.

    Returns:
        ``(paths, labels, class_names)``; ``class_names`` is ``None`` when the
        file has no categories, else a list indexed by class id.
    """
    json_file = os.fspath(json_file)
    with _open_text(json_file) as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"{json_file}, line {error.lineno}: invalid JSON "
                             f"({error.msg}).") from None
    for key in ("images", "annotations"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise ValueError(f"{json_file}: expected a COCO-style object with an "
                             f"{key!r} list.")
    if not data["images"]:
        raise ValueError(f"{json_file}: empty list (no images).")
    label_of = {}
    for k, ann in enumerate(data["annotations"]):
        try:
            label_of[ann["image_id"]] = int(ann["category_id"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{json_file}, annotations[{k}]: malformed entry {ann!r} "
                             f"(expected image_id and category_id).") from None
    paths, labels = [], []
    for k, image in enumerate(data["images"]):
        try:
            image_id, file_name = image["id"], image["file_name"]
        except (KeyError, TypeError):
            raise ValueError(f"{json_file}, images[{k}]: malformed entry {image!r} "
                             f"(expected id and file_name).") from None
        if image_id not in label_of:
            raise ValueError(f"{json_file}, images[{k}]: image id {image_id!r} has no "
                             f"annotation.")
        paths.append(file_name)
        labels.append(label_of[image_id])
    labels = np.asarray(labels, dtype=np.int64)
    describe = lambda i: f"{json_file}, images[{i}]"  # noqa: E731
    bad = np.flatnonzero(labels < 0)
    if bad.size:
        raise ValueError(f"{describe(int(bad[0]))}: label {labels[bad[0]]} out of range "
                         f"(labels must be >= 0).")
    _check_labels(labels, num_classes, describe)
    class_names = None
    if isinstance(data.get("categories"), list) and data["categories"]:
        size = max(int(c["id"]) for c in data["categories"]) + 1
        class_names = [str(i) for i in range(size)]
        for c in data["categories"]:
            class_names[int(c["id"])] = str(c.get("name", c["id"]))
    if image_root is not None:
        paths = [os.path.join(os.fspath(image_root), p) for p in paths]
        if check_files:
            _check_files(paths, image_root, describe)
    return np.asarray(paths, dtype=str), labels, class_names


def read_split(list_file, image_root=None, num_classes=None, check_files=True):
    """``read_split_file`` or ``read_inaturalist_json`` (``.json``/``.json.gz``).

    Returns ``(paths, labels, class_names)``, ``class_names`` possibly ``None``.
    """
    name = os.fspath(list_file)
    if name.endswith((".json", ".json.gz")):
        return read_inaturalist_json(name, image_root, num_classes, check_files)
    paths, labels = read_split_file(name, image_root, num_classes, check_files)
    return paths, labels, None
