"""Split-file readers on the real LT lists (images faked in a temporary folder)."""

import gzip
import json

import numpy as np
import pytest

from keras_margins import data

pytestmark = pytest.mark.real_data


def _places_train(datasets_dir):
    return datasets_dir / "lt-splits" / "Places_LT_train.txt.gz"


def _write_jpeg(path, size, seed):
    import tensorflow as tf
    pixels = np.random.RandomState(seed).randint(0, 255, (*size, 3)).astype("uint8")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_jpeg(pixels).numpy())


def test_places_lt_train_list_parses_with_its_published_statistics(datasets_dir):
    paths, labels = data.read_split_file(_places_train(datasets_dir), num_classes=365)
    assert len(paths) == len(labels) == 62500
    counts = np.bincount(labels, minlength=365)
    assert counts.size == 365 and counts.max() == 4980 and counts.min() == 5
    assert paths[0].startswith("train/") and paths[0].endswith(".jpg")
    _, small = data.read_split_file(datasets_dir / "lt-splits" / "ImageNet20_LT_train.txt.gz")
    assert len(small) == 3498 and np.bincount(small).max() == 1250 and np.bincount(small).min() == 5


def test_places_lt_with_faked_images_builds_pipelines(datasets_dir, tmp_path):
    with gzip.open(_places_train(datasets_dir), "rt") as handle:
        lines = handle.read().splitlines()
    # A real subset: the first 6 lines of 4 different classes.
    by_label = {}
    for line in lines:
        by_label.setdefault(int(line.split()[-1]), []).append(line)
    subset = [line for label in sorted(by_label)[:4] for line in by_label[label][:6]]
    subset_file = tmp_path / "subset.txt"
    subset_file.write_text("\n".join(subset) + "\n")
    for k, line in enumerate(subset):
        _write_jpeg(tmp_path / "images" / line.split()[0], (20 + k, 30 + 2 * k), k)
    train_ds, test_ds, info = data.split_file_lt(subset_file, subset_file, tmp_path / "images",
                                                 num_classes=365, image_size=16, batch_size=8)
    assert info.num_classes == 365 and info.class_counts[:4] == [6, 6, 6, 6]
    assert info.test_counts[:4] == [6, 6, 6, 6] and sum(info.class_counts) == 24
    assert int(train_ds.cardinality()) == 3 and int(test_ds.cardinality()) == 3
    for ds in (train_ds, test_ds):
        x, y = next(iter(ds))
        assert tuple(x.shape) == (8, 16, 16, 3)
        assert np.all(np.isfinite(np.asarray(x))) and set(np.asarray(y)) <= {0, 1, 2, 3}


def test_missing_image_names_the_list_and_line(datasets_dir, tmp_path):
    listing = _places_train(datasets_dir)
    with gzip.open(listing, "rt") as handle:
        first = handle.readline().split()[0]
    with pytest.raises(ValueError, match=rf"Places_LT_train\.txt\.gz, line 1: image file not "
                                         rf"found: .*{first}"):
        data.read_split_file(listing, tmp_path)
    _write_jpeg(tmp_path / first, (4, 4), 0)
    with pytest.raises(ValueError, match=r"Places_LT_train\.txt\.gz, line 2: image file not"):
        data.split_file_dataset(listing, tmp_path)


@pytest.mark.parametrize("content, message", [
    ("a.jpg 0\nb.jpg\n", r"bad\.txt, line 2: malformed line 'b\.jpg'"),
    ("a.jpg 0\n\nb.jpg x\n", r"bad\.txt, line 3: malformed line .*not an integer"),
    ("a.jpg 0\nb.jpg -1\n", r"bad\.txt, line 2: label -1 out of range"),
    ("a.jpg 0\nb.jpg 1\nc.jpg 5\n", r"bad\.txt, line 3: label 5 out of range \[0, 5\)"),
    ("", r"bad\.txt: empty list"),
    ("\n  \n", r"bad\.txt: empty list"),
])
def test_malformed_split_files(tmp_path, content, message):
    listing = tmp_path / "bad.txt"
    listing.write_text(content)
    with pytest.raises(ValueError, match=message):
        data.read_split_file(listing, num_classes=5)


def test_missing_split_file(tmp_path):
    with pytest.raises(ValueError, match="split file not found"):
        data.read_split_file(tmp_path / "nope.txt")


def test_inaturalist_json_reader(tmp_path):
    content = {
        "images": [{"id": 10, "file_name": "train_val2018/Plantae/2/a.jpg"},
                   {"id": 11, "file_name": "train_val2018/Aves/0/b.jpg"},
                   {"id": 12, "file_name": "train_val2018/Aves/0/c.jpg"}],
        "annotations": [{"image_id": 11, "category_id": 0}, {"image_id": 10, "category_id": 2},
                        {"image_id": 12, "category_id": 0}],
        "categories": [{"id": 0, "name": "Turdus"}, {"id": 1, "name": "Quercus"},
                       {"id": 2, "name": "Rosa"}],
    }
    path = tmp_path / "train2018.json"
    path.write_text(json.dumps(content))
    paths, labels, names = data.read_inaturalist_json(path)
    assert paths.tolist() == [i["file_name"] for i in content["images"]]
    assert labels.tolist() == [2, 0, 0] and names == ["Turdus", "Quercus", "Rosa"]
    for k, image in enumerate(content["images"]):
        _write_jpeg(tmp_path / image["file_name"], (12, 12), k)
    ds, info = data.split_file_dataset(path, tmp_path, image_size=8, batch_size=3,
                                       training=False)
    assert info.class_counts == [2, 0, 1] and info.class_names[2] == "Rosa"
    assert tuple(next(iter(ds))[0].shape) == (3, 8, 8, 3)
    with pytest.raises(ValueError, match=r"train2018\.json, images\[0\]: label 2 out of range"):
        data.read_inaturalist_json(path, num_classes=2)
    content["annotations"].pop()
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=r"images\[2\]: image id 12 has no annotation"):
        data.read_inaturalist_json(path)
    path.write_text('{"images": [\n oops')
    with pytest.raises(ValueError, match=r"train2018\.json, line 2: invalid JSON"):
        data.read_inaturalist_json(path)
