"""The benchmark scripts run end to end (tiny settings) and print their tables.

Not timings: the scripts must keep working when a loss or the data package
changes, and their reports must hold what the README's Performance section
pastes (ratios, memory, cross-backend values).
"""

import json
import os
import pathlib
import subprocess
import sys

import keras

ROOT = pathlib.Path(__file__).resolve().parents[1]
BACKEND = keras.backend.backend()


def _run(script, *args, tmp_path):
    out = tmp_path / "report.json"
    table = tmp_path / "table.md"
    env = dict(os.environ, KERAS_BACKEND=BACKEND)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--backends", BACKEND,
         *args, "--out", str(out), "--markdown", str(table)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), table.read_text()


def test_loss_overhead_reports_ratios_against_cross_entropy(tmp_path):
    report, table = _run("loss_overhead.py", "--classes", "10", "--losses", "LDAMLoss",
                         "LMSCELoss", "InfluenceBalancedLoss", "--repeats", "1",
                         "--min-time", "0.001", "--batch-size", "16", tmp_path=tmp_path)
    (backend,) = report["backends"]
    assert backend["backend"] == BACKEND and "error" not in backend
    rows = {r["loss"]: r for r in backend["results"]}
    assert set(rows) == {"CrossEntropy", "LDAMLoss", "LMSCELoss", "InfluenceBalancedLoss"}
    for name, row in rows.items():
        assert "error" not in row, row
        assert row["ms"] > 0 and row["ratio"] > 0
    assert rows["CrossEntropy"]["ratio"] == 1.0
    assert "| LMSCELoss |" in table and "C=10" in table


def test_train_step_reports_throughput_loss_share_and_backend_value(tmp_path):
    report, table = _run("train_step.py", "--losses", "LDAMLoss", "--batch-size", "4",
                         "--steps", "1", "--repeats", "1", "--pipeline-seconds", "0.2",
                         tmp_path=tmp_path)
    (backend,) = report["backends"]
    assert "error" not in backend, backend
    ce, ldam = backend["losses"]["CrossEntropy"], backend["losses"]["LDAMLoss"]
    assert ce["images_per_s"] > 0 and ldam["images_per_s"] > 0
    assert ldam["loss_only_ms"] > 0 and "loss_share_vs_ce_step" in ldam
    # both losses evaluated on identical weights and batch: finite, positive values
    values = backend["check_values"]
    assert 0 < values["CrossEntropy"] < 50 and 0 < values["LDAMLoss"] < 100
    assert backend["pipeline"]["images_per_s"] > 0
    assert "loss alone, extra / CE step" in table and "| LDAMLoss |" in table


def test_compare_revisions_times_two_checkouts_side_by_side(tmp_path):
    """Against itself (--before = this checkout): both columns filled, same losses."""
    out = tmp_path / "compare.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compare_revisions.py"), "--before",
         str(ROOT), "--backends", BACKEND, "--losses", "LMSCELoss", "--classes", "10",
         "--repeats", "1", "--min-time", "0.001", "--batch-size", "8", "--out", str(out)],
        cwd=tmp_path, env=dict(os.environ, KERAS_BACKEND=BACKEND), capture_output=True,
        text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads(out.read_text())
    assert row["loss"] == "LMSCELoss" and row["classes"] == 10 and row["backend"] == BACKEND
    assert row["before"] > 0 and row["after"] > 0
    assert "| LMSCELoss | 10 |" in proc.stdout
