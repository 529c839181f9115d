"""End-to-end programs that reproduce the seed papers' experiments.

* ``applications.quickstart``: ``python -m applications.quickstart``, CE versus
  LDAM-DRW on a long-tailed dataset (offline by default).
* ``applications.train``: ``python -m applications.train --help`` (named recipes,
  ``applications.recipes``); ``applications.reproduce`` runs many side by side.
* ``applications.protocol.PAPER_PROTOCOL``: the papers' 200-epoch schedule and
  stage-switch epochs, and ``rescaled(epochs)`` for shorter runs.
* ``applications.hyperparameters.HYPERPARAMETERS``: the papers' loss
  hyper-parameters, read by the recipes and the benchmarks.
* ``applications.cli``: the backend rule and ``--data-dir`` meaning that every
  program shares.
* ``applications.models``: ResNet-32 (CIFAR), a small CNN (Fashion-MNIST-LT),
  a cosine head on a ``keras.applications`` backbone.
* ``applications.aggregate``: run folders -> the papers' Markdown table.
* ``applications.optimizers.CoupledSGD``: ``torch.optim.SGD`` (coupled L2
  weight decay) in Keras.

Importing this package does not import Keras, so ``--backend`` can still be
chosen on the command line.
"""
