"""Image folders (``root/<class>/<image>``): listing and image checks.

Class ids follow the sorted class sub-folder names (as
``keras.utils.image_dataset_from_directory`` and
``tfds.folder_dataset.ImageFolder`` number them), files are sorted by name
within each class, so the listing is deterministic and class-ordered.
"""

import os

import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "list_image_folder", "check_image_file"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")

_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"GIF87a", b"GIF89a")


def check_image_file(path, where=None):
    """Raises ``ValueError`` naming ``path`` unless it exists and starts like an image.

    Reads only the first bytes (JPEG, PNG, BMP or GIF signature), so checking a
    whole training list is cheap. ``where`` (e.g. ``"list.txt, line 7"``)
    is added to the message.
    """
    suffix = f" ({where})" if where else ""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except FileNotFoundError:
        raise ValueError(f"image file not found: {path}{suffix}") from None
    except OSError as error:
        raise ValueError(f"cannot read image file {path}{suffix}: {error}") from None
    if not any(head.startswith(magic) for magic in _MAGIC):
        kind = "is empty" if not head else f"does not start like a JPEG/PNG/BMP/GIF image ({head[:4]!r})"
        raise ValueError(f"unreadable image file {path}{suffix}: it {kind}.")


def list_image_folder(root, class_names=None, extensions=IMAGE_EXTENSIONS):
    """Lists ``root/<class>/<file>`` images.

    Args:
        root: folder holding one sub-folder per class.
        class_names: optional explicit class order (sub-folder names); by default
            the sorted sub-folder names.
        extensions: image file name endings to keep (case-insensitive).

    Returns:
        ``(paths, labels, class_names)``: a numpy array of str paths, int64
        labels (class-ordered, files sorted by name) and the list of names.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise ValueError(f"image folder not found: {root} (expected one sub-folder per class).")
    found = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if class_names is None:
        class_names = found
    else:
        class_names = [str(name) for name in class_names]
        missing = [name for name in class_names if name not in found]
        if missing:
            raise ValueError(f"class folders missing under {root}: {missing[:10]}.")
    if not class_names:
        raise ValueError(f"image folder {root} has no class sub-folders (expected "
                         f"root/<class>/<image>).")
    extensions = tuple(e.lower() for e in extensions)
    paths, labels = [], []
    for label, name in enumerate(class_names):
        folder = os.path.join(root, name)
        files = sorted(entry.name for entry in os.scandir(folder)
                       if entry.is_file() and entry.name.lower().endswith(extensions))
        if not files:
            raise ValueError(f"class folder {folder} holds no images ({', '.join(extensions)}).")
        paths.extend(os.path.join(folder, f) for f in files)
        labels.extend([label] * len(files))
    return np.asarray(paths, dtype=str), np.asarray(labels, dtype=np.int64), list(class_names)
