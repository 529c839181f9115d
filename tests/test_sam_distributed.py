"""SAMModel and ImbSAMModel under data parallelism equal single-device training.

One subprocess per backend (device counts must be set before the backend
starts), collected only under the backend it needs: JAX
``keras.distribution.DataParallel`` over 2 virtual CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=2``) and TensorFlow
``tf.distribute.MirroredStrategy`` over 2 logical CPUs. Two SGD steps on one
batch of 8 (4 per device) with a mean-over-batch loss: the perturbation must
use the global-batch gradient, so the weights match single-device training;
a perturbation from each device's own gradient would not.
"""

import json
import os
import subprocess
import sys

from backend_utils import BACKEND

SCRIPT = r"""
import json, os
backend = os.environ["KERAS_BACKEND"]
if backend == "tensorflow":
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
import keras_margins as km

rng = np.random.default_rng(0)
x = rng.normal(size=(8, 5)).astype("float32")
y = np.array([0, 0, 1, 2, 0, 1, 0, 2], "int32")  # halves with different gradients

def build(kind, weights=None):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,))
    outputs = keras.layers.Dense(3)(keras.layers.Dense(4, activation="tanh")(inputs))
    if kind == "sam":
        model = km.sam.SAMModel(inputs, outputs, rho=0.5)
    elif kind == "imbsam":
        model = km.sam.ImbSAMModel(inputs, outputs, rho=0.5, tail_classes=[2])
    else:
        model = keras.Model(inputs, outputs)
    if weights is not None:
        model.set_weights(weights)
    return model

def train(model):
    model.compile(optimizer=keras.optimizers.SGD(0.5),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    return [np.asarray(w) for w in model.get_weights()]

w0 = build("plain").get_weights()
single = {kind: train(build(kind, w0)) for kind in ("plain", "sam", "imbsam")}

if backend == "jax":
    devices = keras.distribution.list_devices("cpu")
    assert len(devices) == 2, devices
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    dist = {kind: train(build(kind, w0)) for kind in ("sam", "imbsam")}
else:
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    dist = {}
    for kind in ("sam", "imbsam"):
        with strategy.scope():
            model = build(kind, w0)
        dist[kind] = train(model)

def diff(a, b):
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b))

print("RESULT" + json.dumps({
    **{kind + "_vs_dist": diff(single[kind], dist[kind]) for kind in dist},
    **{kind + "_vs_plain": diff(single[kind], single["plain"]) for kind in dist}}))
"""


def _run(backend, extra_env):
    env = dict(os.environ, KERAS_BACKEND=backend, **extra_env)
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT"):])


def _check(result):
    for kind in ("sam", "imbsam"):
        assert result[kind + "_vs_plain"] > 1e-3, result  # the perturbation matters
        assert result[kind + "_vs_dist"] < 1e-5, result


if BACKEND == "jax":
    def test_sam_and_imbsam_under_jax_data_parallel_equal_single_device():
        _check(_run("jax", {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}))


if BACKEND == "tensorflow":
    def test_sam_and_imbsam_under_tf_mirrored_strategy_equal_single_device():
        _check(_run("tensorflow", {"CUDA_VISIBLE_DEVICES": ""}))
