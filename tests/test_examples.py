"""Every script in examples/ runs in smoke mode (a few steps on real data from
../shared/datasets) on the current backend and prints its results table."""

import os
import pathlib
import runpy
import subprocess
import sys

import keras
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def _run_example(name, monkeypatch, capsys, datasets_dir, *args):
    """Runs examples/<name> in this process (as __main__) with --smoke."""
    monkeypatch.setenv("KERAS_MARGINS_DATA", str(datasets_dir))
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name), "--smoke", *args])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    return capsys.readouterr().out


def _table_rows(output):
    return [line for line in output.splitlines() if line.startswith("| ")]


def test_examples_folder_lists_the_three_scripts():
    """The CE-versus-LDAM-DRW quick start is ``python -m applications.quickstart``
    (tests/test_quickstart.py), not an example script."""
    names = {p.name for p in EXAMPLES.glob("*.py")}
    assert names == {"ldam_drw_cifar10_lt.py", "custom_training_loop.py",
                     "backend_comparison.py"}


@pytest.mark.real_data
def test_ldam_drw_cifar10_lt_smoke(monkeypatch, capsys, datasets_dir):
    out = _run_example("ldam_drw_cifar10_lt.py", monkeypatch, capsys, datasets_dir)
    assert "training images per class: [100, 60, 36, 22, 13, 8, 5, 3, 2, 1]" in out
    assert any(r.startswith("| LDAM-DRW ") for r in _table_rows(out))


@pytest.mark.real_data
def test_custom_training_loop_smoke(monkeypatch, capsys, datasets_dir):
    out = _run_example("custom_training_loop.py", monkeypatch, capsys, datasets_dir)
    assert "epoch 1/2: loss" in out and "epoch 2/2: loss" in out and "(DRW)" in out
    losses = [float(line.split("loss ")[1].split()[0]) for line in out.splitlines()
              if line.startswith("epoch ")]
    assert all(0.0 < value < 1e3 for value in losses), losses
    assert any(f"ELM+DRW ({keras.backend.backend()})" in r for r in _table_rows(out))


@pytest.mark.real_data
def test_backend_comparison_smoke_on_the_current_backend(datasets_dir):
    backend = keras.backend.backend()
    env = dict(os.environ, KERAS_MARGINS_DATA=str(datasets_dir))
    done = subprocess.run([sys.executable, str(EXAMPLES / "backend_comparison.py"), "--smoke",
                           "--backends", backend], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rows = _table_rows(done.stdout)
    assert len(rows) == 2 and rows[1].startswith(f"| {backend} |")
    top1 = float(rows[1].split("|")[2])
    assert 0.0 <= top1 <= 100.0
