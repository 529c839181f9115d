"""keras-margins: margin-based losses for imbalanced and long-tailed classification.

Keras 3 losses, layers, callbacks, metrics and long-tailed data pipelines that
run unchanged on the TensorFlow, JAX and PyTorch backends.

``keras_margins.data`` (tf.data pipelines) is imported on first use, so that
``import keras_margins`` never imports TensorFlow under the JAX or torch backend.
"""

import importlib

from keras_margins import callbacks, layers, losses, ops, priors, schedules, validation

__version__ = "0.1.0"

_LAZY_MODULES = {"data", "metrics", "regularizers", "evaluation", "margins", "groups",
                 "reporting", "sam", "class_conditional_sam", "decoupling"}

__all__ = ["callbacks", "class_conditional_sam", "data", "decoupling", "evaluate_long_tailed",
           "evaluation", "groups", "layers", "losses", "margins", "metrics", "ops", "priors",
           "regularizers", "reporting", "sam", "schedules", "validation", "__version__"]


def __getattr__(name):
    if name in _LAZY_MODULES:
        return importlib.import_module(f"keras_margins.{name}")
    if name == "evaluate_long_tailed":
        return importlib.import_module("keras_margins.evaluation").evaluate_long_tailed
    raise AttributeError(f"module 'keras_margins' has no attribute {name!r}")
