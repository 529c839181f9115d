"""The documentation site's structure, checked without building it.

``mkdocs build --strict`` (run by tools/test_all_backends.sh) renders the pages
and the docstrings; these checks are the cheap part: every page in the nav of
mkdocs.yml exists and every page is in the nav, the ``:::`` API directives name
objects that exist, relative links between pages resolve, and only the
contributing page speaks of the development data folder beside the checkout.
"""

import importlib
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CONTRIBUTING = "contributing.md"


def nav_pages():
    """The .md files listed under ``nav:`` in mkdocs.yml (plain ``- Title: page.md`` entries)."""
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = re.search(r"^nav:\s*\n((?:[ \t]+.*\n|\s*\n)+)", text, flags=re.M)
    assert nav, "mkdocs.yml has no nav"
    pages = re.findall(r"^\s*-\s*(?:[^:\n]+:\s*)?([\w./-]+\.md)\s*$", nav.group(1), flags=re.M)
    assert pages, "mkdocs.yml nav lists no pages"
    return pages


def doc_pages():
    return sorted(DOCS.rglob("*.md"))


def test_every_nav_page_exists():
    for page in nav_pages():
        assert (DOCS / page).is_file(), f"mkdocs.yml nav lists docs/{page}, which does not exist"


def test_every_page_is_in_the_nav():
    listed = set(nav_pages())
    for page in doc_pages():
        relative = page.relative_to(DOCS).as_posix()
        assert relative in listed, f"docs/{relative} is not in the nav of mkdocs.yml"


def _directives():
    for page in doc_pages():
        for name in re.findall(r"^:::\s*([\w.]+)\s*$", page.read_text(encoding="utf-8"),
                               flags=re.M):
            yield page.name, name


def _resolve(name):
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            obj = getattr(obj, attribute)
        return obj
    raise ImportError(name)


@pytest.mark.parametrize("page,name", sorted(set(_directives())))
def test_api_directives_name_existing_objects(page, name):
    try:
        _resolve(name)
    except (ImportError, AttributeError) as error:
        pytest.fail(f"docs/{page}: '::: {name}' does not resolve ({error!r}); the name moved "
                    f"or was renamed, so update the page")


def test_relative_links_between_pages_resolve():
    for page in doc_pages():
        text = page.read_text(encoding="utf-8")
        text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
        for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)\s]*)?\)", text):
            if "://" in target:
                continue
            assert (page.parent / target).is_file(), f"docs/{page.name} links to missing {target}"


def test_only_the_contributing_page_names_the_shared_folder():
    texts = {f"docs/{p.relative_to(DOCS).as_posix()}": p.read_text(encoding="utf-8")
             for p in doc_pages() if p.name != CONTRIBUTING}
    texts["README.md"] = (ROOT / "README.md").read_text(encoding="utf-8")
    for name, text in texts.items():
        assert "../shared" not in text, f"{name} names ../shared; only docs/{CONTRIBUTING} may"


FORBIDDEN = re.compile(r"\bsessions?\b|\bissue #?\d+|\blent\b|\bthis task\b|\bprevious\b|\bstop\b",
                       flags=re.I)


def test_product_text_does_not_describe_how_it_was_made():
    texts = {f"docs/{p.relative_to(DOCS).as_posix()}": p.read_text(encoding="utf-8")
             for p in doc_pages()}
    texts["README.md"] = (ROOT / "README.md").read_text(encoding="utf-8")
    for name, text in texts.items():
        found = FORBIDDEN.findall(text)
        assert not found, f"{name}: {found}"
