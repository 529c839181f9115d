"""Long-tail profiles and deterministic subsampling (keras_margins.data)."""

import numpy as np
import pytest

from keras_margins import data


def _reference_args(key):
    dataset, profile, ratio = key.split("_")
    num_classes = 10 if dataset == "cifar10" else 100
    return num_classes, 50000 // num_classes, int(ratio[len("ratio"):]), profile


def test_counts_match_every_reference_list(reference):
    lists = reference["img_num_per_cls"]
    assert len(lists) >= 12
    for key, expected in lists.items():
        num_classes, max_count, ratio, profile = _reference_args(key)
        assert data.long_tail_counts(num_classes, max_count, ratio, profile) == expected, key


def test_headline_totals():
    assert data.long_tail_counts(10, 5000, 100) == [5000, 2997, 1796, 1077, 645, 387, 232,
                                                    139, 83, 50]
    assert sum(data.long_tail_counts(10, 5000, 100)) == 12406
    assert sum(data.long_tail_counts(10, 5000, 10)) == 20431
    cifar100 = data.long_tail_counts(100, 500, 100)
    assert sum(cifar100) == 10847 and cifar100[0] == 500 and cifar100[-1] == 5
    assert data.long_tail_counts(10, 5000, 100, "step") == [5000] * 5 + [50] * 5
    assert data.long_tail_counts(5, 100, 10, "step") == [100, 100, 10, 10, 10]
    assert data.long_tail_counts(4, 7, 1) == [7, 7, 7, 7]


def test_pareto_profile_is_long_tailed():
    counts = data.long_tail_counts(1000, 1280, 256, "pareto")
    assert counts[0] == 1280 and counts[-1] == 5
    assert all(a >= b for a, b in zip(counts, counts[1:]))
    # Heavier head than the exponential profile: the median class is far smaller.
    assert counts[500] < data.long_tail_counts(1000, 1280, 256, "exp")[500]
    assert data.imbalance_ratio_of(counts) == 256


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_classes=10, max_count=5000, imbalance_ratio=0.5), "imbalance_ratio"),
    (dict(num_classes=10, max_count=5000, imbalance_ratio=float("nan")), "imbalance_ratio"),
    (dict(num_classes=1, max_count=5000, imbalance_ratio=10), "num_classes"),
    (dict(num_classes=10, max_count=0, imbalance_ratio=10), "max_count"),
    (dict(num_classes=10, max_count=50, imbalance_ratio=100), "no image"),
    (dict(num_classes=10, max_count=500, imbalance_ratio=10, profile="linear"), "profile"),
])
def test_profile_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.long_tail_counts(**kwargs)


def _authors_rule(targets, counts, seed):
    """LDAM-DRW's gen_imbalanced_data, verbatim (global numpy RNG)."""
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        targets_np = np.array(targets, dtype=np.int64)
        selected = []
        for the_class, the_img_num in zip(np.unique(targets_np), counts):
            idx = np.where(targets_np == the_class)[0]
            np.random.shuffle(idx)
            selected.append(idx[:the_img_num])
        return np.concatenate(selected)
    finally:
        np.random.set_state(state)


def test_ldam_drw_selection_matches_the_authors_rule():
    rng = np.random.RandomState(123)
    targets = np.repeat(np.arange(10), 300)
    rng.shuffle(targets)  # interleaved, as in the CIFAR python batches
    counts = data.long_tail_counts(10, 300, 100)
    before = np.random.get_state()[1].copy()
    ours = data.subsample_indices(targets, counts, seed=0)
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # global RNG untouched
    np.testing.assert_array_equal(ours, _authors_rule(targets, counts, 0))
    assert np.bincount(targets[ours]).tolist() == counts
    # On class-sorted data the same within-class positions are chosen.
    sorted_targets = np.sort(targets)
    ours_sorted = data.subsample_indices(sorted_targets, counts, seed=0)
    starts = np.searchsorted(sorted_targets, np.arange(10))
    rank_sorted = ours_sorted - starts[sorted_targets[ours_sorted]]
    rank_of = {i: r for c in range(10) for r, i in enumerate(np.flatnonzero(targets == c))}
    np.testing.assert_array_equal(rank_sorted, [rank_of[i] for i in ours])
    assert not np.array_equal(ours, data.subsample_indices(targets, counts, seed=1))


def test_subsample_arrays_first_and_errors():
    y = np.repeat(np.arange(3), 5)
    x = np.arange(15) * 10
    xs, ys = data.subsample_arrays(x, y, [3, 2, 1], method="first")
    np.testing.assert_array_equal(xs, [0, 10, 20, 50, 60, 100])
    np.testing.assert_array_equal(ys, [0, 0, 0, 1, 1, 2])
    with pytest.raises(ValueError, match="class 1 asks for 6"):
        data.subsample_indices(y, [1, 6, 1])
    with pytest.raises(ValueError, match="method"):
        data.subsample_indices(y, [1, 1, 1], method="random")
    with pytest.raises(ValueError, match="same length"):
        data.subsample_arrays(x[:3], y, [1, 1, 1])


def test_subsample_tf_dataset_keeps_counts_order_and_cardinality():
    import tensorflow as tf

    rng = np.random.RandomState(0)
    y = rng.permutation(np.repeat(np.arange(4), 20))
    x = np.arange(80)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    sub = data.subsample_dataset(ds, [20, 10, 5, 2], seed=3)
    assert int(sub.cardinality()) == 37
    xs, ys = map(np.array, zip(*sub.as_numpy_iterator()))
    assert np.bincount(ys).tolist() == [20, 10, 5, 2]
    expected = np.sort(data.subsample_indices(y, [20, 10, 5, 2], seed=3))
    np.testing.assert_array_equal(xs, expected)  # source order, same picks
    dict_ds = tf.data.Dataset.from_tensor_slices({"image": x, "label": y})
    sub_dict = list(data.subsample_dataset(dict_ds, [1, 1, 1, 1], seed=3).as_numpy_iterator())
    assert sorted(int(e["label"]) for e in sub_dict) == [0, 1, 2, 3]
