"""What every command-line entry point shares: the backend rule and the data folder.

* Backend: ``--backend NAME`` sets ``KERAS_BACKEND`` before Keras is imported;
  without it, ``$KERAS_BACKEND``, else Keras's own default (the backend of
  ``~/.keras/keras.json``, TensorFlow when that file does not exist).
* ``--data-dir``: the folder that contains the datasets (``fashion-mnist/``
  with the IDX files, ``cifar10/`` with the CIFAR-10 JPEG archive or its
  ``train/`` and ``test/`` folders); default ``$KERAS_MARGINS_DATA``, else
  ``$KERAS_MARGINS_SHARED/datasets``, else ``shared/datasets`` next to the
  repository folder.

``applications.quickstart``, ``applications.train``, ``applications.reproduce``
and the scripts in ``examples/`` add their options with
``add_backend_argument`` and ``add_data_dir_argument``, so their ``--help``
states the same rule. Importing this module does not import Keras.
"""

import os
import pathlib
import sys

__all__ = ["BACKENDS", "BACKEND_HELP", "DATA_DIR_HELP", "add_backend_argument",
           "add_data_dir_argument", "default_data_dir", "use_backend"]

BACKENDS = ("tensorflow", "jax", "torch")
BACKEND_HELP = ("Keras backend, set before Keras is imported (default: $KERAS_BACKEND, "
                "else Keras's own default: the backend in ~/.keras/keras.json, tensorflow "
                "when that file does not exist)")
DATA_DIR_HELP = ("folder that contains the datasets (fashion-mnist/, cifar10/); default "
                 "$KERAS_MARGINS_DATA, else $KERAS_MARGINS_SHARED/datasets, else "
                 "../shared/datasets next to this checkout")


def default_data_dir():
    """The datasets folder when ``--data-dir`` is not given (module docstring)."""
    env = os.environ.get("KERAS_MARGINS_DATA")
    if env:
        return pathlib.Path(env)
    shared = os.environ.get("KERAS_MARGINS_SHARED")
    if shared:
        return pathlib.Path(shared) / "datasets"
    return pathlib.Path(__file__).resolve().parents[2] / "shared" / "datasets"


def add_backend_argument(parser, help_prefix=""):
    """``--backend {tensorflow,jax,torch}`` with the shared help text."""
    return parser.add_argument("--backend", choices=BACKENDS, default=None,
                               help=help_prefix + BACKEND_HELP)


def add_data_dir_argument(parser, help_suffix=""):
    """``--data-dir PATH`` (default None: ``default_data_dir()`` when read)."""
    return parser.add_argument("--data-dir", type=pathlib.Path, default=None,
                               help=DATA_DIR_HELP + help_suffix)


def use_backend(backend=None):
    """Applies the backend rule before Keras is imported; returns the backend name
    in effect (None: Keras's own default).

    With ``backend`` set, ``KERAS_BACKEND`` is set to it (an error if Keras is
    already imported with another backend). For torch, torch is imported
    first (before TensorFlow, which some data paths import; see tests/conftest.py).
    """
    if backend:
        if "keras" in sys.modules and os.environ.get("KERAS_BACKEND") != backend:
            raise SystemExit("--backend must be chosen before keras is imported; set "
                             "KERAS_BACKEND instead.")
        os.environ["KERAS_BACKEND"] = backend
    chosen = os.environ.get("KERAS_BACKEND") or None
    if chosen == "torch":
        try:
            import torch  # noqa: F401
        except ImportError:
            pass
    return chosen
