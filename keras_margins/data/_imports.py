"""Optional dependencies of ``keras_margins.data``, imported only when a feature needs them.

TensorFlow (and tensorflow-datasets) back the ``tf.data`` pipelines; Pillow
decodes image files on the NumPy path. ``import keras_margins.data`` needs
neither, so GPU machines with JAX or PyTorch and no TensorFlow can use the
NumPy path (``pipeline="numpy"``).
"""

import importlib

__all__ = ["import_tensorflow", "import_tfds", "import_pil_image", "tensorflow_available"]

_DATA_EXTRA = 'pip install "keras-margins[data]" (or tensorflow)'


def import_tensorflow(feature):
    """``tensorflow``, or an ``ImportError`` saying which extra ``feature`` needs."""
    try:
        return importlib.import_module("tensorflow")
    except ImportError as error:
        raise ImportError(f"{feature} needs TensorFlow, which could not be imported ({error}): "
                          f"{_DATA_EXTRA}. Without TensorFlow, build the data with "
                          f'pipeline="numpy" (keras.utils.PyDataset batches).') from error


def import_tfds(feature):
    """``tensorflow_datasets`` (with TensorFlow), or an ``ImportError`` naming the extra."""
    import_tensorflow(feature)
    try:
        return importlib.import_module("tensorflow_datasets")
    except ImportError as error:
        raise ImportError(f"{feature} needs tensorflow-datasets, which could not be imported "
                          f'({error}): pip install "keras-margins[data]".') from error


def import_pil_image(feature="decoding image files"):
    """``PIL.Image``, or an ``ImportError`` asking for Pillow."""
    try:
        return importlib.import_module("PIL.Image")
    except ImportError as error:
        raise ImportError(f"{feature} needs Pillow, which could not be imported ({error}): "
                          f"pip install Pillow.") from error


def tensorflow_available():
    """Whether ``import tensorflow`` succeeds (what ``pipeline="auto"`` decides on)."""
    try:
        importlib.import_module("tensorflow")
    except ImportError:
        return False
    return True
