"""Seed aggregation and Markdown tables of long-tailed evaluation reports.

``aggregate_seeds`` turns the reports of runs over several seeds into mean and
standard deviation; ``markdown_table`` formats reports (or aggregates) in the
papers' layout ``Method | Many | Medium | Few | All``. Both take the dicts of
``keras_margins.evaluation.evaluate_long_tailed``.
"""

import numbers

import numpy as np

from keras_margins.groups import SHOT_GROUPS

__all__ = ["aggregate_seeds", "markdown_table"]

# Keys whose values are fractions in [0, 1] (shown as percentages in tables).
_FRACTION_KEYS = {"top1", "top3", "top5", "all", "many", "medium", "few",
                  "balanced_accuracy", "ece", "per_class_accuracy"}
_COLUMN_KEYS = {"all": "top1"}
_HEADERS = {"many": "Many", "medium": "Medium", "few": "Few", "all": "All", "top1": "Top-1",
            "top3": "Top-3", "top5": "Top-5", "balanced_accuracy": "Balanced", "ece": "ECE",
            "class_margin": "Class margin"}
_EMPTY = "–"
_MARKS = "¹²³⁴⁵⁶⁷⁸⁹"


def _aggregate(values, ddof, path):
    present = [v for v in values if v is not None]
    if not present:
        return None
    first = present[0]
    if isinstance(first, dict):
        keys = set(first)
        for value in present[1:]:
            if not isinstance(value, dict) or set(value) != keys:
                other = sorted(value) if isinstance(value, dict) else repr(value)
                raise ValueError(f"Results differ in structure at {path or 'top level'}: "
                                 f"keys {sorted(keys)} vs {other}.")
        return {k: _aggregate([v[k] if v is not None else None for v in values], ddof,
                              f"{path}.{k}" if path else k) for k in first}
    if isinstance(first, (list, tuple)):
        if any(not isinstance(v, (list, tuple)) or len(v) != len(first) for v in present):
            raise ValueError(f"Results differ in length at {path}: "
                             f"{[len(v) if isinstance(v, (list, tuple)) else v for v in present]}.")
        return [_aggregate([v[i] if v is not None else None for v in values], ddof,
                           f"{path}[{i}]") for i in range(len(first))]
    if isinstance(first, bool) or not isinstance(first, numbers.Real):
        if any(v != first for v in present):
            raise ValueError(f"Results differ at {path}: {present!r}.")
        return first
    if isinstance(first, numbers.Integral) and all(v == first for v in present):
        return first  # counts, sizes, class indices
    array = np.asarray(present, dtype=np.float64)
    std = float(np.std(array, ddof=ddof)) if array.size > ddof else 0.0
    return {"mean": float(np.mean(array)), "std": std, "n": int(array.size)}


def aggregate_seeds(results, ddof=1):
    """Mean and standard deviation over runs (seeds) of ``evaluate_long_tailed`` dicts.

    Every float becomes ``{"mean", "std", "n"}`` (``std`` with ``ddof``, 1 = the
    sample standard deviation; 0.0 for a single run); lists are aggregated
    element-wise; integers equal in every run (sample counts, class indices)
    are kept. ``None`` entries are skipped (``n`` counts the others) and an
    entry that is ``None`` in every run stays ``None``. The result is JSON-
    serialisable and accepted by ``markdown_table``.

    Raises:
        ValueError: an empty list, or results of different structure.
    """
    results = list(results)
    if not results:
        raise ValueError("`results` is empty: nothing to aggregate.")
    if not all(isinstance(r, dict) for r in results):
        raise ValueError("`results` must be a list of dicts from evaluate_long_tailed.")
    return _aggregate(results, int(ddof), "")


def _format_cell(value, scale, digits):
    if value is None:
        return _EMPTY
    if isinstance(value, dict):
        mean, std = value.get("mean"), value.get("std")
        if mean is None:
            return _EMPTY
        return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"
    return f"{float(value) * scale:.{digits}f}"


def _undefined_reason(result, key):
    """Why the shot-group cell ``key`` of ``result`` is empty (from the report's
    ``group_descriptions``), or None when the result does not say."""
    if key not in SHOT_GROUPS:
        return None
    descriptions = result.get("group_descriptions")
    if not isinstance(descriptions, dict) or not isinstance(descriptions.get(key), dict):
        return None
    reason = descriptions[key].get("reason")
    return reason if isinstance(reason, str) else None


def _mark(index):
    digits = str(index + 1)
    return "".join(_MARKS[int(d) - 1] if d != "0" else "⁰" for d in digits)


def markdown_table(results, columns=("many", "medium", "few", "all"), percent=True,
                   digits=1, method_header="Method"):
    """A Markdown table in the papers' format: ``Method | Many | Medium | Few | All``.

    Args:
        results: ``{method: result}`` (or a list of ``(method, result)`` pairs),
            each result from ``evaluate_long_tailed`` or ``aggregate_seeds``
            (cells then read ``mean ± std``).
        columns: result keys; ``"all"`` is top-1 accuracy. Other keys such as
            ``"balanced_accuracy"``, ``"top5"``, ``"ece"`` or ``"class_margin"``
            work too.
        percent: show accuracies and ECE in percent (degrees stay degrees).
        digits: decimals.

    Returns:
        the table as a string. Undefined cells are "–". When the result says
        why a shot group is undefined (``group_descriptions``, e.g. "no class
        has fewer than 20 training images"), the cell carries a mark ("–¹")
        and the reason follows the table as a footnote.

    Example output::

        | Method   | Many | Medium | Few  | All  |
        |:---------|-----:|-------:|-----:|-----:|
        | CE       | 87.2 | 60.1   | –¹   | 70.4 |
        | LDAM-DRW | 85.9 | 72.3   | –¹   | 77.0 |

        ¹ Few: no class has fewer than 20 training images.
    """
    pairs = list(results.items()) if isinstance(results, dict) else list(results)
    if not pairs:
        raise ValueError("`results` is empty: nothing to tabulate.")
    headers = [method_header] + [_HEADERS.get(c, c) for c in columns]
    rows, notes = [], {}
    for method, result in pairs:
        if not isinstance(result, dict):
            raise ValueError(f"The result of {method!r} must be a dict, received "
                             f"{type(result).__name__}.")
        cells = [str(method)]
        for column in columns:
            key = _COLUMN_KEYS.get(column, column)
            if key not in result:
                raise ValueError(f"Column {column!r} (key {key!r}) is missing from the result "
                                 f"of {method!r}; available: {sorted(result)}.")
            scale = 100.0 if percent and key in _FRACTION_KEYS else 1.0
            cell = _format_cell(result[key], scale, digits)
            reason = _undefined_reason(result, key) if cell == _EMPTY else None
            if reason is not None:
                note = f"{_HEADERS.get(column, column)}: {reason}."
                cell += _mark(notes.setdefault(note, len(notes)))
            cells.append(cell)
        rows.append(cells)
    widths = [max(len(headers[i]), *(len(row[i]) for row in rows)) for i in range(len(headers))]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    rule = "|" + "|".join(":" + "-" * (widths[0] + 1) if i == 0 else "-" * (w + 1) + ":"
                          for i, w in enumerate(widths)) + "|"
    table = [line(headers), rule] + [line(row) for row in rows]
    if notes:
        table += [""] + [f"{_mark(index)} {note}" for note, index in notes.items()]
    return "\n".join(table)
