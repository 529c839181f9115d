"""The seed papers' CIFAR training protocol, and the same protocol at other lengths.

``PAPER_PROTOCOL`` holds the epochs of the 200-epoch protocol of LDAM-DRW, ELM,
MM and KPS: linear warm-up over 5 epochs, learning-rate decays at 0-based
epochs 160 and 180, deferred re-weighting (DRW) from 160, gradient adjustment
(GA) from 120, influence balancing (IB) from 100. The decay factors belong to
the recipes (LDAM-DRW: x0.01 then x0.0001 of the base rate; KPS: x0.1 then
x0.01), the default here is LDAM-DRW's.

``PAPER_PROTOCOL.rescaled(epochs)`` moves every epoch proportionally to a run
of ``epochs`` epochs with ``keras_margins.schedules.scaled_epochs``
(``round(epoch * epochs / 200)``): 30 epochs give warm-up 1, decays at 24 and
27, DRW at 24, GA at 18, IB at 15.

Importing this module does not import Keras.
"""

import dataclasses

__all__ = ["Protocol", "PAPER_PROTOCOL", "STAGES"]

#: Second stages a recipe can switch to, by name.
STAGES = ("drw", "ga", "ib")


@dataclasses.dataclass(frozen=True)
class Protocol:
    """Epoch numbers of a training protocol (0-based epoch indices).

    Attributes:
        epochs: length of the protocol.
        warmup_epochs: epochs of linear learning-rate warm-up.
        decay_epochs: epochs at which the decay factors start.
        decay_factors: multipliers of the base rate from each decay epoch on.
        drw_epoch, ga_epoch, ib_epoch: first epoch of deferred re-weighting,
            gradient adjustment and influence balancing.
    """
    epochs: int = 200
    warmup_epochs: int = 5
    decay_epochs: tuple = (160, 180)
    decay_factors: tuple = (0.01, 0.0001)
    drw_epoch: int = 160
    ga_epoch: int = 120
    ib_epoch: int = 100

    def rescaled(self, epochs):
        """This protocol with every epoch moved proportionally to ``epochs`` epochs."""
        from keras_margins.schedules import scaled_epochs

        def scale(epoch):
            return scaled_epochs(epochs, epoch, total_epochs=self.epochs)

        return dataclasses.replace(
            self, epochs=int(epochs), warmup_epochs=scale(self.warmup_epochs),
            decay_epochs=tuple(scale(e) for e in self.decay_epochs),
            drw_epoch=scale(self.drw_epoch), ga_epoch=scale(self.ga_epoch),
            ib_epoch=scale(self.ib_epoch))

    def stage_epoch(self, stage):
        """First epoch of ``stage`` (``"drw"``, ``"ga"`` or ``"ib"``); None for None."""
        if stage is None:
            return None
        if stage not in STAGES:
            raise ValueError(f"`stage` must be one of {STAGES} or None, received {stage!r}.")
        return getattr(self, f"{stage}_epoch")

    def schedule(self, decay_factors=None):
        """Keyword arguments of ``keras_margins.schedules.WarmupStepDecay``.

        Decays that fall on or after the last epoch are dropped; decays that
        rescaling moved onto the same epoch collapse into one (the later
        factor wins).
        """
        factors = self.decay_factors if decay_factors is None else decay_factors
        decay_epochs, decay_factors = [], []
        for start, factor in zip(self.decay_epochs, factors):
            if start < self.epochs and (not decay_epochs or start > decay_epochs[-1]):
                decay_epochs.append(start)
                decay_factors.append(factor)
            elif decay_epochs and start == decay_epochs[-1]:
                decay_factors[-1] = factor      # collided: the later decay wins
        return {"warmup_epochs": self.warmup_epochs, "decay_epochs": decay_epochs,
                "decay_factors": decay_factors}


#: The papers' 200-epoch CIFAR protocol.
PAPER_PROTOCOL = Protocol()
