"""README command 1: the quickstart runs offline and reports every shot group."""

import numpy as np
import pytest

from applications import quickstart


def test_digits_split_is_long_tailed_balanced_and_seeded():
    (x, y), (x_test, y_test), counts = quickstart.digits_long_tailed(100, seed=0)
    assert counts == [150, 89, 53, 32, 19, 11, 6, 4, 2, 1]
    assert np.bincount(y, minlength=10).tolist() == counts
    assert np.bincount(y_test, minlength=10).tolist() == [25] * 10
    again = quickstart.digits_long_tailed(100, seed=0)
    np.testing.assert_array_equal(again[0][1], y)


def test_quickstart_compares_ce_and_ldam_drw(capsys):
    results = quickstart.main(["--epochs", "2"])
    assert set(results) == {"CE", "LDAM-DRW"}
    for report in results.values():
        for key in ("top1", "many", "medium", "few", "balanced_accuracy"):
            assert 0.0 <= report[key] <= 1.0, (key, report[key])
    printed = capsys.readouterr().out
    assert "| CE " in printed and "| LDAM-DRW " in printed and "Few" in printed


def test_cifar10_data_dir_is_the_folder_that_contains_the_datasets(tmp_path):
    """--data-dir means the datasets folder (cifar10/ inside), as for every program."""
    with pytest.raises(FileNotFoundError, match="contains cifar10/"):
        quickstart.load_cifar10_lt(tmp_path, 100, 0)
