"""Runs the CE-versus-margin-loss quick start over seeds and backends and
tabulates what it prints (the evidence behind the gains its docstring states).

    python tools/measure_examples.py quickstart --seeds 0 1 2 \\
        --backends tensorflow jax torch --json examples/results/quickstart.json
    python tools/measure_examples.py --table examples/results/quickstart.json

Each (backend, seed) runs in a fresh process (the backend is fixed before Keras
is imported); the Markdown rows it prints are parsed and appended to the JSON
file, so an interrupted measurement keeps what finished. ``--table`` prints
mean ± std over seeds and the gain over CE, per backend, from the JSON alone.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
COMMANDS = {
    "quickstart": [sys.executable, "-m", "applications.quickstart"],  # digits-LT by default
}


def parse_rows(output):
    """``{method: {column: percent}}`` from the Markdown table a script printed."""
    rows = [line for line in output.splitlines() if line.startswith("|")]
    if len(rows) < 3:
        raise ValueError(f"no results table in the output:\n{output[-2000:]}")
    header = [cell.strip().lower() for cell in rows[0].strip("|").split("|")]
    table = {}
    for row in rows[2:]:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        values = {}
        for name, cell in zip(header[1:], cells[1:]):
            try:
                values[name] = float(cell)
            except ValueError:
                values[name] = None
        table[cells[0]] = values
    return table


def run_one(script, backend, seed, extra):
    env = dict(os.environ, KERAS_BACKEND=backend)
    command = COMMANDS[script] + ["--seed", str(seed)] + list(extra)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} on {backend} failed:\n{done.stderr[-3000:]}")
    return {"script": script, "backend": backend, "seed": seed, "argv": command[1:],
            "seconds": time.perf_counter() - start, "results": parse_rows(done.stdout)}


def _top1_key(values):
    return "all" if "all" in values else "top-1"


def table(records):
    """Markdown: per backend and method, mean ± std top-1 over seeds and gain over CE."""
    lines = ["| Script | Backend | Method | Seeds | Top-1 % | Gain over CE (points) |",
             "|:--|:--|:--|--:|--:|--:|"]
    groups = {}
    for record in records:
        for method, values in record["results"].items():
            key = (record["script"], record["backend"], method)
            groups.setdefault(key, {})[record["seed"]] = values[_top1_key(values)]
    for (script, backend, method), by_seed in sorted(groups.items()):
        ce = groups.get((script, backend, "CE"), {})
        gains = [by_seed[s] - ce[s] for s in by_seed if s in ce]
        top1 = list(by_seed.values())

        def fmt(values, sign=""):
            if not values:
                return "–"
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{statistics.mean(values):{sign}.1f} ± {spread:.1f}"
        gain = ("–" if method == "CE" or not gains
                else fmt(gains, "+") + f" (min {min(gains):+.1f})")
        lines.append(f"| {script} | {backend} | {method} | {len(top1)} | {fmt(top1)} | {gain} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("script", nargs="?", choices=sorted(COMMANDS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax", "torch"])
    parser.add_argument("--json", type=pathlib.Path, help="append the runs to this file")
    parser.add_argument("--table", type=pathlib.Path, help="print the table of a JSON file")
    args, extra = parser.parse_known_args(argv)
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return 0
    if args.script is None:
        parser.error("name a script to measure, or pass --table FILE")
    records = json.loads(args.json.read_text()) if args.json and args.json.exists() else []
    for backend in args.backends:
        for seed in args.seeds:
            record = run_one(args.script, backend, seed, extra)
            records.append(record)
            print(json.dumps({k: record[k] for k in ("backend", "seed", "results")}),
                  flush=True)
            if args.json:
                args.json.write_text(json.dumps(records, indent=1))
    print(table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
