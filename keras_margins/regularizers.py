"""``ZeroCentroid``: pulls the mean of the unit-normalised class prototypes to zero."""

import keras
from keras import ops

from keras_margins.validation import validate_non_negative

__all__ = ["ZeroCentroid"]

_EPSILON = 1e-12


@keras.saving.register_keras_serializable(package="keras_margins")
class ZeroCentroid(keras.regularizers.Regularizer):
    """Zero-centroid regulariser on a classifier kernel of shape (features, classes).

    ``R(W) = weight * || (1/C) sum_j w_hat_j ||^2`` where ``w_hat_j`` is column
    ``j`` of ``W`` (the prototype of class ``j``) scaled to unit L2 norm. On
    imbalanced data the prototypes of the many rare classes drift together;
    centring them spreads them over the sphere (largest class margin).
    Computed in float32 whatever the kernel's dtype.

    Args:
        weight: multiplier ``lam`` >= 0.

    Example:
    ```python
    cosines = km.layers.CosineDense(
        10, kernel_regularizer=km.regularizers.ZeroCentroid(1.0))(features)
    model.compile(loss=km.losses.LMSoftmaxLoss(scale=5.0))
    ```

    Reference: Zhou et al., "Learning Towards the Largest Margins", ICLR 2022
    (zero-centroid regularisation, Table 2, marked *).
    """

    def __init__(self, weight=1.0):
        self.weight = validate_non_negative(weight, "weight")

    def __call__(self, kernel):
        kernel = ops.cast(kernel, "float32")
        if len(kernel.shape) != 2:
            raise ValueError(f"ZeroCentroid expects a kernel of shape (features, classes), "
                             f"received shape {tuple(kernel.shape)}.")
        squared = ops.sum(ops.square(kernel), axis=0, keepdims=True)
        prototypes = kernel * ops.rsqrt(ops.maximum(squared, _EPSILON * _EPSILON))
        centroid = ops.mean(prototypes, axis=1)
        return self.weight * ops.sum(ops.square(centroid))

    def get_config(self):
        return {"weight": self.weight}
