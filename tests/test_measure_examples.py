"""tools/measure_examples.py: parsing the printed tables and the seed/backend summary."""

import importlib.util
import pathlib

import pytest

_PATH = pathlib.Path(__file__).resolve().parents[1] / "tools" / "measure_examples.py"
_SPEC = importlib.util.spec_from_file_location("measure_examples", _PATH)
measure = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(measure)

OUTPUT = """training images per class: [6000, 60]
| Method   | Many  | Medium | Few | All  | Balanced |
|:---------|------:|-------:|----:|-----:|---------:|
| CE       | 100.0 | 98.7   | –   | 80.0 | 81.2     |
| LDAM-DRW | 100.0 | 100.0  | –   | 85.5 | 85.6     |
seconds: CE 18, LDAM-DRW 20
"""


def test_parse_rows_reads_every_method_and_column():
    rows = measure.parse_rows(OUTPUT)
    assert set(rows) == {"CE", "LDAM-DRW"}
    assert rows["LDAM-DRW"]["all"] == 85.5 and rows["CE"]["medium"] == 98.7
    assert rows["CE"]["few"] is None
    with pytest.raises(ValueError, match="no results table"):
        measure.parse_rows("nothing printed")


def test_table_gives_mean_std_and_paired_gain_per_backend():
    records = [{"script": "quickstart", "backend": "jax", "seed": seed,
                "results": {"CE": {"all": ce}, "LDAM-DRW": {"all": ldam}}}
               for seed, ce, ldam in ((0, 60.0, 70.0), (1, 62.0, 66.0), (2, 64.0, 70.0))]
    lines = measure.table(records).splitlines()
    ce = next(line for line in lines if "| CE |" in line)
    ldam = next(line for line in lines if "| LDAM-DRW |" in line)
    assert "62.0 ± 2.0" in ce
    assert "68.7 ± 2.3" in ldam          # mean of 70, 66, 70
    assert "+6.7 ± 3.1 (min +4.0)" in ldam   # paired gains 10, 4, 6


def test_commands_measure_the_quickstart_module():
    assert measure.COMMANDS == {"quickstart": [measure.sys.executable, "-m",
                                               "applications.quickstart"]}
