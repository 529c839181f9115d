"""The README: its Use snippet runs as written, it stays short, and its catalogue
points to docs pages, anchors and module files that exist.

The snippet is read from README.md itself (the fenced ``python`` block under the
``## Use`` heading) and executed unchanged on the backend under test.
"""

import contextlib
import io
import pathlib
import re
import unicodedata

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 200


def _readme():
    return README.read_text(encoding="utf-8")


def _section(text, heading):
    """The text under ``## heading`` up to the next level-2 heading (fences respected)."""
    lines, inside, fenced, found = [], False, False, False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            if inside:
                break
            inside = line[3:].strip() == heading
            found = found or inside
            continue
        if inside:
            lines.append(line)
    assert found, f"README.md has no '## {heading}' section"
    return "\n".join(lines)


def use_snippet():
    blocks = re.findall(r"^```python\n(.*?)^```", _section(_readme(), "Use"),
                        flags=re.M | re.S)
    assert blocks, "no ```python block under '## Use' in README.md"
    return blocks[0]


def slugify(text):
    """Python-Markdown's toc slug (what MkDocs uses; GitHub's agrees on plain headings)."""
    text = re.sub(r"`([^`]*)`", r"\1", text)                       # inline code -> its text
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)            # links -> their text
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def page_anchors(page):
    """Heading anchors of a Markdown page (explicit ``{#id}`` attributes included)."""
    anchors, fenced = set(), False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        match = None if fenced else re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if match:
            title = match.group(1)
            explicit = re.search(r"\{\s*#([\w-]+)[^}]*\}\s*$", title)
            if explicit:
                anchors.add(explicit.group(1))
                title = title[:explicit.start()].strip()
            anchors.add(slugify(title))
    return anchors


def catalogue_rows():
    rows = []
    for line in _section(_readme(), "Catalogue").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 5 or set(cells[0]) <= set(":- "):
            continue
        if cells[0] == "Loss":  # header
            continue
        rows.append(cells)
    return rows


@pytest.mark.slow
def test_use_snippet_runs_and_switches_to_drw():
    import keras

    code = use_snippet()
    namespace = {"__name__": "readme_use"}
    out = io.StringIO()
    keras.utils.set_random_seed(0)
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README) + ":Use", "exec"), namespace)  # noqa: S102
    printed = out.getvalue()

    # It printed the long-tailed report: top-1 and balanced accuracy in [0, 1].
    match = re.search(r"top-1 ([0-9.]+), balanced ([0-9.]+)", printed)
    assert match, printed
    assert 0.0 <= float(match.group(1)) <= 1.0 and 0.0 <= float(match.group(2)) <= 1.0
    results = namespace["results"]
    for key in ("top1", "balanced_accuracy", "many", "medium", "few"):
        assert results[key] is not None and 0.0 <= results[key] <= 1.0, (key, results[key])
    assert len(results["per_class_accuracy"]) == len(namespace["class_counts"])

    # DRW switched the loss to class-balanced weights during fit: not all ones,
    # larger for rarer classes.
    weights = namespace["loss"].class_weights
    assert weights is not None, "DeferredReweighting never switched the class weights"
    weights = np.asarray(weights)
    counts = np.asarray(namespace["class_counts"])
    assert not np.allclose(weights, 1.0)
    assert np.all(np.diff(weights[np.argsort(-counts)]) > 0), weights
    assert namespace["drw"].second_stage is True
    keras.backend.clear_session()


def test_readme_is_short():
    lines = _readme().splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines; keep it at most {MAX_README_LINES} and move "
        f"details into docs/")


def test_catalogue_links_point_to_existing_docs_anchors_and_modules():
    rows = catalogue_rows()
    assert len(rows) >= 15, rows
    for cells in rows:
        name = re.search(r"`(\w+)`", cells[0]).group(1)
        links = re.findall(r"\]\((docs/[^)#\s]+)(?:#([^)\s]+))?\)", cells[3])
        assert links, f"catalogue row {name}: no docs link in {cells[3]!r}"
        for target, anchor in links:
            page = ROOT / target
            assert page.is_file(), f"catalogue row {name}: {target} does not exist"
            if anchor:
                assert anchor in page_anchors(page), (
                    f"catalogue row {name}: {target} has no heading for #{anchor}")
        module = re.search(r"`([\w/]+\.py)`", cells[4])
        assert module, f"catalogue row {name}: no module file in {cells[4]!r}"
        source = ROOT / module.group(1)
        assert source.is_file(), f"catalogue row {name}: {module.group(1)} does not exist"
        assert re.search(rf"^class {name}\b", source.read_text(encoding="utf-8"), flags=re.M), (
            f"catalogue row {name}: {module.group(1)} does not define class {name}")


def test_every_docs_link_in_readme_exists():
    links = re.findall(r"\]\((docs/[^)#\s]+)(?:#([^)\s]+))?\)", _readme())
    assert links
    for target, anchor in links:
        page = ROOT / target
        assert page.is_file(), f"README links to missing {target}"
        if anchor and page.suffix == ".md":
            assert anchor in page_anchors(page), f"README links to missing {target}#{anchor}"
