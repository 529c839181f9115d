"""Data-parallel training equals single-device training (with DRW weights).

Each check runs in one subprocess (device counts must be set before the
backend starts): JAX ``keras.distribution.DataParallel`` over 4 virtual CPU
devices (``XLA_FLAGS=--xla_force_host_platform_device_count=4``) and
TensorFlow ``tf.distribute.MirroredStrategy`` over 2 logical CPUs. The tests
exist only under the backend they need (not collected elsewhere).

What is compared, for one full batch of 16 with the DRW class-balanced weights
switched on by ``DeferredReweighting(start_epoch=0)`` (weighted mean
``sum w_y l / sum w_y``), one plain SGD step:

* JAX DataParallel compiles one program over the global batch: the loss is the
  global weighted mean, identical to a single device.
* tf.distribute computes the loss per replica (a weighted mean over its local
  batch, divided by the number of replicas) and sums the gradients: the step is
  the mean of the per-replica weighted means, as in PyTorch DDP. It equals the
  global weighted mean only when the replicas' weight sums are equal, so it is
  compared with the average of single-device steps on each half of the batch.
"""

import json
import os
import subprocess
import sys

import numpy as np

from backend_utils import BACKEND

SCRIPT = r"""
import json, os, sys
backend = os.environ["KERAS_BACKEND"]
if backend == "tensorflow":
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
import keras_margins as km

counts = [50, 20, 8, 3]
rng = np.random.default_rng(0)
x = rng.normal(size=(16, 6)).astype("float32")
y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 3, 3, 2, 1, 0, 3])  # unequal halves

def build(weights=None):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    model = keras.Model(inputs, km.layers.CosineDense(4)(keras.layers.Dense(8)(inputs)))
    if weights is not None:
        model.set_weights(weights)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=km.losses.LDAMLoss(counts))
    return model

def step(model, xs, ys):
    drw = km.callbacks.DeferredReweighting(counts, start_epoch=0)
    model.fit(xs, ys, batch_size=len(xs), epochs=1, shuffle=False, verbose=0, callbacks=[drw])
    loss = model.evaluate(xs, ys, batch_size=len(xs), verbose=0)
    return [np.asarray(w) for w in model.get_weights()], float(loss)

w0 = build().get_weights()
single_w, single_loss = step(build(w0), x, y)
halves = [step(build(w0), x[i:i + 8], y[i:i + 8]) for i in (0, 8)]
halves_w = [(a + b) / 2 for a, b in zip(halves[0][0], halves[1][0])]
halves_loss = (halves[0][1] + halves[1][1]) / 2

if backend == "jax":
    devices = keras.distribution.list_devices("cpu")
    assert len(devices) == 4, devices
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    dist_w, dist_loss = step(build(w0), x, y)
else:
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        model = build(w0)
    dist_w, dist_loss = step(model, x, y)

def diff(a, b):
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b))

print("RESULT" + json.dumps({
    "single_vs_dist": diff(single_w, dist_w), "halves_vs_dist": diff(halves_w, dist_w),
    "single_vs_halves": diff(single_w, halves_w), "moved": diff(single_w, w0),
    "single_loss": single_loss, "halves_loss": halves_loss, "dist_loss": dist_loss}))
"""


def _run(backend, extra_env):
    env = dict(os.environ, KERAS_BACKEND=backend, **extra_env)
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT"):])


if BACKEND == "jax":
    def test_jax_data_parallel_equals_single_device():
        result = _run("jax", {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
        assert result["moved"] > 1e-3
        assert result["single_vs_dist"] < 1e-5, result  # global weighted mean
        np.testing.assert_allclose(result["dist_loss"], result["single_loss"], rtol=1e-5)


if BACKEND == "tensorflow":
    def test_tf_mirrored_strategy_is_the_mean_of_per_replica_weighted_means():
        result = _run("tensorflow", {"CUDA_VISIBLE_DEVICES": ""})
        assert result["moved"] > 1e-3
        assert result["halves_vs_dist"] < 1e-5, result
        # The per-replica rule differs from the global weighted mean on these halves.
        assert result["single_vs_halves"] > 1e-4, result
        assert np.isfinite(result["dist_loss"])
