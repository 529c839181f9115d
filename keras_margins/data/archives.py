"""Image-folder archives: extract a ``.tar.gz`` / ``.tar`` / ``.zip`` once, reuse it.

``image_folder_lt`` (and ``cifar10_lt(folder=...)``) accept either a folder or
an archive of one, such as ``datasets/cifar10/cifar10-jpeg.tar.gz``,
or a folder that holds a single such archive. The archive is extracted into a
cache folder (default ``~/.keras/datasets/<archive name>``) that is marked
complete only after a successful extraction, so later calls cost nothing.
GNU ``tar`` is used when present (about 2 s for the 60,000 CIFAR-10 JPEGs);
Python's ``tarfile`` / ``zipfile`` otherwise. (``keras.utils.get_file`` can
extract too, but re-extracts on every call: minutes for 60,000 files.)
"""

import contextlib
import os
import pathlib
import shutil
import subprocess
import tarfile
import zipfile

__all__ = ["ARCHIVE_SUFFIXES", "extract_archive", "resolve_image_root"]

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
_MARKER = ".keras_margins_extracted"


def _is_archive(path):
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _stem(path):
    name = path.name
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def extract_archive(archive, cache_dir=None):
    """Extracts ``archive`` into ``cache_dir/<name>`` once; returns that folder."""
    archive = pathlib.Path(archive).expanduser().resolve()
    if not _is_archive(archive):
        raise ValueError(f"expected an archive file ({', '.join(ARCHIVE_SUFFIXES)}), "
                         f"received {archive}")
    cache_dir = pathlib.Path(cache_dir or os.environ.get("KERAS_HOME", "~/.keras")
                             ).expanduser() / ("" if cache_dir else "datasets")
    target = cache_dir / _stem(archive)
    if (target / _MARKER).exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(cache_dir / f".{target.name}.lock"):
        if (target / _MARKER).exists():      # extracted by a concurrent process
            return target
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            if archive.name.lower().endswith(".zip"):
                with zipfile.ZipFile(archive) as handle:
                    handle.extractall(partial)
            elif shutil.which("tar"):
                subprocess.run(["tar", "xf", str(archive), "-C", str(partial)], check=True,
                               capture_output=True)
            else:
                with tarfile.open(archive) as handle:
                    handle.extractall(partial, filter="data")
        except (OSError, subprocess.CalledProcessError, tarfile.TarError,
                zipfile.BadZipFile) as error:
            shutil.rmtree(partial, ignore_errors=True)
            raise ValueError(f"could not extract {archive}: {error}") from None
        (partial / _MARKER).touch()
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    return target


@contextlib.contextmanager
def _exclusive(lock_path):
    """An exclusive inter-process lock (``fcntl.flock``) so that parallel runs
    extract an archive once; a no-op where ``fcntl`` does not exist."""
    try:
        import fcntl
    except ImportError:       # Windows: no lock
        yield
        return
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def resolve_image_root(root, cache_dir=None):
    """A folder of class folders from ``root``: the folder itself, or its archive.

    ``root`` may be an archive file, or a folder holding no sub-folders but
    exactly one archive (e.g. ``datasets/cifar10``). If the extracted
    archive has a single top folder, that folder is returned.
    """
    root = pathlib.Path(root).expanduser()
    if root.is_dir():
        entries = list(root.iterdir())
        archives = [p for p in entries if _is_archive(p)]
        if any(p.is_dir() for p in entries) or len(archives) != 1:
            return root
        root = archives[0]
    if not root.exists():
        raise ValueError(f"image folder not found: {root}")
    if not _is_archive(root):
        raise ValueError(f"expected an image folder or an archive "
                         f"({', '.join(ARCHIVE_SUFFIXES)}), received {root}")
    extracted = extract_archive(root, cache_dir)
    children = [p for p in extracted.iterdir() if p.name != _MARKER]
    return children[0] if len(children) == 1 and children[0].is_dir() else extracted
