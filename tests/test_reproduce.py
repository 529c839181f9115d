"""applications/reproduce.py: concurrent runs of applications.train inside a deadline.

The scheduling tests inject a fake run (a small script written here, through
the hidden --train-command option) that logs history.csv rows on a timer, so
the deadline, the cuts and the reports are checked in seconds. The smoke test
runs applications.train itself, two recipes at once on digits-lt (offline), in a
subprocess where, on JAX and PyTorch, importing TensorFlow fails (as on the GPU
machines; the runs get --pipeline numpy).
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap
import time

import keras
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # applications/ lives beside keras_margins/, not installed
    sys.path.insert(0, str(REPO))

from applications import reproduce  # noqa: E402
from applications.aggregate import collect_runs  # noqa: E402
from applications.reproduce import Projection, choose_cut  # noqa: E402
from backend_utils import without_tensorflow  # noqa: E402

BACKEND = keras.backend.backend()

# A stand-in for applications.train: per-recipe startup delay and epoch time
# (the epoch time is multiplied by the number of fake runs alive, like runs
# sharing a saturated GPU); "focal" fails at once.
FAKE_TRAIN = textwrap.dedent('''
    import argparse, json, os, pathlib, sys, time
    STARTUP = {"kps": 60.0}
    EPOCH = {"ce": 0.15, "la": 0.15, "ldam": 0.3, "lmsce": 0.005}
    parser = argparse.ArgumentParser()
    for flag in ("--recipe", "--results-dir", "--dataset"):
        parser.add_argument(flag)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--epochs", type=int, default=10)
    args, _ = parser.parse_known_args()
    if args.recipe == "focal":
        print("Traceback (most recent call last):\\nRuntimeError: fake failure", flush=True)
        sys.exit(3)
    alive = pathlib.Path(args.results_dir) / "alive"
    alive.mkdir(parents=True, exist_ok=True)
    (alive / str(os.getpid())).touch()

    def sharing():
        count = 0
        for marker in alive.iterdir():
            try:
                os.kill(int(marker.name), 0)
                count += 1
            except OSError:
                pass
        return max(count, 1)

    time.sleep(STARTUP.get(args.recipe, 0.0))
    folder = pathlib.Path(args.results_dir) / f"fake-e{args.epochs}" / args.recipe / f"seed{args.seed}"
    folder.mkdir(parents=True, exist_ok=True)
    config = {"recipe": args.recipe, "seed": args.seed, "dataset": "fake", "epochs": args.epochs,
              "imbalance_ratio": 10.0, "profile": "exp", "model": "fake", "backend": "none"}
    (folder / "config.json").write_text(json.dumps(config))
    print(f"[{args.recipe} seed {args.seed}] fake -> {folder}", flush=True)
    with open(folder / "history.csv", "w") as history:
        for epoch in range(args.epochs):
            start = time.time()
            time.sleep(EPOCH[args.recipe] * sharing())
            if epoch == 0:
                history.write("epoch,loss,seconds\\n")
            history.write(f"{epoch},1.0,{time.time() - start}\\n")
            history.flush()
    report = {"top1": 0.5, "many": 0.9, "medium": 0.5, "few": 0.1, "balanced_accuracy": 0.5}
    (folder / "report.json").write_text(json.dumps(report))
    (folder / "summary.json").write_text(json.dumps({"recipe": args.recipe, **report}))
    (alive / str(os.getpid())).unlink()
''')


@pytest.fixture
def fake_train(tmp_path):
    path = tmp_path / "fake_train.py"
    path.write_text(FAKE_TRAIN)
    return f"{sys.executable} {path}"


def _launch(results, fake, *args):
    argv = ["--results-dir", str(results), "--train-command", fake, "--poll", "0.1", *args]
    start = time.time()
    try:
        code = reproduce.main(argv)
    except SystemExit as exit_:
        code = exit_
    elapsed = time.time() - start
    report = json.loads((results / "reproduce.json").read_text())
    runs = {(r["recipe"], r["seed"]): r for r in report["runs"]}
    return code, elapsed, runs, (results / "reproduce.md").read_text()


# ----------------------------------------------------------------- pure functions

def test_priority_order_is_seed_major_and_drops_duplicates():
    assert reproduce.priority_order(["ce", "la", "ce"], [0, 1, 0]) == [
        ("ce", 0), ("la", 0), ("ce", 1), ("la", 1)]


def test_epoch_estimate_skips_compilation_and_resists_one_slow_epoch():
    assert reproduce.epoch_estimate([]) is None
    assert reproduce.epoch_estimate([30.0]) == 30.0             # nothing else measured yet
    assert reproduce.epoch_estimate([30.0, 2.0]) == 2.0         # epoch 1 (compilation) left out
    assert reproduce.epoch_estimate([30.0, 1, 1, 12.0, 1, 1]) == 1.0   # DRW recompilation
    assert reproduce.epoch_estimate([30.0, 5, 5, 5, 5, 5, 1, 1, 1]) == 1.0   # last 5 only


def test_finish_estimate_is_half_the_first_epoch_plus_one():
    assert reproduce.finish_estimate([]) == 0.0
    assert reproduce.finish_estimate([20.0]) == pytest.approx(30.0)
    assert reproduce.finish_estimate([20.0, 2.0, 1.0, 1.0]) == pytest.approx(11.0)


def test_project_finish_counts_the_epoch_under_way_and_the_evaluation():
    project = reproduce.project_finish
    assert project([30.0], 10, last_row_at=100.0, now=100.5, finish_seconds=2.0) is None
    # 2 s/epoch, 7 epochs to go from t=100, 2 s of evaluation
    assert project([30.0, 2.0, 2.0], 10, 100.0, 100.5, 2.0) == pytest.approx(116.0)
    # the current epoch has run 5 s already: it counts for at least that
    assert project([30.0, 2.0, 2.0], 10, 100.0, 105.0, 2.0) == pytest.approx(119.0)
    # all epochs done: evaluation only
    assert project([30.0, 2.0], 2, 100.0, 100.5, 2.0) == pytest.approx(102.0)
    assert project([30.0, 2.0], 2, 100.0, 110.0, 2.0) == pytest.approx(110.0)
    assert project([30.0], 1, 100.0, 100.5, 3.0) == pytest.approx(103.0)


def test_choose_cut_ends_the_lowest_priority_run_only_when_one_is_late():
    deadline, now = 100.0, 50.0
    on_time = [Projection(0, 90.0, 70.0), Projection(1, 95.0, 72.0), Projection(2, None, None)]
    assert choose_cut(on_time, now, deadline) is None
    late = [Projection(0, 110.0, 80.0), Projection(1, 95.0, 72.0), Projection(2, None, None)]
    cut = choose_cut(late, now, deadline)
    assert cut.priority == 2 and not cut.hopeless
    assert "lowest priority" in cut.reason and "#1: 10 s late" in cut.reason
    # the lowest-priority run is late itself
    cut = choose_cut(late[:2] + [Projection(2, 130.0, 90.0)], now, deadline)
    assert cut.priority == 2 and "30 s after the deadline" in cut.reason


def test_choose_cut_prefers_a_hopeless_run_and_spares_one_about_to_finish():
    deadline, now = 100.0, 50.0
    # priority 0 would be late even alone: it goes, not the lower-priority runs
    runs = [Projection(0, 200.0, 150.0), Projection(1, 110.0, 80.0), Projection(2, 95.0, 70.0)]
    cut = choose_cut(runs, now, deadline)
    assert cut.priority == 0 and cut.hopeless and "50 s after the deadline" in cut.reason
    # priority 2 ends 5 s from now, before the others could show a new speed
    runs = [Projection(0, 110.0, 80.0), Projection(1, 98.0, 75.0), Projection(2, 55.0, 52.0)]
    assert choose_cut(runs, now, deadline, soon=10.0).priority == 1
    assert choose_cut(runs, now, deadline, soon=0.0).priority == 2


def test_read_history_ignores_an_unfinished_last_line(tmp_path):
    path = tmp_path / "history.csv"
    assert reproduce.read_history(path) == []
    path.write_text("epoch,loss,seconds\n0,2.0,31.5\n1,1.5,1.25\n2,1.4,1.")
    assert reproduce.read_history(path) == [31.5, 1.25]


# ----------------------------------------------------------------- command-line errors

@pytest.mark.parametrize("args, message", [
    (["--recipes", "ce", "nope", "--deadline", "60"], "unknown recipe 'nope'; valid recipes: ce,"),
    (["--recipes", "ce", "--deadline", "0"], "--deadline must be a positive number"),
    (["--recipes", "ce", "--deadline", "-5"], "--deadline must be a positive number"),
    (["--recipes", "ce", "--deadline", "60", "--parallel", "0"], "--parallel must be at least 1"),
])
def test_bad_arguments_give_clear_errors(args, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as error:
        reproduce.main(args + ["--results-dir", str(tmp_path)])
    assert error.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    if "unknown" in message:
        assert "ldam-drw" in err and "elm-drw = elm-drw-lam1.0" in err
    assert not (tmp_path / "logs").exists()


def test_deadline_shorter_than_one_epoch_is_reported(tmp_path, fake_train):
    code, elapsed, runs, _ = _launch(tmp_path / "r", fake_train, "--recipes", "kps",
                                     "--deadline", "1.5", "--epochs", "5")
    assert isinstance(code, SystemExit)
    assert "--deadline 1.5 s is shorter than one epoch" in str(code.code)
    assert runs[("kps", 0)]["status"] == "partial" and runs[("kps", 0)]["epochs_done"] == 0
    assert elapsed < 1.5 + 2.0


# ----------------------------------------------------------------- scheduling with fake runs

def test_deadline_cuts_failures_and_reports(tmp_path, fake_train):
    results = tmp_path / "r"
    # a stale result of an earlier, finished run in the folder that "ldam" reuses
    stale = results / "fake-e40" / "ldam" / "seed0"
    stale.mkdir(parents=True)
    (stale / "report.json").write_text(json.dumps({"top1": 0.9}))
    (stale / "summary.json").write_text("{}")
    deadline = 5.0
    code, elapsed, runs, markdown = _launch(
        results, fake_train, "--recipes", "lmsce", "ldam", "kps", "focal", "--epochs", "40",
        "--parallel", "4", "--deadline", str(deadline))
    assert code == 0
    assert elapsed < deadline + 1.5, elapsed
    fast, ldam, kps, focal = (runs[(name, 0)] for name in ("lmsce", "ldam", "kps", "focal"))
    assert fast["status"] == "finished" and fast["epochs_done"] == 40, fast
    # ldam (0.3 s x 3 runs sharing per epoch) cannot finish 40 epochs in 5 s, even alone
    assert ldam["status"] == "partial" and 2 <= ldam["epochs_done"] < 40, ldam
    assert "to itself" in ldam["reason"]
    partial = json.loads((stale / "partial.json").read_text())
    assert partial["epochs_done"] == ldam["epochs_done"] and partial["epochs_total"] == 40
    assert not (stale / "report.json").exists() and not (stale / "summary.json").exists()
    # kps never logged an epoch: killed at the deadline
    assert kps["status"] == "partial" and kps["epochs_done"] == 0
    assert "deadline reached" in kps["reason"] and kps["seconds"] <= deadline + 0.5
    assert focal["status"] == "failed" and focal["returncode"] == 3
    assert "fake failure" in focal["log_tail"]
    # the aggregate sees only the finished run; the Markdown lists the others apart
    assert [config["recipe"] for config, _ in collect_runs(results)] == ["lmsce"]
    assert "| lmsce (n=1) |" in markdown and "ldam (n=" not in markdown
    assert f"partial ({ldam['epochs_done']}/40 epochs)" in markdown
    assert "partial (0/40 epochs)" in markdown and "failed (exit status 3)" in markdown
    assert "RuntimeError: fake failure" in markdown
    assert (results / "logs" / "kps-seed0.log").exists()


def test_lowest_priority_run_is_cut_to_let_the_first_finish(tmp_path, fake_train):
    # Two runs share the "GPU": 0.3 s/epoch each, 0.15 s alone. 20 epochs together
    # (6 s + startup) miss a 6 s deadline, ce alone (3 s) makes it: la (lower
    # priority) is cut, and no further pair starts after a cut that made room.
    code, elapsed, runs, markdown = _launch(
        tmp_path / "r", fake_train, "--recipes", "ce", "la", "--seeds", "0", "1",
        "--epochs", "20", "--parallel", "2", "--deadline", "6")
    assert code == 0 and elapsed < 6 + 1.5
    assert runs[("ce", 0)]["status"] == "finished", runs[("ce", 0)]
    la = runs[("la", 0)]
    assert la["status"] == "partial" and la["epochs_done"] < 20, la
    assert "lowest" in la["reason"] and "deadline" in la["reason"], la
    for pair in (("ce", 1), ("la", 1)):
        assert runs[pair]["status"] == "not-started", runs[pair]
        assert "cut to make room" in runs[pair]["reason"]
    assert markdown.count("not started") == 2


# ----------------------------------------------------------------- real runs

def _smoke(tmp_path, backend, recipes, block_tensorflow):
    """The launcher's smoke mode in a subprocess on digits-lt; returns its reports."""
    results = tmp_path / "results"
    env = dict(os.environ, KERAS_BACKEND=backend)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    extra = []
    if block_tensorflow:
        env = without_tensorflow(env, tmp_path / "blocked")
        extra = ["--", "--pipeline", "numpy"]
    command = [sys.executable, "-m", "applications.reproduce", "--recipes", *recipes,
               "--dataset", "digits-lt", "--smoke", "--parallel", str(len(recipes)),
               "--deadline", "240", "--results-dir", str(results), "--backend", backend,
               *extra]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    logs = "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}"
                   for p in sorted((results / "logs").glob("*.log")))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + logs
    report = json.loads((results / "reproduce.json").read_text())
    return report, (results / "reproduce.md").read_text(), result.stdout


def test_smoke_runs_two_recipes_at_once_and_aggregates(tmp_path):
    # On JAX and PyTorch, as on the GPU machines: importing TensorFlow fails.
    block = BACKEND != "tensorflow"
    report, markdown, stdout = _smoke(tmp_path, BACKEND, ["ce", "ldam-drw"], block)
    assert report["counts"] == {"finished": 2, "partial": 0, "failed": 0, "not-started": 0}
    for run in report["runs"]:
        assert run["status"] == "finished" and run["epochs_done"] == run["epochs_total"] == 2
        assert run["seconds"] > 0 and run["seconds_per_epoch"] > 0
    assert f"### digits-lt, exp ratio 10, small-cnn, 2 epochs ({BACKEND})" in markdown
    assert "| ce (n=1) " in markdown and "| ldam-drw (n=1) " in markdown
    assert markdown.strip() in stdout
    assert "--verbose 2 --no-save-model" in report["command"]
    assert report["extra_args"] == (["--pipeline", "numpy"] if block else [])
