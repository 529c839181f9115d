"""End-to-end programs that reproduce the seed papers' experiments.

* ``applications.models``: ResNet-32 (CIFAR), a small CNN (Fashion-MNIST-LT),
  a cosine head on a ``keras.applications`` backbone.
* ``applications.train``: ``python -m applications.train --help`` (named recipes).
* ``applications.aggregate``: run folders -> the papers' Markdown table.
* ``applications.optimizers.CoupledSGD``: ``torch.optim.SGD`` (coupled L2
  weight decay) in Keras.

Importing this package does not import Keras, so ``--backend`` can still be
chosen on the command line.
"""
