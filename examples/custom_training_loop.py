"""A margin loss in your own model and your own training loop.

Title: ELM loss with deferred re-weighting in a hand-written training loop
Description: The losses are plain ``keras.losses.Loss`` objects: call them on
labels and cosines inside any training step. This example writes the step for
each backend (JAX ``stateless_call``, TensorFlow ``GradientTape``, PyTorch
``backward``), trains on Fashion-MNIST-LT, switches to class-balanced weights
(DRW) for the last epochs, and evaluates per shot group.

    KERAS_BACKEND=torch python examples/custom_training_loop.py
    python examples/custom_training_loop.py --smoke          # a few steps (CI)

A loss's class weights are constants of a compiled step (``tf.function``,
``jax.jit``): after changing them, build the step again, as done below.
(``model.fit`` users get this from ``km.callbacks.DeferredReweighting``.)
"""

import argparse
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from applications import cli  # noqa: E402  (does not import Keras)

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
cli.add_data_dir_argument(parser, "; reads its fashion-mnist/ folder")
parser.add_argument("--epochs", type=int, default=6, help="epochs (default 6)")
parser.add_argument("--smoke", action="store_true",
                    default=os.environ.get("KERAS_MARGINS_SMOKE", "") == "1",
                    help="2 epochs of 3 steps (also KERAS_MARGINS_SMOKE=1)")
cli.add_backend_argument(parser)
args = parser.parse_args()
cli.use_backend(args.backend)
data_dir = args.data_dir or cli.default_data_dir()
epochs = 2 if args.smoke else args.epochs

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_margins as km  # noqa: E402
from applications.protocol import PAPER_PROTOCOL  # noqa: E402

backend = keras.backend.backend()

# Data: Fashion-MNIST made long-tailed (ratio 100) with the LDAM-DRW selection rule.
folder = data_dir / "fashion-mnist"
x_train = km.data.read_idx(folder / "train-images-idx3-ubyte.gz")[..., None] / 255.0
y_train = km.data.read_idx(folder / "train-labels-idx1-ubyte.gz").astype("int32")
x_test = km.data.read_idx(folder / "t10k-images-idx3-ubyte.gz")[..., None] / 255.0
y_test = km.data.read_idx(folder / "t10k-labels-idx1-ubyte.gz").astype("int32")
counts = km.data.long_tail_counts(10, 6000, imbalance_ratio=100)
x_train, y_train = km.data.subsample_arrays(x_train.astype("float32"), y_train, counts)
x_test = x_test.astype("float32")
if args.smoke:
    x_test, y_test = x_test[:500], y_test[:500]

# Your own model: any backbone, ending in a cosine classifier.
keras.utils.set_random_seed(0)
model = keras.Sequential([
    keras.Input((28, 28, 1)),
    keras.layers.Conv2D(32, 3, use_bias=False),
    keras.layers.BatchNormalization(),   # a cosine head at scale 30 needs it
    keras.layers.ReLU(),
    keras.layers.MaxPooling2D(),
    keras.layers.Conv2D(64, 3, use_bias=False),
    keras.layers.BatchNormalization(),
    keras.layers.ReLU(),
    keras.layers.GlobalAveragePooling2D(),
    km.layers.CosineDense(10),
])
loss_fn = km.losses.ELMLoss(counts, lam=1.0, max_margin=0.5, scale=30.0)
optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
optimizer.build(model.trainable_variables)


def make_train_step():
    """One optimizer step on a batch; returns the loss."""
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)
            return loss
        return step
    if backend == "torch":
        import torch

        def step(x, y):
            x, y = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)
            model.zero_grad()
            loss = loss_fn(y, model(x, training=True))
            loss.backward()
            variables = model.trainable_variables
            with torch.no_grad():
                optimizer.apply([v.value.grad for v in variables], variables)
            return loss
        return step
    import jax  # JAX: pure function of the variable values, then write them back.

    def compute_loss(trainable, non_trainable, x, y):
        y_pred, non_trainable = model.stateless_call(trainable, non_trainable, x,
                                                     training=True)
        return loss_fn(y, y_pred), non_trainable

    @jax.jit
    def pure_step(state, x, y):
        trainable, non_trainable, optimizer_vars = state
        (loss, non_trainable), grads = jax.value_and_grad(compute_loss, has_aux=True)(
            trainable, non_trainable, x, y)
        trainable, optimizer_vars = optimizer.stateless_apply(optimizer_vars, grads,
                                                              trainable)
        return loss, (trainable, non_trainable, optimizer_vars)

    groups = (model.trainable_variables, model.non_trainable_variables, optimizer.variables)

    def step(x, y):
        loss, state = pure_step(tuple([v.value for v in g] for g in groups), x, y)
        for variables, values in zip(groups, state):
            for variable, value in zip(variables, values):
                variable.assign(value)
        return loss
    return step


rng = np.random.RandomState(0)
drw_epoch = PAPER_PROTOCOL.rescaled(epochs).drw_epoch if not args.smoke else 1
train_step = make_train_step()
for epoch in range(epochs):
    if epoch == drw_epoch:  # DRW: class-balanced weights, then a fresh compiled step
        loss_fn.class_weights = km.priors.class_balanced_weights(counts, beta=0.9999)
        optimizer.learning_rate = 0.005       # and a ten-fold decay, as in the papers
        train_step = make_train_step()
    order = rng.permutation(len(y_train))
    batches = range(0, len(order), 128)
    losses = []
    for number, start in enumerate(batches):
        if args.smoke and number == 3:
            break
        rows = order[start:start + 128]
        losses.append(float(keras.ops.convert_to_numpy(
            train_step(x_train[rows], y_train[rows]))))
    print(f"epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.4f}"
          f"{'  (DRW)' if epoch >= drw_epoch else ''}")

report = km.evaluate_long_tailed(model, (x_test, y_test), counts)
print(km.reporting.markdown_table({f"ELM+DRW ({backend})": report}))
