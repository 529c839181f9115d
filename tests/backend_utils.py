"""Backend-specific helpers for tests only (the library itself uses keras.ops)."""

import contextlib

import keras
import numpy as np

BACKEND = keras.backend.backend()


@contextlib.contextmanager
def float64_enabled():
    """Lets JAX hold float64 arrays inside the block (TF and torch always can)."""
    if BACKEND != "jax":
        yield
        return
    import jax
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


def value_and_grad(function, x, dtype="float32"):
    """``function(x)`` (a scalar) and its gradient w.r.t. ``x``, as numpy."""
    x = np.asarray(x, dtype=dtype)
    if BACKEND == "jax":
        import jax
        value, grad = jax.value_and_grad(lambda z: function(z))(jax.numpy.asarray(x))
        return np.asarray(value), np.asarray(grad)
    if BACKEND == "tensorflow":
        import tensorflow as tf
        variable = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(variable)
            value = function(variable)
        return value.numpy(), tape.gradient(value, variable).numpy()
    import torch
    variable = torch.tensor(x, requires_grad=True)
    value = function(variable)
    value.backward()
    return value.detach().cpu().numpy(), variable.grad.detach().cpu().numpy()


def loss_value_and_grad(loss, labels, x, dtype="float32"):
    """Mean loss and d(mean loss)/d(y_pred) for a Keras loss object."""
    labels = np.asarray(labels)
    return value_and_grad(lambda z: loss(labels, z), x, dtype)


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def small_model(num_classes=10, cosine=True, input_shape=(28, 28, 1), seed=0,
                head_regularizer=None):
    """A tiny MLP for 28x28 images: Dense features, then CosineDense or Dense."""
    from keras_margins.layers import CosineDense
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(32, activation="relu")(x)
    if cosine:
        outputs = CosineDense(num_classes, kernel_regularizer=head_regularizer)(x)
    else:
        outputs = keras.layers.Dense(num_classes)(x)
    return keras.Model(inputs, outputs)


def fit_and_roundtrip(model, loss, x, y, tmp_path, epochs=1, callbacks=None, batch_size=64):
    """Fits a few steps, checks finite history, saves/loads, returns (history, reloaded)."""
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=loss)
    history = model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0,
                        callbacks=callbacks or [])
    losses = np.asarray(history.history["loss"], dtype="float64")
    assert np.all(np.isfinite(losses)), f"non-finite training loss: {losses}"
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(to_numpy(reloaded.predict(x[:32], verbose=0)),
                               to_numpy(model.predict(x[:32], verbose=0)), rtol=1e-5, atol=1e-6)
    # The compiled loss survives the round trip with the same configuration.
    assert type(reloaded.loss) is type(loss)
    assert reloaded.loss.get_config() == loss.get_config()
    return history, reloaded


def without_tensorflow(env, folder):
    """``env`` (a subprocess environment) where importing TensorFlow and
    tensorflow_datasets fails, as on the GPU machines: stub packages that raise
    ``ImportError`` are written to ``folder`` and put first on ``PYTHONPATH``."""
    import os
    import pathlib
    import subprocess
    import sys
    folder = pathlib.Path(folder)
    for name in ("tensorflow", "tensorflow_datasets"):
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "__init__.py").write_text(
            f"raise ImportError('{name} is blocked by this test')\n")
    env = dict(env)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(folder), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    check = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env,
                           capture_output=True, text=True)
    assert "blocked by this test" in check.stderr
    return env
