"""image_folder_lt on the real CIFAR-10 JPEG copy; Fashion-MNIST IDX; folder errors."""

import shutil
import subprocess
import tarfile

import keras
import numpy as np
import pytest

from keras_margins import data
from backend_utils import small_model

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="session")
def cifar10_jpeg(datasets_dir, tmp_path_factory):
    """The CIFAR-10 JPEG archive extracted once per session (train/, test/)."""
    root = tmp_path_factory.mktemp("cifar10_jpeg")
    archive = datasets_dir / "cifar10" / "cifar10-jpeg.tar.gz"
    if shutil.which("tar"):  # GNU tar: ~2 s, Python's tarfile is several times slower
        subprocess.run(["tar", "xzf", str(archive), "-C", str(root)], check=True)
    else:
        with tarfile.open(archive) as handle:
            handle.extractall(root, filter="data")
    return root


def test_image_folder_lt_reference_counts_and_balanced_test_set(cifar10_jpeg, reference):
    train_ds, test_ds, info = data.image_folder_lt(cifar10_jpeg, imbalance_ratio=100)
    assert info.class_counts == reference["img_num_per_cls"]["cifar10_exp_ratio100"]
    assert info.train_size == 12406 and info["class_counts"] == info.class_counts
    assert info.class_names == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                "horse", "ship", "truck"]
    assert info.test_counts == [1000] * 10 and info.test_size == 10000
    # Selected files: the reference counts per class folder.
    folders = [path.split("/")[-2] for path in info.train_files]
    assert [folders.count(name) for name in info.class_names] == info.class_counts
    assert int(train_ds.cardinality()) == 97  # ceil(12406 / 128)
    assert int(test_ds.cardinality()) == 79   # ceil(10000 / 128)
    step = data.image_folder_lt(cifar10_jpeg, 100, "step")[2]
    assert step.class_counts == reference["img_num_per_cls"]["cifar10_step_ratio100"]
    # The test pipeline holds the 10,000 images, balanced.
    labels = np.concatenate([y for _, y in test_ds.map(lambda x, y: (0, y)).as_numpy_iterator()])
    assert np.bincount(labels).tolist() == [1000] * 10


def test_image_folder_lt_selection_is_seeded_and_is_the_ldam_drw_rule(cifar10_jpeg):
    first = data.image_folder_lt(cifar10_jpeg, 100, seed=0)[2].train_files
    again = data.image_folder_lt(cifar10_jpeg, 100, seed=0)[2].train_files
    other = data.image_folder_lt(cifar10_jpeg, 100, seed=1)[2].train_files
    assert first == again and first != other
    # File numbers follow the original order within a class: the LDAM-DRW rule on
    # class-sorted labels with 5,000 per class.
    labels = np.repeat(np.arange(10), 5000)
    picked = data.subsample_indices(labels, data.long_tail_counts(10, 5000, 100), seed=0)
    expected = [f"{picked_index % 5000:04d}.jpg" for picked_index in picked]
    assert [path.split("/")[-1] for path in first] == expected


def test_shuffle_seed_keeps_the_subset_and_test_cap_keeps_the_first_per_class(datasets_dir):
    """From the archive itself (extracted once into ~/.keras/datasets)."""
    archive = datasets_dir / "cifar10" / "cifar10-jpeg.tar.gz"
    kwargs = dict(imbalance_ratio=100, batch_size=64, cache=False, max_test_per_class=3)
    train_a, test_a, a = data.image_folder_lt(archive, shuffle_seed=1, **kwargs)
    train_b, _, b = data.image_folder_lt(archive, shuffle_seed=2, **kwargs)
    default = data.image_folder_lt(archive, 100, cache=False)[2]
    assert a.train_files == b.train_files == default.train_files  # same subset
    labels_a, labels_b = (next(iter(ds))[1].numpy() for ds in (train_a, train_b))
    assert not np.array_equal(labels_a, labels_b)                 # another order
    assert a.test_counts == [3] * 10 and int(test_a.cardinality()) == 1
    images, labels = next(iter(test_a))
    assert labels.numpy().tolist() == np.repeat(np.arange(10), 3).tolist()
    assert tuple(images.shape) == (30, 32, 32, 3)


def test_short_fit_consumes_the_folder_pipeline(cifar10_jpeg):
    train_ds, test_ds, info = data.image_folder_lt(cifar10_jpeg, 100, batch_size=32, cache=False)
    x, y = next(iter(train_ds))
    assert tuple(x.shape) == (32, 32, 32, 3) and str(x.dtype) == "<dtype: 'float32'>"
    assert abs(float(np.mean(x))) < 1.0  # normalised
    model = small_model(num_classes=10, cosine=False, input_shape=(32, 32, 3))
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(train_ds.take(3), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    result = model.evaluate(test_ds.take(1), verbose=0)
    assert np.isfinite(result)


def test_fashion_mnist_lt_from_idx_files(datasets_dir):
    train_ds, test_ds, info = data.fashion_mnist_lt(
        100, idx_dir=datasets_dir / "fashion-mnist", batch_size=256)
    assert info.class_counts == data.long_tail_counts(10, 6000, 100)
    assert info.test_counts == [1000] * 10 and info.class_names[9] == "Ankle boot"
    x, y = next(iter(train_ds))
    assert tuple(x.shape) == (256, 28, 28, 1)
    assert 0.0 <= float(np.min(x)) and float(np.max(x)) <= 1.0
    assert int(train_ds.cardinality()) == -(-info.train_size // 256)


def _write_jpeg(path, size=(8, 8), seed=0):
    import tensorflow as tf
    pixels = np.random.RandomState(seed).randint(0, 255, (*size, 3)).astype("uint8")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_jpeg(pixels).numpy())


def test_folder_with_sampler_and_mixup(tmp_path):
    for c, n in enumerate([12, 6, 3]):
        for i in range(n):
            _write_jpeg(tmp_path / f"class_{c}" / f"{i:02d}.jpg", seed=10 * c + i)
    train_ds, test_ds, info = data.image_folder_lt(
        tmp_path, imbalance_ratio=3, image_size=(8, 8), augment=None, batch_size=300,
        sampler=data.class_balanced(seed=0, num_samples=3000))
    assert test_ds is None and info.class_counts == [3, 1, 1]
    _, labels = next(iter(train_ds.unbatch().batch(3000)))
    freq = np.bincount(np.asarray(labels), minlength=3) / 3000
    np.testing.assert_allclose(freq, [1 / 3] * 3, atol=0.05)
    mixed = data.image_folder_lt(tmp_path, 1, max_count=3, image_size=(8, 8), augment=None,
                                 batch_size=4, mix="mixup")[0]
    images, soft = next(iter(mixed))
    assert tuple(soft.shape) == (4, 3)
    np.testing.assert_allclose(np.sum(np.asarray(soft), axis=1), 1.0, rtol=1e-5)


def test_folder_errors_name_the_path(tmp_path):
    with pytest.raises(ValueError, match="image folder not found"):
        data.image_folder_lt(tmp_path / "missing")
    with pytest.raises(ValueError, match="no class sub-folders"):
        data.image_folder_lt(tmp_path)
    (tmp_path / "cat").mkdir()
    _write_jpeg(tmp_path / "dog" / "0.jpg")
    with pytest.raises(ValueError, match="cat holds no images"):
        data.image_folder_lt(tmp_path)
    _write_jpeg(tmp_path / "cat" / "0.jpg")
    (tmp_path / "cat" / "1.jpg").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match=r"unreadable image file .*cat/1\.jpg"):
        data.image_folder_lt(tmp_path, imbalance_ratio=1, max_count=2,
                             class_counts=[2, 1])
    with pytest.raises(ValueError, match="imbalance_ratio"):
        data.image_folder_lt(tmp_path, imbalance_ratio=0.5)


def test_archive_is_extracted_once_and_used_in_place_of_a_folder(tmp_path, datasets_dir):
    import time
    cache = tmp_path / "cache"
    start = time.time()
    root = data.resolve_image_root(datasets_dir / "cifar10", cache_dir=cache)
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["test", "train"]
    assert len(list((root / "train" / "truck").iterdir())) == 5000
    first = time.time() - start
    start = time.time()
    assert data.resolve_image_root(datasets_dir / "cifar10" / "cifar10-jpeg.tar.gz",
                                   cache_dir=cache) == root
    assert time.time() - start < max(first, 1.0)  # cached: no second extraction
    with pytest.raises(ValueError, match="archive"):
        data.extract_archive(tmp_path / "missing.tar.gz")
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"not an archive")
    with pytest.raises(ValueError, match="could not extract"):
        data.extract_archive(broken, cache_dir=cache)
