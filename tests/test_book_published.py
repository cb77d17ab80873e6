"""The published book carries the student labs only: no solution and no hidden-test text."""

import html
import re
from pathlib import Path

import nbformat
import pytest

from tests.test_release import _secret_and_public_lines

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
LABS = sorted((ROOT / "labs").glob("*.ipynb"))
pytestmark = pytest.mark.book


def _site_text():
    assert (HTML / "index.html").is_file(), "no built book: run `make book` first"
    files = [p for p in HTML.rglob("*") if p.suffix in {".html", ".ipynb", ".md", ".txt", ".js"}
             and "_static" not in p.parts]
    return {p: p.read_text(errors="replace") for p in files}


def test_no_solution_or_hidden_test_text_in_site():
    site = _site_text()
    for path, text in site.items():
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text, path
    # Highlighted code is split into <span>s: compare whole lines of the tag-stripped text.
    lines = {line.strip() for text in site.values()
             for line in html.unescape(re.sub(r"<[^>]+>", "", text)).splitlines()}
    lines |= {line.strip().strip('",').replace('\\n', '') for p, text in site.items() if p.suffix == ".ipynb"
              for line in text.splitlines()}
    # Lines the book publishes on purpose: the library's code (shown with literalinclude), the
    # chapters' own sources and every lab's public cells. A generic line such as
    # `def forward(self, x):` in a solution is no leak when a chapter has it too.
    published = {line.strip() for p in (ROOT / "cnncourse").rglob("*.py") for line in p.read_text().splitlines()}
    published |= {line.strip() for p in (ROOT / "book").glob("*.md") for line in p.read_text().splitlines()}
    labs = {lab: _secret_and_public_lines(nbformat.read(lab, as_version=4)) for lab in LABS}
    for _, public in labs.values():
        published |= public
    for lab, (secret, _) in labs.items():
        leaked = {s for s in secret if len(s) > 12 and s not in published and s in lines}
        assert not leaked, f"{lab.name}: solution/hidden text in the built site: {sorted(leaked)[:3]}"


@pytest.mark.parametrize("lab", LABS, ids=[p.name for p in LABS])
def test_student_lab_is_published_with_download(lab):
    page = HTML / "book" / "labs" / f"{lab.stem}.html"
    assert page.is_file(), f"{page} missing: the book must publish every lab's student version"
    html = page.read_text()
    assert "NotImplementedError" in html
    assert f"{lab.stem}.ipynb" in html, "the page must offer the notebook for download"
