"""LDAM-DRW on CIFAR-10-LT with ResNet-32 (Cao et al., NeurIPS 2019).

Title: Reproducing LDAM-DRW on CIFAR-10-LT
Description: ResNet-32 with a cosine classifier, the LDAM loss, deferred
re-weighting at 80% of training, SGD with PyTorch-style (coupled) weight decay
and the warm-up/step-decay schedule of the paper, on the long-tailed CIFAR-10
(ratio 100, 12,406 training images) read from the JPEG copy.

    KERAS_BACKEND=jax python examples/ldam_drw_cifar10_lt.py --epochs 200   # the paper's protocol
    python examples/ldam_drw_cifar10_lt.py --epochs 30                      # a shorter schedule
    python examples/ldam_drw_cifar10_lt.py --smoke                          # a few steps (CI)

With fewer epochs every epoch of the protocol (warm-up 5, DRW and the first
decay at 160, the second decay at 180 of 200) is rescaled proportionally.
The paper reports 77.0 % top-1 at 200 epochs (CE 70.4 %). Measured with the
same model, loss and schedule at 30 epochs (``python -m applications.train
--dataset cifar10-lt --recipe ce ldam-drw --epochs 30``, PyTorch, seed 0, last
epoch): LDAM-DRW 61.4 % against CE 49.6 % (+11.8 points; README "Results").
Run from the repository root (it uses ``applications`` for the model, data and
protocol).
"""

import argparse
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from applications import cli  # noqa: E402  (does not import Keras)

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
cli.add_data_dir_argument(parser, "; reads its cifar10/ folder")
parser.add_argument("--epochs", type=int, default=200, help="epochs (default 200)")
parser.add_argument("--smoke", action="store_true",
                    default=os.environ.get("KERAS_MARGINS_SMOKE", "") == "1",
                    help="1 epoch of 2 steps on a small subset with a 1-block-per-stage "
                         "ResNet (ResNet-8), to keep CI fast (also KERAS_MARGINS_SMOKE=1)")
cli.add_backend_argument(parser)
args = parser.parse_args()
cli.use_backend(args.backend)
epochs = 1 if args.smoke else args.epochs

import keras  # noqa: E402

import keras_margins as km  # noqa: E402
from applications.data import load_dataset  # noqa: E402
from applications.models import resnet32  # noqa: E402
from applications.optimizers import CoupledSGD  # noqa: E402
from applications.protocol import PAPER_PROTOCOL  # noqa: E402

# Data: tf.data pipelines, or keras.utils.PyDatasets where TensorFlow is not
# installed (keras_margins.data.cifar10_lt), over the LDAM-DRW subset
# (seed 0) of the CIFAR-10 JPEG copy, balanced test set; training images are padded
# by 4, randomly cropped to 32x32 and flipped (keras_margins.data.cifar_transform).
data = load_dataset("cifar10-lt", args.data_dir, imbalance_ratio=100,
                    max_per_class=32 if args.smoke else None,
                    train_fraction=0.02 if args.smoke else None)
counts = data.class_counts
print("training images per class:", counts)
train = data.train.take(2) if args.smoke else data.train

# ResNet-32 (464,154 parameters with a Dense head) ending in a cosine classifier.
keras.utils.set_random_seed(0)
model = resnet32(num_classes=10, head="cosine", blocks_per_stage=1 if args.smoke else 5)

# lr 0.1, linear warm-up, x0.01 at 80% and x0.0001 at 90% of training; SGD with
# momentum 0.9 and weight decay 2e-4 added to the gradient as torch.optim.SGD does.
protocol = PAPER_PROTOCOL.rescaled(epochs)   # the 200-epoch protocol at this length
first_decay, second_decay = protocol.decay_epochs    # DRW starts with the first
schedule = km.schedules.WarmupStepDecay(
    0.1, steps_per_epoch=len(train), warmup_epochs=protocol.warmup_epochs,
    decay_epochs=(first_decay, max(second_decay, first_decay + 1)),
    decay_factors=protocol.decay_factors)
model.compile(optimizer=CoupledSGD(schedule, momentum=0.9, coupled_weight_decay=2e-4),
              loss=km.losses.LDAMLoss(counts, max_margin=0.5, scale=30.0),
              metrics=["accuracy"])
model.fit(train, epochs=epochs, verbose=2, shuffle=False,
          callbacks=[km.callbacks.DeferredReweighting(counts, start_epoch=protocol.drw_epoch)])

# Last-epoch results, as the paper reports them.
report = km.evaluate_long_tailed(model, data.test, counts)
print(km.reporting.markdown_table({"LDAM-DRW": report}))
