"""RandomPadCropFlip: on-device pad + random crop + flip, per image, inside the compiled step."""

import keras
import numpy as np
import pytest

from keras_margins import data
from keras_margins.data import RandomPadCropFlip, numpy_cifar_transform

SIZE, PAD = 8, 2
POSITIONS = 2 * PAD + 1
CELLS = POSITIONS * POSITIONS * 2           # (dy, dx, flip)
# chi-square critical value, 49 degrees of freedom, p = 0.001
CHI2_49_P001 = 85.35


def _numpy(x):
    return keras.ops.convert_to_numpy(keras.ops.cast(x, "float32"))


def _distinct_image(seed=0):
    """An (8, 8, 1) image of the distinct values 1..64: every crop + flip differs."""
    values = np.random.default_rng(seed).permutation(SIZE * SIZE) + 1
    return values.reshape(SIZE, SIZE, 1).astype("float32")


def _candidates(image, padding=PAD):
    """All (dy, dx, flip) windows of the zero-padded image: (cells, H*W*C), cell index order."""
    height, width = image.shape[:2]
    padded = np.pad(image, [(padding, padding), (padding, padding), (0, 0)])
    out = []
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            crop = padded[dy:dy + height, dx:dx + width]
            out += [crop, crop[:, ::-1]]
    return np.stack(out).reshape(len(out), -1)


def _cells(outputs, image):
    """The (dy, dx, flip) cell of every output, found by exhaustive comparison."""
    outputs = np.asarray(outputs).reshape(len(outputs), -1)
    match = np.all(outputs[:, None, :] == _candidates(image)[None], axis=-1)   # (N, cells)
    assert np.all(match.sum(axis=1) == 1), "an output is not a crop (+ flip) of the padded input"
    return match.argmax(axis=1)


def _chi2_uniform(counts):
    expected = counts.sum() / counts.size
    return float(((counts - expected) ** 2 / expected).sum())


def _chi2_two_samples(a, b):
    table = np.stack([a, b]).astype("float64")
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    keep = expected.sum(0) > 0
    return float(((table - expected)[:, keep] ** 2 / expected[:, keep]).sum())


def test_identity_at_inference():
    x = np.random.default_rng(0).normal(size=(4, SIZE, SIZE, 3)).astype("float32")
    layer = RandomPadCropFlip(PAD, seed=0)
    np.testing.assert_array_equal(_numpy(layer(x)), x)
    np.testing.assert_array_equal(_numpy(layer(x, training=False)), x)
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), layer])
    np.testing.assert_array_equal(model.predict(x, verbose=0), x)
    assert not np.array_equal(_numpy(layer(x, training=True)), x)


def test_every_output_is_a_crop_of_the_padded_input_flipped_or_not():
    images = np.stack([_distinct_image(seed) for seed in range(16)])
    out = _numpy(RandomPadCropFlip(PAD, seed=3)(images, training=True))
    assert out.shape == images.shape
    for image, crop in zip(images, out):
        _cells(crop[None], image)


def test_per_image_randomness_and_fixed_seed_reproducible():
    image = _distinct_image()
    batch = np.repeat(image[None], 64, axis=0)
    first = _numpy(RandomPadCropFlip(PAD, seed=11)(batch, training=True))
    cells = _cells(first, image)
    assert len(set(cells.tolist())) > 15, "offsets / flips shared within the batch"
    flips = cells % 2
    assert 0 < flips.sum() < len(flips)
    again = _numpy(RandomPadCropFlip(PAD, seed=11)(batch, training=True))
    np.testing.assert_array_equal(first, again)
    layer = RandomPadCropFlip(PAD, seed=11)
    calls = [_numpy(layer(batch, training=True)) for _ in range(2)]
    assert not np.array_equal(calls[0], calls[1]), "the seed generator does not advance"


def test_no_flip_keeps_orientation():
    image = _distinct_image()
    batch = np.repeat(image[None], 64, axis=0)
    cells = _cells(_numpy(RandomPadCropFlip(PAD, flip=False, seed=0)(batch, training=True)),
                   image)
    assert np.all(cells % 2 == 0)


def test_distribution_matches_the_host_transform():
    """4000 draws: (dy, dx, flip) uniform over the 50 cells, like numpy_cifar_transform."""
    n, per_call = 4000, 200
    image = _distinct_image()
    layer = RandomPadCropFlip(PAD, seed=1234)
    batch = np.repeat(image[None], per_call, axis=0)
    device = np.concatenate([_cells(_numpy(layer(batch, training=True)), image)
                             for _ in range(n // per_call)])

    host_transform = numpy_cifar_transform(True, mean=None, std=None, size=SIZE, padding=PAD)
    rng = np.random.default_rng(1234)
    host_batch = np.repeat(image.astype("uint8")[None], per_call, axis=0)
    host = np.concatenate([_cells(np.rint(host_transform(host_batch, rng) * 255.0), image)
                           for _ in range(n // per_call)])

    device_counts = np.bincount(device, minlength=CELLS)
    host_counts = np.bincount(host, minlength=CELLS)
    assert _chi2_uniform(host_counts) < CHI2_49_P001        # the reference itself
    assert _chi2_uniform(device_counts) < CHI2_49_P001, device_counts
    assert _chi2_two_samples(device_counts, host_counts) < CHI2_49_P001
    flip_rate = (device % 2).mean()
    assert abs(flip_rate - 0.5) < 4 * np.sqrt(0.25 / n)

    # The thresholds reject what a broken layer would produce: a fixed offset,
    # or one offset + flip per call shared by its 200 images.
    fixed = np.bincount(np.full(n, 2 * (PAD * POSITIONS + PAD)), minlength=CELLS)
    assert _chi2_uniform(fixed) > CHI2_49_P001
    shared = np.bincount(np.repeat(device[::per_call], per_call), minlength=CELLS)
    assert _chi2_uniform(shared) > CHI2_49_P001


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_input_keeps_dtype(dtype):
    image = _distinct_image()
    x = keras.ops.cast(np.repeat(image[None], 8, axis=0), dtype)
    out = RandomPadCropFlip(PAD, seed=0)(x, training=True)
    assert keras.backend.standardize_dtype(out.dtype) == dtype
    _cells(_numpy(out), image)
    assert keras.backend.standardize_dtype(RandomPadCropFlip(PAD)(x).dtype) == dtype


def test_per_channel_fill_value():
    x = np.ones((1, 2, 2, 2), "float32")
    out = _numpy(RandomPadCropFlip(1, fill_value=[-1.0, -2.0], seed=0)(
        np.repeat(x, 32, axis=0), training=True))
    assert set(np.unique(out[..., 0])) <= {1.0, -1.0}
    assert set(np.unique(out[..., 1])) <= {1.0, -2.0}
    assert (out[..., 0] == -1.0).any() and (out[..., 1] == -2.0).any()


def test_serialisation_round_trip():
    layer = RandomPadCropFlip(padding=3, flip=False, fill_value=[0.5, 0.25, 0.0], seed=5)
    config = layer.get_config()
    assert config["padding"] == 3 and config["flip"] is False and config["seed"] == 5
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(clone, RandomPadCropFlip)
    assert clone.get_config() == config
    assert data.RandomPadCropFlip is RandomPadCropFlip and "RandomPadCropFlip" in data.__all__


def test_runs_inside_the_compiled_fit_step():
    backend = keras.backend.backend()
    keras.utils.set_random_seed(0)
    augment = RandomPadCropFlip(PAD, seed=0)
    model = keras.Sequential([keras.Input((SIZE, SIZE, 1)), augment,
                              keras.layers.Flatten(), keras.layers.Dense(3)])
    model.compile(optimizer="sgd",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=backend != "torch")
    state = _numpy(augment.seed_generator.state).copy()
    x = np.random.default_rng(0).normal(size=(8, SIZE, SIZE, 1)).astype("float32")
    y = np.arange(8) % 3
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)   # 2 steps
    assert np.isfinite(history.history["loss"][0])
    assert not np.array_equal(_numpy(augment.seed_generator.state), state)
    np.testing.assert_array_equal(_numpy(augment(x)), x)
