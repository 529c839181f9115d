"""``CosineDense``: a cosine-normalised classifier head.

``output = (x / ||x||) @ (W / ||W||_columns)``: each output is the cosine
between the features and one class prototype (a column of ``W``), in [-1, 1].
No bias. The normalisation runs in float32 under every dtype policy, and an
all-zero feature vector gives all-zero cosines (never NaN).

Reference: the ``NormedLinear`` head of LDAM-DRW (Cao et al., 2019) and
NormFace (Wang et al., 2017).
"""

import keras
from keras import ops

__all__ = ["CosineDense", "UnitNormColumns", "AppendFeatureNorm", "l2_normalize"]

_EPSILON = 1e-12


def l2_normalize(x, axis=-1, epsilon=_EPSILON):
    """``x / ||x||_2`` along ``axis``; vectors with ``||x||_2 <= epsilon`` give zeros.

    Zero (and sub-``epsilon``) vectors map to zero with a zero gradient. The
    usual ``x / max(||x||, epsilon)`` has a gradient of ``1 / epsilon = 1e12``
    there, which overflows once cast to float16 under ``mixed_float16``: every
    step with one all-zero feature vector would be skipped by the loss-scale
    optimizer (and its scale would collapse).
    """
    squared = ops.sum(ops.square(x), axis=axis, keepdims=True)
    # The floor is cast explicitly: keras-torch promotes (float64, python float) to float32.
    floor = ops.cast(epsilon * epsilon, ops.dtype(squared))
    large = squared > floor
    # Double `where`: the unused branch never sees rsqrt(0), so no inf/NaN gradient.
    safe = ops.where(large, squared, ops.ones_like(squared))
    return ops.where(large, x * ops.rsqrt(safe), ops.zeros_like(x))


@keras.saving.register_keras_serializable(package="keras_margins")
class UnitNormColumns(keras.initializers.Initializer):
    """Uniform(-1, 1) entries, then every column rescaled to unit L2 norm."""

    def __init__(self, seed=None):
        self.seed = seed
        self._generator = keras.random.SeedGenerator(seed) if seed is not None else None

    def __call__(self, shape, dtype=None):
        dtype = dtype or keras.backend.floatx()
        seed = self._generator if self._generator is not None else None
        values = keras.random.uniform(shape, -1.0, 1.0, dtype="float32", seed=seed)
        return ops.cast(l2_normalize(values, axis=0), dtype)

    def get_config(self):
        return {"seed": self.seed}


@keras.saving.register_keras_serializable(package="keras_margins")
class CosineDense(keras.layers.Layer):
    """Dense layer of cosines: normalised inputs times a column-normalised kernel.

    ``y_j = <x / ||x||, w_j / ||w_j||>`` for each of ``units`` classes.

    Args:
        units: number of classes.
        kernel_initializer: default ``UnitNormColumns`` (unit-norm columns).
        kernel_regularizer: e.g. ``keras_margins.regularizers.ZeroCentroid``.
        kernel_constraint: optional Keras constraint.

    Example:
    ```python
    features = keras.layers.GlobalAveragePooling2D()(backbone_output)
    cosines = km.layers.CosineDense(10)(features)
    model.compile(loss=km.losses.LDAMLoss(class_counts))
    ```
    """

    def __init__(self, units, kernel_initializer=None, kernel_regularizer=None,
                 kernel_constraint=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(units, bool) or not isinstance(units, int) or units < 2:
            raise ValueError(f"`units` must be an integer >= 2 (the number of classes), "
                             f"received {units!r}.")
        self.units = units
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer if kernel_initializer is not None else UnitNormColumns())
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)

    def build(self, input_shape):
        features = input_shape[-1]
        if features is None:
            raise ValueError(f"CosineDense needs a known last dimension, received input "
                             f"shape {input_shape}.")
        self.kernel = self.add_weight(
            name="kernel", shape=(features, self.units),
            initializer=self.kernel_initializer, regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint)

    @property
    def _math_dtype(self):
        # float32 under float16/bfloat16 policies; float64 stays float64.
        return "float64" if self.compute_dtype == "float64" else "float32"

    def normalized_kernel(self):
        """The kernel with unit-norm columns (class prototypes), float32."""
        return l2_normalize(ops.cast(self.kernel, self._math_dtype), axis=0)

    def call(self, inputs):
        features = l2_normalize(ops.cast(inputs, self._math_dtype), axis=-1)
        cosines = ops.matmul(features, self.normalized_kernel())
        return ops.cast(cosines, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
            kernel_constraint=keras.constraints.serialize(self.kernel_constraint))
        return config


@keras.saving.register_keras_serializable(package="keras_margins")
class AppendFeatureNorm(keras.layers.Layer):
    """Appends each sample's L1 feature norm to its logits: ``[logits, ||h||_1]``.

    Called on ``[logits, features]`` (features of any rank; the norm sums
    ``|h|`` over every non-batch axis), it returns shape (batch, C + 1): the
    ``y_pred`` that ``keras_margins.losses.InfluenceBalancedLoss`` expects.
    The norm is computed in float32; gradients flow into the features.

    Example:
    ```python
    features = keras.layers.GlobalAveragePooling2D()(backbone_output)
    logits = keras.layers.Dense(10)(features)
    outputs = km.layers.AppendFeatureNorm()([logits, features])
    train_model = keras.Model(inputs, outputs)      # compile with the IB loss
    predict_model = keras.Model(inputs, logits)     # same weights, for inference
    ```
    """

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise ValueError("AppendFeatureNorm expects a list [logits, features], "
                             f"received {type(inputs).__name__}.")
        logits, features = inputs
        features = ops.cast(features, "float32")
        axes = tuple(range(1, len(features.shape)))
        norms = ops.sum(ops.abs(features), axis=axes)[:, None]
        return ops.concatenate([ops.cast(logits, self.compute_dtype),
                                ops.cast(norms, self.compute_dtype)], axis=-1)

    def compute_output_shape(self, input_shape):
        logits_shape = tuple(input_shape[0])
        units = None if logits_shape[-1] is None else logits_shape[-1] + 1
        return logits_shape[:-1] + (units,)
