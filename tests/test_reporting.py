"""Seed aggregation and Markdown tables, with footnotes for undefined groups."""

import json
import math

import numpy as np
import pytest

import keras_margins as km
from keras_margins.reporting import aggregate_seeds, markdown_table


RESULT_A = {"top1": 0.70, "many": 0.9, "medium": 0.6, "few": None, "per_class_accuracy": [1.0, 0.5],
            "num_samples": 100}
RESULT_B = {"top1": 0.80, "many": 0.8, "medium": 0.7, "few": None, "per_class_accuracy": [0.5, 0.5],
            "num_samples": 100}


def test_aggregate_seeds_known_answer():
    aggregated = aggregate_seeds([RESULT_A, RESULT_B])
    np.testing.assert_allclose(aggregated["top1"]["mean"], 0.75)
    np.testing.assert_allclose(aggregated["top1"]["std"], math.sqrt(0.005))  # ddof=1
    assert aggregated["top1"]["n"] == 2
    assert aggregated["few"] is None and aggregated["num_samples"] == 100
    np.testing.assert_allclose([c["mean"] for c in aggregated["per_class_accuracy"]], [0.75, 0.5])
    assert aggregate_seeds([RESULT_A])["top1"]["std"] == 0.0
    json.dumps(aggregated, allow_nan=False)
    with pytest.raises(ValueError, match="structure"):
        aggregate_seeds([RESULT_A, {"top1": 0.5}])
    with pytest.raises(ValueError, match="empty"):
        aggregate_seeds([])


def test_markdown_table_format():
    table = markdown_table({"CE": RESULT_A, "LDAM-DRW": aggregate_seeds([RESULT_A, RESULT_B])})
    assert table.splitlines() == [
        "| Method   | Many       | Medium     | Few | All        |",
        "|:---------|-----------:|-----------:|----:|-----------:|",
        "| CE       | 90.0       | 60.0       | –   | 70.0       |",
        "| LDAM-DRW | 85.0 ± 7.1 | 65.0 ± 7.1 | –   | 75.0 ± 7.1 |",
    ]
    with pytest.raises(ValueError, match="missing"):
        markdown_table({"CE": RESULT_A}, columns=("top5",))


def test_evaluation_no_longer_offers_the_reporting_functions():
    assert not hasattr(km.evaluation, "markdown_table")
    assert not hasattr(km.evaluation, "aggregate_seeds")
    assert km.reporting.markdown_table is markdown_table


def _report(top1, few_reason="no class has fewer than 20 training images"):
    """The keys of an evaluate_long_tailed report that tables read."""
    def group(rule, reason=None):
        return {"rule": rule, "num_classes": 0 if reason else 3, "reason": reason}
    return {"top1": top1, "many": 0.9, "medium": 0.5, "few": None,
            "group_descriptions": {"many": group("more than 100 training images"),
                                   "medium": group("20 to 100 training images"),
                                   "few": group("fewer than 20 training images", few_reason)}}


def test_markdown_table_footnotes_say_why_a_group_is_empty():
    table = markdown_table({"CE": _report(0.7), "LDAM": _report(0.8)})
    assert table.splitlines() == [
        "| Method | Many | Medium | Few | All  |",
        "|:-------|-----:|-------:|----:|-----:|",
        "| CE     | 90.0 | 50.0   | –¹  | 70.0 |",
        "| LDAM   | 90.0 | 50.0   | –¹  | 80.0 |",
        "",
        "¹ Few: no class has fewer than 20 training images.",
    ]
    # Aggregates keep the reason (equal in every seed), so their tables do too.
    aggregated = aggregate_seeds([_report(0.7), _report(0.8)])
    assert aggregated["group_descriptions"]["few"]["reason"] == \
        "no class has fewer than 20 training images"
    assert aggregated["few"] is None
    lines = markdown_table({"CE": aggregated}).splitlines()
    assert lines[2].split("|")[4].strip() == "–¹"
    assert lines[-1] == "¹ Few: no class has fewer than 20 training images."


def test_markdown_table_numbers_distinct_reasons_once_each():
    other = _report(0.6, few_reason="none of its 3 classes has test samples")
    other["many"] = None
    other["group_descriptions"]["many"]["reason"] = "none of its 3 classes has test samples"
    table = markdown_table([("CE", _report(0.7)), ("Focal", other), ("LA", _report(0.5))],
                           columns=("many", "few", "all"))
    lines = table.splitlines()
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
             for line in lines if line.startswith("| ") and "Method" not in line}
    assert cells["CE"] == ["90.0", "–¹", "70.0"]
    assert cells["Focal"] == ["–²", "–³", "60.0"]
    assert cells["LA"] == ["90.0", "–¹", "50.0"]
    assert lines[-4:] == ["",
                          "¹ Few: no class has fewer than 20 training images.",
                          "² Many: none of its 3 classes has test samples.",
                          "³ Few: none of its 3 classes has test samples."]
    # Undefined cells outside the shot groups, and results without descriptions,
    # stay a plain "–" with no footnote.
    plain = markdown_table({"CE": {"top1": 0.7, "few": None, "class_margin": None}},
                           columns=("few", "class_margin"))
    assert "–¹" not in plain and len(plain.splitlines()) == 3
