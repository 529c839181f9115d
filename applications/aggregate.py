"""Aggregates run folders into the papers' table: mean ± std over seeds.

    python -m applications.aggregate results/                       # every run
    python -m applications.aggregate results/fashion-mnist-lt-exp100-e10 \\
        --columns many medium few all --output RESULTS_fmnist.md

Runs are grouped by (dataset, ratio, profile, epochs, recipe, backend) from
their config.json; each group's report.json files (last-epoch
``evaluate_long_tailed`` results) are aggregated with
``keras_margins.evaluation.aggregate_seeds`` (sample standard deviation) and
formatted with ``markdown_table``. Smoke runs are left out unless
``--include-smoke``. Also prints the difference of each method's top-1 to CE
of the same setting.
"""

import argparse
import json
import pathlib
import sys

__all__ = ["collect_runs", "run_label", "aggregate_runs", "format_tables", "paper_table",
           "main"]

KEYS = ("top1", "many", "medium", "few", "balanced_accuracy")


def collect_runs(root, include_smoke=False, recipes=None):
    """``[(config, report)]`` of every run folder under ``root`` (only the
    ``recipes`` given, if any)."""
    runs = []
    for config_path in sorted(pathlib.Path(root).rglob("config.json")):
        report_path = config_path.with_name("report.json")
        if not report_path.exists():
            continue
        config = json.loads(config_path.read_text())
        if config.get("smoke") and not include_smoke:
            continue
        if recipes and config["recipe"] not in recipes:
            continue
        runs.append((config, json.loads(report_path.read_text())))
    return runs


def _setting(config):
    return (config["dataset"], config["imbalance_ratio"], config["profile"], config["epochs"],
            config.get("model"), config.get("backend"))


def run_label(config):
    """The row name: the recipe, plus any ``--loss-arg`` overrides, a non-default
    zero-centroid weight, the device pipeline, a dtype policy other than float32
    and the ``--tag`` (unless it repeats one of these), so variants of a recipe
    stay apart."""
    extras = [f"{key}={value}" for key, value in sorted(config.get("loss_args", {}).items())]
    weight = config.get("zero_centroid_weight")
    if weight is not None and weight != 1.0:
        extras.append(f"zc={weight:g}")
    if config.get("pipeline") == "device":
        extras.append("device")
    if config.get("dtype_policy") not in (None, "float32"):
        extras.append(str(config["dtype_policy"]))
    if config.get("tag") and str(config["tag"]) not in extras:
        extras.append(str(config["tag"]))
    return config["recipe"] + (f" [{', '.join(extras)}]" if extras else "")


def aggregate_runs(runs, columns=("many", "medium", "few", "all"), digits=1):
    """``{setting: (markdown table, {recipe: aggregate})}``; recipes keep the
    order of first appearance with ``ce`` first."""
    from keras_margins.reporting import aggregate_seeds, markdown_table
    groups = {}
    for config, report in runs:
        scalars = {k: report.get(k) for k in KEYS}
        groups.setdefault(_setting(config), {}).setdefault(run_label(config), {})[
            config["seed"]] = scalars
    tables = {}
    for setting, recipes in groups.items():
        order = sorted(recipes, key=lambda name: (name != "ce",))
        aggregates = {}
        for name in order:
            seeds = sorted(recipes[name])
            aggregate = aggregate_seeds([recipes[name][s] for s in seeds])
            aggregate["seeds"] = seeds
            aggregates[name] = aggregate
        rows = [(f"{name} (n={len(aggregates[name]['seeds'])})", aggregates[name])
                for name in order]
        tables[setting] = (markdown_table(rows, columns=columns, digits=digits), aggregates)
    return tables


def _baseline(name, aggregates):
    """``(row, mean top-1)`` of the CE row a row is compared with: CE of the same
    variant (``ce [device]`` for ``ldam-drw [device]``) where there is one, else
    plain ``ce``; ``(None, None)`` for a CE row itself (top-1 None where that
    row is missing)."""
    recipe, _, variant = name.partition(" [")
    if recipe == "ce":
        return None, None
    same = f"ce [{variant}" if variant else "ce"
    baseline = same if same in aggregates else "ce"
    return baseline, _mean(aggregates.get(baseline, {}).get("top1"))


def _mean(value):
    if value is None:
        return None
    return value["mean"] if isinstance(value, dict) else float(value)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m applications.aggregate",
                                     description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", nargs="+", type=pathlib.Path,
                        help="results folders to search for run folders")
    parser.add_argument("--columns", nargs="+", default=["many", "medium", "few", "all"],
                        help="report keys per column ('all' = top-1)")
    parser.add_argument("--digits", type=int, default=1)
    parser.add_argument("--include-smoke", action="store_true")
    parser.add_argument("--recipes", nargs="+", help="only these recipes (default: all)")
    parser.add_argument("--output", type=pathlib.Path, help="also write the Markdown here")
    parser.add_argument("--json", type=pathlib.Path, help="write the aggregates as JSON")
    parser.add_argument("--paper-table", action="store_true",
                        help="only the CIFAR-10-LT table beside the papers' numbers "
                             "(the README's)")
    args = parser.parse_args(argv)
    runs = [run for root in args.roots
            for run in collect_runs(root, args.include_smoke, args.recipes)]
    if not runs:
        print(f"No finished runs (config.json + report.json) under {args.roots}.",
              file=sys.stderr)
        return 1
    tables = aggregate_runs(runs, tuple(args.columns), args.digits)
    output, dump = format_tables(tables, paper_only=args.paper_table)
    if not output:
        print("No CIFAR-10-LT (exp, ratio 100) runs to set beside the papers.",
              file=sys.stderr)
        return 1
    print(output)
    if args.output:
        args.output.write_text(output + "\n")
    if args.json:
        args.json.write_text(json.dumps(dump, indent=2))
    return 0


def format_tables(tables, paper_only=False):
    """``(markdown, json_dump)`` of ``aggregate_runs``' tables: a heading per
    setting, its table and each method's top-1 difference to CE; with
    ``paper_only`` just the CIFAR-10-LT tables beside the papers (``paper_table``)."""
    text, dump = [], {}
    for setting, (table, aggregates) in tables.items():
        dataset, ratio, profile, epochs, model, backend = setting
        if paper_only:
            if (dataset, ratio, profile) == ("cifar10-lt", 100, "exp"):
                text.append(paper_table(aggregates, epochs))
                dump[" / ".join(map(str, setting))] = aggregates
            continue
        text.append(f"### {dataset}, {profile} ratio {ratio:g}, {model}, {epochs} epochs "
                    f"({backend}); top-1 %, mean ± std over seeds, last epoch\n")
        text.append(table)
        deltas = []
        for name, aggregate in aggregates.items():
            baseline, base = _baseline(name, aggregates)
            if base is not None and _mean(aggregate.get("top1")) is not None:
                vs = "" if baseline == "ce" else f" (vs {baseline})"
                deltas.append(f"{name} {100 * (_mean(aggregate['top1']) - base):+.1f}{vs}")
        if deltas:
            text.append("\nTop-1 vs CE (points): " + ", ".join(deltas))
        if (dataset, ratio, profile) == ("cifar10-lt", 100, "exp"):
            text += ["", paper_table(aggregates, epochs)]
        text.append("")
        dump[" / ".join(map(str, setting))] = aggregates
    return "\n".join(text), dump


def paper_table(aggregates, epochs):
    """Markdown: each recipe's top-1 and gain over CE beside the published
    200-epoch numbers (``applications.recipes.PAPER_CIFAR10_LT``)."""
    from applications.recipes import PAPER_CIFAR10_LT
    paper_base = PAPER_CIFAR10_LT["ce"][0]
    lines = [f"| Recipe | Top-1 % ({epochs} epochs) | Gain over CE | Paper top-1 % (200 "
             f"epochs) | Paper gain over CE | Paper |", "|:--|--:|--:|--:|--:|:--|"]
    for name, aggregate in aggregates.items():
        top1 = _mean(aggregate.get("top1"))
        ours = "–" if top1 is None else f"{100 * top1:.1f}"
        baseline, base = _baseline(name, aggregates)
        gain = "–" if top1 is None or base is None else f"{100 * (top1 - base):+.1f}"
        paper, source = PAPER_CIFAR10_LT.get(name.split(" [")[0], (None, "–"))
        paper_text = "–" if paper is None else f"{paper:.1f}"
        paper_gain = ("–" if paper is None or baseline is None
                      else f"{paper - paper_base:+.1f}")
        lines.append(f"| {name} | {ours} | {gain} | {paper_text} | {paper_gain} | {source} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
