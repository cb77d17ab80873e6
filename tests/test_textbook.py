"""The book as a textbook: citations resolve, every chapter has a summary, a lab link and
exercises, every exercise has a solution, and the solutions stay out of the student book."""

from __future__ import annotations

import ast
import functools
import html
import json
import re
from pathlib import Path

import pytest
from pybtex.database import parse_file

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
CHAPTERS = sorted(BOOK.glob("[0-9][0-9]_*.md"))
SOLUTIONS = BOOK / "solutions.md"
HTML = ROOT / "_build" / "html"

# Papers the book relies on (issue 13): each must be in references.bib and cited by a chapter.
REQUIRED_KEYS = {"lecun1998", "lecun1989", "krizhevsky2012", "simonyan2015", "szegedy2015", "szegedy2016",
                 "he2016", "ioffe2015", "srivastava2014", "kingma2015", "yosinski2014", "karpathy2022"}
GLOSSARY_TERMS = {"stride", "padding", "dilation", "jump", "receptive field", "feature map", "equivariance",
                  "invariance", "bottleneck", "projection shortcut", "fine-tuning", "freezing", "weight decay",
                  "batch norm", "dropout"}
CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")
EXERCISE = re.compile(r"```\{exercise\}\n:label: (\S+)\n")
SOLUTION = re.compile(r"```\{solution\} (\S+)\n(.*?)\n```", re.S)


def _pages() -> list[Path]:
    return sorted(BOOK.glob("*.md"))


def _cited_keys() -> dict[str, set[str]]:
    cited: dict[str, set[str]] = {}
    for page in _pages():
        for group in CITE.findall(page.read_text()):
            for key in group.split(","):
                cited.setdefault(key.strip(), set()).add(page.name)
    return cited


def _section(text: str, heading: str) -> str:
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"no '## {heading}' section"
    return match.group(1)


INCLUDE = re.compile(r"```\{literalinclude\} (\S+)\n((?::[\w-]+:.*\n)*)")


def _pyobjects(source: str) -> set[str]:
    """Every top-level function or class of a module and every method, as Sphinx's ``:pyobject:`` names them."""
    names: set[str] = set()

    def walk(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(prefix + node.name)
                if isinstance(node, ast.ClassDef):
                    walk(node.body, f"{prefix}{node.name}.")

    walk(ast.parse(source).body, "")
    return names


def _broken_includes(pages: list[Path]) -> list[str]:
    broken = []
    for page in pages:
        for path, options in INCLUDE.findall(page.read_text()):
            target = (page.parent / path).resolve()
            obj = re.search(r"^:pyobject: (\S+)$", options, re.M)
            if not target.is_file():
                broken.append(f"{page.name}: {path} does not exist")
            elif obj and obj.group(1) not in _pyobjects(target.read_text()):
                broken.append(f"{page.name}: {path} defines no {obj.group(1)}")
    return broken


def test_every_literalinclude_names_an_existing_file_and_object():
    # Moving or renaming library code silently empties the chapter's listing until the next full book
    # build (minutes) warns; this finds it in milliseconds.
    assert not _broken_includes(_pages()), _broken_includes(_pages())


def test_include_check_can_fail(tmp_path):
    page = tmp_path / "chapter.md"
    page.write_text(f"```{{literalinclude}} {ROOT}/cnncourse/transfer.py\n:pyobject: no_such_function\n```\n"
                    f"```{{literalinclude}} {ROOT}/cnncourse/missing.py\n:pyobject: freeze\n```\n")
    assert [b.split(": ", 1)[1] for b in _broken_includes([page])] == [
        f"{ROOT}/cnncourse/transfer.py defines no no_such_function", f"{ROOT}/cnncourse/missing.py does not exist"]


def test_every_citation_resolves_and_every_entry_has_a_link():
    bib = parse_file(BOOK / "references.bib").entries
    cited = _cited_keys()
    missing = {k: sorted(v) for k, v in cited.items() if k not in bib}
    assert not missing, f"cited keys not in book/references.bib: {missing}"
    unlinked = [k for k, e in bib.items() if not ({"doi", "url"} & {f.lower() for f in e.fields})]
    assert not unlinked, f"bibliography entries without DOI or URL: {unlinked}"
    unused = sorted(set(bib) - set(cited))
    assert not unused, f"entries nobody cites (the bibliography page would omit them): {unused}"
    assert REQUIRED_KEYS <= set(cited), f"papers the book relies on but never cites: {sorted(REQUIRED_KEYS - set(cited))}"


def test_bibliography_page_is_in_the_toc():
    toc = (ROOT / "_toc.yml").read_text()
    assert "book/bibliography" in toc and "```{bibliography}" in (BOOK / "bibliography.md").read_text()
    assert "bibtex_bibfiles: [book/references.bib]" in (ROOT / "_config.yml").read_text()


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_has_summary_lab_and_exercises(chapter):
    text = chapter.read_text()
    bullets = [line for line in _section(text, "Summary").splitlines() if line.startswith("- ")]
    assert 3 <= len(bullets) <= 6, f"{chapter.name}: summary has {len(bullets)} bullets, want 3-6"
    labs = re.findall(r"\{doc\}`labs/(lab\d\d_\w+)`", _section(text, "Lab"))
    assert labs, f"{chapter.name}: the Lab section links to no lab"
    for lab in labs:
        assert (BOOK / "labs" / f"{lab}.ipynb").is_file() and (ROOT / "labs" / f"{lab}.ipynb").is_file(), lab
    exercises = EXERCISE.findall(_section(text, "Exercises"))
    assert 4 <= len(exercises) <= 8, f"{chapter.name}: {len(exercises)} exercises, want 4-8"
    assert any("*Experiment.*" in block for block in _section(text, "Exercises").split("```{exercise}")), \
        f"{chapter.name}: no experiment among the exercises"
    assert "{solution}" not in text, f"{chapter.name}: solutions belong in book/solutions.md only"


def test_every_exercise_has_exactly_one_solution():
    exercises = [label for chapter in CHAPTERS for label in EXERCISE.findall(chapter.read_text())]
    assert len(exercises) == len(set(exercises)), "duplicate exercise labels"
    solved = [label for label, _ in SOLUTION.findall(SOLUTIONS.read_text())]
    assert sorted(solved) == sorted(exercises), (
        f"without solution: {sorted(set(exercises) - set(solved))}; orphan solutions: {sorted(set(solved) - set(exercises))}")


def test_solutions_are_only_in_the_instructor_toc():
    assert "book/solutions" not in (ROOT / "_toc.yml").read_text(), "the student table of contents must not list solutions"
    assert "only_build_toc_files: true" in (ROOT / "_config.yml").read_text()
    makefile = (ROOT / "Makefile").read_text()
    instructor = makefile[makefile.index("book-instructor:"):]
    assert "file: book/solutions" in instructor and "--toc .instructor_toc.yml" in instructor


@pytest.mark.parametrize("lab", sorted((ROOT / "labs").glob("*.ipynb")), ids=lambda p: p.stem)
def test_lab_links_back_to_its_chapter(lab):
    nb = json.loads(lab.read_text())
    first_md = next(c for c in nb["cells"] if c["cell_type"] == "markdown")
    chapters = re.findall(r"\]\(\.\./(\d\d_\w+)\.md\)", "".join(first_md["source"]))
    assert chapters, f"{lab.name}: the first markdown cell links to no chapter"
    for name in chapters:
        page = BOOK / f"{name}.md"
        assert page.is_file(), f"{lab.name} links to a missing chapter {name}"
        assert f"labs/{lab.stem}" in _section(page.read_text(), "Lab"), f"{name} does not link back to {lab.name}"


def test_no_argument_with_material_readers_cannot_see():
    pattern = re.compile(r"source (slide|transcript|material)|transcript|course's source|the slides?\b", re.I)
    offenders = [f"{p.name}:{i}" for p in _pages() for i, line in enumerate(p.read_text().splitlines(), 1)
                 if pattern.search(line)]
    assert not offenders, f"the book argues with material its readers do not have: {offenders}"


def test_glossary_covers_the_core_terms_and_chapters_link_to_it():
    glossary = (BOOK / "glossary.md").read_text()
    defined = {line.strip().lower() for line in glossary.splitlines() if line and not line.startswith((" ", "`", "#"))}
    assert GLOSSARY_TERMS <= defined, f"glossary lacks {sorted(GLOSSARY_TERMS - defined)}"
    linked = {m.split("<")[-1].rstrip(">").strip().lower() for p in CHAPTERS
              for m in re.findall(r"\{term\}`([^`]+)`", p.read_text())}
    assert len(linked) >= 10, f"chapters link only {sorted(linked)} to the glossary"


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9][a-z0-9'-]*", text.lower())


def _shingles(words: list[str], n: int = 8) -> set[str]:
    """Runs of n consecutive words: a passage is identified by any of them."""
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def _solution_shingles(body: str) -> set[str]:
    """The prose of a solution: maths, inline code and indented code blocks are generic, not evidence."""
    prose = "\n".join(line for line in body.splitlines() if not line.startswith("    "))
    return _shingles(_words(re.sub(r"\$[^$\n]*\$|`[^`\n]*`", " ", prose)))


@functools.lru_cache(maxsize=1)
def _published() -> frozenset[str]:
    """Text the student book publishes on purpose (chapters, student labs, library code shown with
    literalinclude): no leak when a solution happens to repeat it."""
    sources = [p for p in _pages() if p != SOLUTIONS] + sorted((BOOK / "labs").glob("*.ipynb"))
    sources += sorted((ROOT / "cnncourse").rglob("*.py"))
    return frozenset().union(*(_shingles(_words(p.read_text())) for p in sources))


def _leaked_solutions(site_texts: list[str]) -> list[str]:
    published = _published()
    site = " ".join(" ".join(_words(t)) for t in site_texts)
    return [label for label, body in SOLUTION.findall(SOLUTIONS.read_text())
            if any(s in site for s in _solution_shingles(body) - published)]


def test_leak_check_can_fail():
    """Every solution, pasted into a page, is detected, and only that one."""
    for label, body in SOLUTION.findall(SOLUTIONS.read_text()):
        assert _leaked_solutions([html.unescape(html.escape(body))]) == [label], label
    assert _leaked_solutions(["<p>nothing to see</p>"]) == []


@pytest.mark.book
def test_student_book_contains_no_solution_text():
    assert (HTML / "index.html").is_file(), "no built book: run `make book` first"
    files = [p for p in HTML.rglob("*") if p.suffix in {".html", ".ipynb", ".md", ".txt", ".js"} and "_static" not in p.parts]
    texts = [html.unescape(re.sub(r"<[^>]+>", " ", p.read_text(errors="replace"))) for p in files]
    assert not (HTML / "book" / "solutions.html").exists()
    assert not any('class="solution' in p.read_text(errors="replace") for p in files if p.suffix == ".html")
    assert _leaked_solutions(texts) == []


@pytest.mark.book
@pytest.mark.parametrize("chapter", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_built_chapter_has_exercises_summary_and_lab_link(chapter):
    page = (HTML / "book" / f"{chapter.stem}.html").read_text()
    assert re.search(r'href="labs/lab\d\d_\w+\.html', page), f"{chapter.stem}: no link to a lab"
    assert len(re.findall(r'class="exercise admonition', page)) >= 4, f"{chapter.stem}: fewer than 4 exercises rendered"
    assert 'id="summary"' in page
