"""keras-margins: margin-based losses for imbalanced and long-tailed classification.

Keras 3 losses, layers, callbacks, metrics and long-tailed data pipelines that
run unchanged on the TensorFlow, JAX and PyTorch backends.
"""

from keras_margins import callbacks, layers, losses, ops, priors, schedules

__version__ = "0.1.0"

__all__ = ["callbacks", "layers", "losses", "ops", "priors", "schedules", "__version__"]
