"""Runs recipe/seed pairs of ``applications.train`` side by side on one GPU, inside a deadline.

    python -m applications.reproduce --recipes ce ldam-drw elm-drw mm-ldam-drw kps-ga la \\
        lm-softmax-zc ce-rsm --seeds 0 1 2 --epochs 200 --parallel 6 --deadline 480 \\
        --results-dir results/gpu --data-dir /path/to/datasets --backend jax
    # CI: two tiny runs side by side, offline
    python -m applications.reproduce --dataset digits-lt --recipes ce ldam-drw --smoke \\
        --parallel 2 --deadline 300 --results-dir /tmp/reproduce
    # arguments after -- go to every run unchanged
    python -m applications.reproduce --recipes ce la --deadline 600 -- --imbalance-ratio 50

Every pair is one ``python -m applications.train`` process in its own process
group, with ``--verbose 2 --no-save-model`` (``--no-plots`` where matplotlib is
missing, ``--embedding none`` where scikit-learn is), the environment's
``XLA_PYTHON_CLIENT_PREALLOCATE=false`` (JAX processes share the GPU's memory;
``XLA_PYTHON_CLIENT_MEM_FRACTION`` removed) and ``TF_CPP_MIN_LOG_LEVEL=2``, and
its output in ``<results-dir>/logs/<recipe>-seed<seed>.log``. The deadline
counts from the launcher's start.

Priority: all recipes of the first seed in the order given, then those of the
next seed, and so on. Pairs start in that order, at most ``--parallel`` at a
time, so every waiting pair has a lower priority than every running one.

Projection (every poll, about once a second): a run's epoch time is the median
of its last 5 epochs' ``seconds`` in history.csv, epoch 1 (compilation) left
out once later epochs exist; before its second epoch a run has no projection.
Its end = time of its last row + the epoch under way (at least as long as it
has run) + the remaining epochs + a finishing allowance for the test-set
evaluation: the longest measured on runs that finished, else half the run's
first epoch (which compiled the training and test steps) plus one epoch.

Starting: a waiting pair starts only if its projected duration (launch to the
end of epoch 1, then the epochs and finishing allowance, as measured on runs of
the same recipe, else on all runs) fits before the deadline; with nothing
measured yet it starts. A pair that does not fit is skipped as not started.

Cutting: when a running run is projected to end after the deadline, one run is
ended. A late run that would be late even with the GPU to itself (its remaining
training time divided by the number of running runs: an optimistic bound)
goes first, the lowest-priority such run. Otherwise the lowest-priority running
run goes, passing over runs projected to end in time within the settling time
below (they free their share then anyway). After a cut nothing more is cut
until every remaining run has logged 3 epochs since it (or 3 epochs of the
slowest run plus 2 polls have passed), so that the projections see the freed
share. After a cut that made room, no further pair starts (it would take the
share back). A cut run's process group gets SIGTERM, then SIGKILL after 2 s;
at the deadline whatever still runs gets SIGKILL at once. A cut run is
recorded as partial, never as a result: ``partial.json`` in its folder (epochs
done/total and why), and report.json, summary.json and history.json there
(an earlier run's, or an unfinished evaluation's) are removed, so
``applications.aggregate`` (which needs report.json) skips the folder.

Outputs: ``<results-dir>/reproduce.json`` (every pair: status finished,
partial, failed or not-started, epochs done/total, seconds, projected seconds,
reason, log tail of failures) and ``reproduce.md``, also printed: the
``applications.aggregate`` tables of the finished runs, then every pair with
its status ("partial (k/N epochs)", "failed (exit status 1)", "not started").
Exit status 0 if at least one run finished; if no run finished its first epoch
before the deadline, an error saying the deadline was shorter than one epoch.
"""

import argparse
import collections
import csv
import dataclasses
import importlib.util
import json
import os
import pathlib
import re
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time

from applications.cli import add_backend_argument, add_data_dir_argument, use_backend

__all__ = ["build_parser", "main", "priority_order", "epoch_estimate", "finish_estimate",
           "project_finish", "Projection", "Cut", "choose_cut", "read_history", "Launcher"]

WINDOW = 5            # epochs in the epoch-time median
SETTLE_EPOCHS = 3     # epochs every remaining run logs after a cut before the next one
STOP_GRACE = 2.0      # seconds between SIGTERM and SIGKILL when a run is cut early
LOG_TAIL_LINES = 25
TRAINING_LINE = re.compile(r"^\[(?P<recipe>\S+) seed (?P<seed>-?\d+)\] .* -> (?P<folder>.+?)\s*$",
                           re.MULTILINE)
RESULT_FILES = ("report.json", "summary.json", "history.json")


# ----------------------------------------------------------------- pure parts

def priority_order(recipes, seeds):
    """``[(recipe, seed)]``, highest priority first: every recipe of the first
    seed in the given order, then the next seed; duplicates dropped."""
    pairs = []
    for seed in seeds:
        for recipe in recipes:
            if (recipe, seed) not in pairs:
                pairs.append((recipe, seed))
    return pairs


def epoch_estimate(seconds, window=WINDOW):
    """Median of the last ``window`` epoch times, epoch 1 (compilation) left
    out when later epochs exist; None without epochs."""
    if not seconds:
        return None
    recent = list(seconds[1:] if len(seconds) > 1 else seconds)[-window:]
    return float(statistics.median(recent))


def finish_estimate(seconds):
    """Seconds from a run's last epoch row to its exit (test-set evaluation,
    reports) before any run has finished: half its first epoch (which compiled
    the training and test steps) plus one epoch; 0 without epochs."""
    if not seconds:
        return 0.0
    return 0.5 * seconds[0] + epoch_estimate(seconds)


def project_finish(seconds, epochs_total, last_row_at, now, finish_seconds):
    """Projected end (same clock as ``now``) of a run that logged the epoch
    times ``seconds``, its last row at ``last_row_at``; None before 2 epochs
    (one only for a one-epoch run)."""
    done = len(seconds)
    if done < min(2, epochs_total):
        return None
    remaining = epochs_total - done
    if remaining <= 0:
        return max(last_row_at + finish_seconds, now)
    per_epoch = epoch_estimate(seconds)
    current = max(per_epoch, now - last_row_at)   # the epoch under way lasts at least this long
    return last_row_at + current + (remaining - 1) * per_epoch + finish_seconds


@dataclasses.dataclass(frozen=True)
class Projection:
    """What ``choose_cut`` knows of a running run: its priority (0 = highest),
    projected finish and projected finish with the GPU to itself (None = not
    projected yet)."""
    priority: int
    finish: float = None
    solo_finish: float = None


Cut = collections.namedtuple("Cut", ["priority", "reason", "hopeless"])


def choose_cut(projections, now, deadline, soon=0.0):
    """The run to end now, as a ``Cut`` (``hopeless``: late even alone), or None.

    Nothing is cut while every projected run finishes by ``deadline``. Else a
    late run that is late even alone (``solo_finish``), the lowest-priority
    one; else the lowest-priority running run, except runs projected to finish
    by the deadline within ``soon`` seconds (they free their share then anyway).
    """
    late = [p for p in projections if p.finish is not None and p.finish > deadline]
    if not late:
        return None
    first = min(late, key=lambda p: p.priority)
    hopeless = [p for p in late if p.solo_finish is not None and p.solo_finish > deadline]
    if hopeless:
        victim = max(hopeless, key=lambda p: p.priority)
        return Cut(victim.priority, f"projected to end {victim.solo_finish - deadline:.0f} s "
                   f"after the deadline even with the GPU to itself", True)
    candidates = [p for p in projections
                  if p.finish is None or p.finish > deadline or p.finish - now > soon]
    victim = max(candidates or projections, key=lambda p: p.priority)
    if victim.finish is not None and victim.finish > deadline:
        return Cut(victim.priority, f"projected to end {victim.finish - deadline:.0f} s after "
                   f"the deadline (the lowest-priority run)", False)
    return Cut(victim.priority, f"lowest priority: ended to give its share of the GPU to runs "
               f"projected past the deadline (#{first.priority + 1}: "
               f"{first.finish - deadline:.0f} s late)", False)


def read_history(path):
    """Epoch times (the ``seconds`` column, None where missing) of the complete
    rows of a Keras CSVLogger file; [] when absent."""
    try:
        text = pathlib.Path(path).read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return []
    lines = [line for line in text.splitlines(keepends=True) if line.endswith("\n")]
    seconds = []
    for row in csv.DictReader(lines):
        try:
            seconds.append(float(row["seconds"]))
        except (KeyError, TypeError, ValueError):
            seconds.append(None)
    return seconds


def _median(values):
    values = [v for v in values if v is not None]
    return float(statistics.median(values)) if values else None


# ----------------------------------------------------------------- the runs

@dataclasses.dataclass
class Run:
    """One recipe/seed pair and what is known of its process."""
    recipe: str
    seed: int
    priority: int
    log: pathlib.Path
    epochs_total: int
    status: str = "pending"          # pending, running, finished, partial, failed, not-started
    process: object = None
    log_handle: object = None
    started: float = None
    ended: float = None
    folder: pathlib.Path = None
    epoch_seconds: list = dataclasses.field(default_factory=list)
    row_times: list = dataclasses.field(default_factory=list)
    history_mtime: float = None
    projected_finish: float = None
    estimate_seconds: float = None   # a waiting pair's projected duration
    returncode: int = None
    reason: str = ""
    log_tail: str = None

    @property
    def name(self):
        return f"{self.recipe} seed {self.seed}"

    @property
    def epochs_done(self):
        return len(self.epoch_seconds)

    @property
    def startup_seconds(self):
        """Launch to the end of epoch 1 (imports, data, compilation, epoch 1)."""
        return self.row_times[0] - self.started if self.row_times else None

    def rows_since(self, moment):
        return sum(t > moment for t in self.row_times)

    def to_dict(self):
        def rel(value):
            return None if value is None else round(value - self.started, 2)
        return {
            "recipe": self.recipe, "seed": self.seed, "priority": self.priority,
            "status": self.status, "epochs_done": self.epochs_done,
            "epochs_total": self.epochs_total,
            "seconds": rel(self.ended) if self.started else None,
            "projected_seconds": (rel(self.projected_finish) if self.started
                                  else self.estimate_seconds),
            "seconds_per_epoch": epoch_estimate(self.epoch_seconds),
            "startup_seconds": self.startup_seconds,
            "folder": None if self.folder is None else str(self.folder),
            "log": str(self.log), "returncode": self.returncode, "reason": self.reason,
            "log_tail": self.log_tail,
        }


def _written_by(run, name):
    """Whether ``name`` in the run's folder was written since the run started."""
    path = run.folder / name if run.folder else None
    return path is not None and path.exists() and path.stat().st_mtime >= run.started


def _tail(path, lines=LOG_TAIL_LINES):
    try:
        return "\n".join(pathlib.Path(path).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


class Launcher:
    """Starts, watches and cuts the runs; ``command(run)`` is a run's argv."""

    def __init__(self, runs, command, env, deadline, parallel, poll=1.0, echo=print):
        self.runs, self.command, self.env = runs, command, env
        self.deadline, self.parallel, self.poll, self.echo = deadline, parallel, poll, echo
        self.cut_at = None
        self.settle_until = None
        self.no_more_starts = None      # reason once a cut made room
        self.finish_measured = []       # last epoch row -> exit, of finished runs

    # --- estimates
    def running(self):
        return [r for r in self.runs if r.status == "running"]

    def finish_seconds(self, run):
        """Last epoch row to exit: the longest measured, else estimated."""
        if self.finish_measured:
            return max(self.finish_measured)
        return finish_estimate(run.epoch_seconds)

    def project(self, run, now):
        if not run.row_times:
            return None
        return project_finish(run.epoch_seconds, run.epochs_total, run.row_times[-1], now,
                              self.finish_seconds(run))

    def duration_estimate(self, run):
        """Projected seconds from launch to exit of a waiting pair, or None."""
        measured = [r for r in self.runs if r.epochs_done >= 2 and r.started]
        same = [r for r in measured if r.recipe == run.recipe] or measured
        if not same:
            return None
        startup = _median(r.startup_seconds for r in same)
        per_epoch = _median(epoch_estimate(r.epoch_seconds) for r in same)
        finish = (max(self.finish_measured) if self.finish_measured
                  else _median(finish_estimate(r.epoch_seconds) for r in same))
        if startup is None or per_epoch is None:
            return None
        return startup + max(run.epochs_total - 1, 0) * per_epoch + finish

    # --- processes
    def start(self, run, now):
        run.log.parent.mkdir(parents=True, exist_ok=True)
        run.log_handle = open(run.log, "w")
        run.process = subprocess.Popen(self.command(run), stdout=run.log_handle,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=self.env, start_new_session=True)
        run.status, run.started = "running", now
        self.echo(f"[reproduce {now - self.t0:6.1f} s] start {run.name} "
                  f"(pid {run.process.pid}, log {run.log})")

    def _signal(self, run, sig):
        # only while the process is not reaped: its id, hence its group's, cannot be reused
        if run.process.poll() is None:
            try:
                os.killpg(run.process.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, runs, reason, grace):
        """Ends the runs' process groups together: SIGTERM, then SIGKILL after
        ``grace`` seconds (at once when ``grace`` is 0); records them."""
        signalled = time.time()
        for run in runs:
            if run.process.poll() is not None:
                self.reap(run, signalled)      # it ended by itself meanwhile
        runs = [run for run in runs if run.status == "running"]
        for run in runs:
            self._signal(run, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        for run in runs:
            try:
                run.process.wait(timeout=max(signalled + grace - time.time(), 0.0)
                                 if grace > 0 else None)
            except subprocess.TimeoutExpired:
                self._signal(run, signal.SIGKILL)
                run.process.wait()
        now = time.time()
        for run in runs:
            self.refresh(run, now)
            self._closed(run, now)
            if _written_by(run, "summary.json"):
                run.status, run.reason = "finished", f"finished as it was ended ({reason})"
                continue
            run.status, run.reason = "partial", reason
            self._record_partial(run)
            self.echo(f"[reproduce {signalled - self.t0:6.1f} s] cut {run.name} after "
                      f"{run.epochs_done}/{run.epochs_total} epochs (ended "
                      f"{now - signalled:.1f} s later): {reason}")

    def _closed(self, run, now):
        run.ended, run.returncode = now, run.process.returncode
        run.log_handle.close()

    def _record_partial(self, run):
        if run.folder is None or not run.folder.is_dir():
            return
        removed = []
        for name in RESULT_FILES:    # an earlier run's, or this one's unfinished evaluation
            path = run.folder / name
            if path.exists():
                path.unlink()
                removed.append(name)
        info = {"recipe": run.recipe, "seed": run.seed, "status": "partial",
                "epochs_done": run.epochs_done, "epochs_total": run.epochs_total,
                "seconds": round(run.ended - run.started, 2), "reason": run.reason,
                "removed": removed,
                "note": "cut before the end of training: not a result"}
        (run.folder / "partial.json").write_text(json.dumps(info, indent=2))

    # --- watching
    def refresh(self, run, now):
        """Reads the run's log (folder) and history.csv (new epoch rows)."""
        if run.folder is None:
            try:
                text = run.log.read_text(errors="replace")
            except FileNotFoundError:
                text = ""
            for match in TRAINING_LINE.finditer(text):
                if match["recipe"] == run.recipe and int(match["seed"]) == run.seed:
                    run.folder = pathlib.Path(match["folder"])
                    self._read_config(run)
                    break
        if run.folder is None:
            return
        history = run.folder / "history.csv"
        try:
            mtime = history.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime < run.started or mtime == run.history_mtime:
            return     # an earlier run's file, or nothing new
        seconds = read_history(history)
        new = seconds[run.epochs_done:]
        if not new:
            return
        run.history_mtime = mtime
        # the newest row was written at mtime; earlier new rows one epoch before each
        times, at = [], mtime
        for value in reversed(new):
            times.append(at)
            at -= value or 0.0
        previous = run.row_times[-1] if run.row_times else run.started
        for value, at in zip(new, reversed(times)):
            run.epoch_seconds.append(value if value is not None else at - previous)
            run.row_times.append(at)
            previous = at

    def _read_config(self, run):
        try:
            config = json.loads((run.folder / "config.json").read_text())
            run.epochs_total = int(config.get("epochs") or run.epochs_total)
        except (FileNotFoundError, ValueError):
            pass

    def reap(self, run, now):
        """Records a run whose process has exited by itself."""
        if run.process.poll() is None:
            return
        self.refresh(run, now)
        self._closed(run, now)
        if run.returncode == 0 and _written_by(run, "summary.json"):
            run.status = "finished"
            if run.row_times:
                self.finish_measured.append(now - run.row_times[-1])
            partial = run.folder / "partial.json"
            if partial.exists():
                partial.unlink()      # an earlier, cut run of the same folder
            self.echo(f"[reproduce {now - self.t0:6.1f} s] finished {run.name} "
                      f"({run.epochs_done} epochs, {now - run.started:.0f} s)")
            return
        run.status = "failed"
        run.reason = (f"exit status {run.returncode}" if run.returncode
                      else "exited without writing summary.json")
        run.log_tail = _tail(run.log)
        self.echo(f"[reproduce {now - self.t0:6.1f} s] FAILED {run.name}: {run.reason}; "
                  f"log {run.log}:\n{run.log_tail}")

    def settled(self, now):
        if self.cut_at is None or now >= self.settle_until:
            return True
        return all(r.rows_since(self.cut_at) >= SETTLE_EPOCHS for r in self.running()
                   if r.epochs_done < r.epochs_total)

    def cut_if_late(self, now):
        running = self.running()
        for run in running:
            run.projected_finish = self.project(run, now)
        if not running or not self.settled(now):
            return
        projections, count = [], len(running)
        for run in running:
            solo = None
            if run.projected_finish is not None:
                finish = self.finish_seconds(run)
                training = max(run.projected_finish - finish - now, 0.0)
                solo = now + training / count + finish
            projections.append(Projection(run.priority, run.projected_finish, solo))
        slowest = max((epoch_estimate(r.epoch_seconds) or 0.0) for r in running)
        settle = SETTLE_EPOCHS * slowest + 2 * self.poll
        cut = choose_cut(projections, now, self.deadline, soon=settle)
        if cut is None:
            return
        victim = next(r for r in running if r.priority == cut.priority)
        self.stop([victim], cut.reason, grace=min(STOP_GRACE, max(self.deadline - now, 0.0)))
        self.cut_at, self.settle_until = time.time(), time.time() + settle
        if not cut.hopeless and self.no_more_starts is None:
            self.no_more_starts = "a run was cut to make room before the deadline"

    def start_waiting(self, now):
        for run in self.runs:
            if len(self.running()) >= self.parallel:
                return
            if run.status != "pending":
                continue
            if self.no_more_starts:
                run.status, run.reason = "not-started", self.no_more_starts
                continue
            estimate = self.duration_estimate(run)
            if estimate is not None and now + estimate > self.deadline:
                run.status = "not-started"
                run.reason = (f"projected to need {estimate:.0f} s, {self.deadline - now:.0f} s "
                              f"left before the deadline")
                run.estimate_seconds = round(estimate, 2)
                continue
            self.start(run, now)

    def status_line(self, now):
        parts = []
        for run in self.running():
            per_epoch = epoch_estimate(run.epoch_seconds)
            end = ("?" if run.projected_finish is None
                   else f"{run.projected_finish - self.t0:.0f} s")
            parts.append(f"{run.name} {run.epochs_done}/{run.epochs_total}"
                         + (f" {per_epoch:.2f} s/ep, ends ~{end}" if per_epoch else ""))
        waiting = sum(r.status == "pending" for r in self.runs)
        return (f"[reproduce {now - self.t0:6.1f} s] {len(parts)} running, {waiting} waiting: "
                + "; ".join(parts))

    def loop(self, t0, status_every=30.0):
        """Runs until every pair is done or the deadline; kills what remains."""
        self.t0 = t0
        last_status = t0
        try:
            while True:
                now = time.time()
                for run in self.running():
                    self.refresh(run, now)
                    self.reap(run, now)
                if now >= self.deadline:
                    self.stop(self.running(), f"deadline reached ({self.deadline - t0:g} s)", 0)
                    break
                self.cut_if_late(now)
                self.start_waiting(time.time())
                if not self.running() and not any(r.status == "pending" for r in self.runs):
                    break
                if now - last_status >= status_every:
                    self.echo(self.status_line(now))
                    last_status = now
                time.sleep(max(0.0, min(self.poll, self.deadline - time.time())))
        finally:   # interrupted: nothing may outlive the launcher
            self.stop(self.running(), "the launcher was interrupted", grace=0)
            for run in self.runs:
                if run.status == "pending":
                    run.status = "not-started"
                    run.reason = self.no_more_starts or "not reached before the deadline"


# ----------------------------------------------------------------- reports

def _status_text(run):
    if run.status == "partial":
        return f"partial ({run.epochs_done}/{run.epochs_total} epochs)"
    if run.status == "failed":
        return f"failed ({run.reason})"
    return run.status.replace("-", " ")


def write_reports(results_dir, runs, header, launcher_info):
    """Writes reproduce.json and reproduce.md; returns the Markdown."""
    from applications.aggregate import aggregate_runs, collect_runs, format_tables
    finished = [run for r in runs if r.status == "finished" and r.folder
                for run in collect_runs(r.folder, include_smoke=True)]
    tables = format_tables(aggregate_runs(finished))[0] if finished else "No finished runs.\n"
    lines = [f"# {header}", "", "## Finished runs (last epoch, mean ± std over seeds)", "",
             tables, "## All pairs (priority order; partial runs are not results)", "",
             "| # | Recipe | Seed | Status | Epochs | Seconds | Note |",
             "|--:|:--|--:|:--|--:|--:|:--|"]
    for run in runs:
        seconds = "" if run.ended is None else f"{run.ended - run.started:.0f}"
        epochs = f"{run.epochs_done}/{run.epochs_total}" if run.started else ""
        note = run.reason.replace("|", "/") if run.status != "finished" else ""
        lines.append(f"| {run.priority + 1} | {run.recipe} | {run.seed} | {_status_text(run)} "
                     f"| {epochs} | {seconds} | {note} |")
    for run in runs:
        if run.status == "failed":
            lines += ["", f"### {run.name}: {run.reason} ({run.log})", "", "```",
                      run.log_tail or "", "```"]
    text = "\n".join(lines) + "\n"
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "reproduce.md").write_text(text)
    counts = {s: sum(r.status == s for r in runs)
              for s in ("finished", "partial", "failed", "not-started")}
    (results_dir / "reproduce.json").write_text(json.dumps(
        {**launcher_info, "counts": counts, "runs": [r.to_dict() for r in runs]}, indent=2))
    return text


# ----------------------------------------------------------------- command line

def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m applications.reproduce",
        description=__doc__.split("\n\n")[0] + " Arguments after -- go to every run unchanged.",
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", required=True, metavar="NAME",
                        help="recipes in priority order (python -m applications.train "
                             "--list-recipes)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0],
                        help="seeds; all recipes of a seed before the next seed (default 0)")
    parser.add_argument("--epochs", type=int,
                        help="epochs per run (default: applications.train's)")
    parser.add_argument("--parallel", type=int, default=4,
                        help="runs at the same time (default 4)")
    parser.add_argument("--deadline", type=float, required=True,
                        help="seconds from launch by which every run has ended")
    parser.add_argument("--results-dir", type=pathlib.Path, default=pathlib.Path("results"),
                        help="root of the run folders, logs/ and reproduce.json|md")
    parser.add_argument("--dataset", default="cifar10-lt",
                        help="passed to the runs (default cifar10-lt)")
    add_data_dir_argument(parser, "; passed to the runs")
    add_backend_argument(parser, "of the runs: ")
    parser.add_argument("--smoke", action="store_true",
                        help="passes --smoke to the runs (2 tiny epochs; CI)")
    parser.add_argument("--poll", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--train-command", help=argparse.SUPPRESS)   # tests: a fake child
    return parser


def _recipe_names(parser, names):
    from applications.recipes import ALIASES, RECIPES
    resolved = []
    for name in names:
        canonical = ALIASES.get(name, name)
        if canonical not in RECIPES:
            parser.error(f"unknown recipe {name!r}; valid recipes: {', '.join(RECIPES)} "
                         f"(aliases: {', '.join(f'{a} = {b}' for a, b in ALIASES.items())})")
        if canonical not in resolved:
            resolved.append(canonical)
    return resolved


def child_env(backend=None):
    """The runs' environment: on-demand GPU memory (several JAX processes
    share one GPU), quiet TensorFlow, unbuffered output, this checkout importable."""
    env = dict(os.environ)
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    env.pop("XLA_PYTHON_CLIENT_MEM_FRACTION", None)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONUNBUFFERED"] = "1"
    if backend:
        env["KERAS_BACKEND"] = backend
    root = str(pathlib.Path(__file__).resolve().parents[1])
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:
        paths.append(root)
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def _default_epochs(args):
    if args.epochs:
        return args.epochs
    return 2 if args.smoke else (200 if args.dataset == "cifar10-lt" else 10)


def main(argv=None):
    t0 = time.time()
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        extra, argv = argv[argv.index("--") + 1:], argv[:argv.index("--")]
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.deadline <= 0:
        parser.error(f"--deadline must be a positive number of seconds, received {args.deadline:g}")
    if args.parallel < 1:
        parser.error(f"--parallel must be at least 1, received {args.parallel}")
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be at least 1, received {args.epochs}")
    use_backend(args.backend)   # before keras (applications.recipes)
    recipes = _recipe_names(parser, args.recipes)
    epochs = _default_epochs(args)
    logs = args.results_dir / "logs"
    runs = [Run(recipe, seed, priority, logs / f"{recipe}-seed{seed}.log", epochs)
            for priority, (recipe, seed) in enumerate(priority_order(recipes, args.seeds))]

    base = (shlex.split(args.train_command) if args.train_command
            else [sys.executable, "-m", "applications.train"])
    common = ["--dataset", args.dataset, "--results-dir", str(args.results_dir),
              "--verbose", "2", "--no-save-model"]
    common += ["--epochs", str(args.epochs)] if args.epochs else []
    common += ["--data-dir", str(args.data_dir)] if args.data_dir else []
    common += ["--backend", args.backend] if args.backend else []
    common += ["--smoke"] if args.smoke else []
    if importlib.util.find_spec("matplotlib") is None:
        common.append("--no-plots")
    elif importlib.util.find_spec("sklearn") is None and importlib.util.find_spec("umap") is None:
        common += ["--embedding", "none"]

    def command(run):
        return base + ["--recipe", run.recipe, "--seed", str(run.seed)] + common + extra

    launcher = Launcher(runs, command, child_env(args.backend), t0 + args.deadline,
                        args.parallel, poll=args.poll)
    print(f"[reproduce] {len(runs)} runs ({', '.join(recipes)} x seeds "
          f"{' '.join(map(str, args.seeds))}), {args.parallel} at a time, deadline "
          f"{args.deadline:g} s: {shlex.join(command(runs[0]))}", flush=True)
    previous = None
    if threading.current_thread() is threading.main_thread():
        def interrupted(signum, frame):
            raise KeyboardInterrupt(f"signal {signum}")
        previous = signal.signal(signal.SIGTERM, interrupted)
    interrupted = None
    try:
        launcher.loop(t0)
    except KeyboardInterrupt as error:    # Ctrl-C or SIGTERM: report what was done
        interrupted = error
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    elapsed = time.time() - t0
    header = (f"{args.dataset}, {epochs} epochs{' (smoke)' if args.smoke else ''}: "
              f"{len(runs)} runs, {args.parallel} at a time, deadline {args.deadline:g} s, "
              f"{elapsed:.0f} s")
    info = {"dataset": args.dataset, "epochs": epochs, "smoke": args.smoke,
            "backend": args.backend or os.environ.get("KERAS_BACKEND"),
            "recipes": recipes, "seeds": args.seeds, "parallel": args.parallel,
            "deadline_seconds": args.deadline, "elapsed_seconds": round(elapsed, 2),
            "command": shlex.join(command(runs[0])), "extra_args": extra}
    text = write_reports(args.results_dir, runs, header, info)
    print(text, flush=True)
    if interrupted is not None:
        raise SystemExit(f"interrupted ({interrupted}); runs ended, reports written")
    if any(r.status == "finished" for r in runs):
        return 0
    started = [r for r in runs if r.started is not None]
    if started and all(r.status == "partial" and r.epochs_done == 0 for r in started):
        raise SystemExit(
            f"--deadline {args.deadline:g} s is shorter than one epoch: no run finished its "
            f"first epoch (startup, compilation and one epoch took longer than "
            f"{max(r.ended - r.started for r in started):.0f} s); give a longer deadline.")
    return 1


if __name__ == "__main__":
    sys.exit(main())
