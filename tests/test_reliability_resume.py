"""Resuming after the DRW / GA switch follows the uninterrupted loss trajectory.

A run is interrupted (an exception at the start of epoch 3, after the switch at
epoch 1), then resumed (a) in a fresh model with ``keras.callbacks.BackupAndRestore``
and (b) from the ``.keras`` file saved after epoch 2 with ``initial_epoch=3``.
Both must reproduce the uninterrupted run's losses of epochs 3-4 (same seed,
full-batch SGD with momentum, no shuffling: the computation is identical, so
rtol 1e-5), and differ from a run that never switched.
"""

import keras
import numpy as np
import pytest

import keras_margins as km

COUNTS = [60, 25, 10, 5]
EPOCHS, SWITCH, INTERRUPT = 5, 1, 3


def _data():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), COUNTS)
    x = (rng.normal(size=(len(y), 8)) + 0.5 * y[:, None]).astype("float32")
    return x, y


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    return keras.Model(inputs, km.layers.CosineDense(4)(hidden))


STAGES = {
    "drw": (lambda: km.losses.LDAMLoss(COUNTS),
            lambda start: km.callbacks.DeferredReweighting(COUNTS, start_epoch=start)),
    "ga": (lambda: km.losses.KPSLoss(COUNTS),
           lambda start: km.callbacks.GradientAdjustment(start_epoch=start)),
}


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == INTERRUPT:
            raise RuntimeError("interrupted")


class _SaveAt(keras.callbacks.Callback):
    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        if epoch == INTERRUPT - 1:
            self.model.save(self.path)


def _fit(model, loss, callbacks, initial_epoch=0, compile_model=True):
    x, y = _data()
    if compile_model:
        model.compile(optimizer=keras.optimizers.SGD(0.2, momentum=0.9), loss=loss)
    history = model.fit(x, y, batch_size=len(x), epochs=EPOCHS, initial_epoch=initial_epoch,
                        shuffle=False, verbose=0, callbacks=callbacks)
    return np.asarray(history.history["loss"])


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_resume_after_the_switch(stage, tmp_path):
    make_loss, make_switch = STAGES[stage]
    full = _fit(_model(), make_loss(), [make_switch(SWITCH)])
    never = _fit(_model(), make_loss(), [make_switch(EPOCHS + 10)])
    assert np.abs(full[INTERRUPT:] - never[INTERRUPT:]).max() > 1e-3  # the switch matters

    backup = str(tmp_path / "backup")
    saved = tmp_path / "epoch2.keras"
    with pytest.raises(RuntimeError, match="interrupted"):
        _fit(_model(), make_loss(), [make_switch(SWITCH), _SaveAt(saved),
                                     keras.callbacks.BackupAndRestore(backup), _Interrupt()])
    resumed = _fit(_model(), make_loss(),
                   [make_switch(SWITCH), keras.callbacks.BackupAndRestore(backup)])
    np.testing.assert_allclose(resumed, full[INTERRUPT:], rtol=1e-5)

    reloaded = keras.models.load_model(saved)
    from_file = _fit(reloaded, None, [make_switch(SWITCH)], initial_epoch=INTERRUPT,
                     compile_model=False)
    np.testing.assert_allclose(from_file, full[INTERRUPT:], rtol=1e-5)
