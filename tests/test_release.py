import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from cnncourse.grading.release import (MarkerError, ReleaseConflictError, SOLUTION_PATTERN, edited_notebooks, release,
                                       selfcheck_cell_source, student_version)
from cnncourse.grading.scan import scan_notebook

ROOT = Path(__file__).resolve().parents[1]
LABS = sorted((ROOT / "labs").glob("*.ipynb"))


def _secret_and_public_lines(nb):
    """Stripped lines inside solution/hidden regions, and the lines outside them."""
    secret, public = [], set()
    for cell in nb.cells:
        inside = False
        for line in cell.source.splitlines():
            if SOLUTION_PATTERN.search(line):
                inside = "BEGIN" in line
            elif inside:
                secret.append(line.strip())
            else:
                public.add(line.strip())
    return secret, public


@pytest.mark.parametrize("lab", LABS, ids=[p.name for p in LABS])
def test_student_version_has_no_solution_or_hidden_text(lab, tmp_path):
    source = nbformat.read(lab, as_version=4)
    [out] = release([lab], tmp_path)
    student = out.read_text()
    assert out.name == lab.name
    assert "BEGIN SOLUTION" not in student and "HIDDEN TESTS" not in student
    secret, public = _secret_and_public_lines(source)
    # A short line such as `return out` may also appear in public code; only lines that
    # exist solely inside secret regions count as leaks.
    student_lines = {line.strip() for c in nbformat.read(out, as_version=4).cells for line in c.source.splitlines()}
    leaked = {line for line in secret if len(line) > 12 and line not in public and line in student_lines}
    assert not leaked, f"solution/hidden text leaked into {lab.name}: {sorted(leaked)[:3]}"
    nb = nbformat.read(out, as_version=4)
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")
    assert sum("raise NotImplementedError()" in c.source for c in nb.cells) >= 2
    # The page opens with its title, then the install cell (Colab), then the Settings cell.
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), f"{lab.name}: no title first"
    assert "install" in nb.cells[1].metadata.get("tags", []), f"{lab.name}: the install cell must follow the title"
    tags = nb.cells[2].metadata.get("tags", [])
    assert "parameters" in tags, f"{lab.name}: the Settings cell after the title must be tagged 'parameters'"
    # ... and ends with the self-check (nbgrader's Validate), naming its own file, which the grader neither
    # runs nor flags; the notebook's metadata lists the graded questions and their points.
    assert nb.cells[-1].source == selfcheck_cell_source(lab.name), f"{lab.name}: the self-check cell must come last"
    assert "selfcheck" in nb.cells[-1].metadata.get("tags", []) and nb.cells[-2].cell_type == "markdown"
    graded = [(c.metadata["nbgrader"]["grade_id"], c.metadata["nbgrader"]["points"]) for c in source.cells
              if c.metadata.get("nbgrader", {}).get("grade")]
    assert [(q["grade_id"], q["points"]) for q in nb.metadata["cnncourse"]["questions"]] == graded
    assert not [f for f in scan_notebook(nb) if f"cell {len(nb.cells) - 1}," in f]


@pytest.mark.parametrize("lab", LABS, ids=[p.name for p in LABS])
def test_graded_cells_carry_nbgrader_metadata(lab):
    nb = nbformat.read(lab, as_version=4)
    graded = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert graded, f"{lab.name} has no graded cells"
    ids = [c.metadata["nbgrader"]["grade_id"] for c in nb.cells if "nbgrader" in c.metadata]
    assert len(ids) == len(set(ids)), "grade_ids must be unique"
    for c in graded:
        meta = c.metadata["nbgrader"]
        assert {"grade", "solution", "locked", "grade_id", "points", "schema_version"} <= set(meta)
        assert meta["points"] > 0 and meta["locked"] is True


def _nb(*sources):
    return new_notebook(cells=[new_code_cell(s) for s in sources])


def test_stub_keeps_indentation_and_code_outside():
    nb = _nb("def f(x):\n    y = 1\n    ### BEGIN SOLUTION\n    return x + y\n    ### END SOLUTION\n")
    out = student_version(nb)
    assert out.cells[0].source == "def f(x):\n    y = 1\n    # YOUR CODE HERE\n    raise NotImplementedError()"
    assert "return x + y" in nb.cells[0].source  # the source notebook is not modified


def test_hidden_tests_removed_and_markdown_stubbed():
    nb = _nb("assert f(1) == 2\n### BEGIN HIDDEN TESTS\nassert f(2) == 3\n### END HIDDEN TESTS\nprint('ok')")
    nb.cells.append(new_markdown_cell("Why?\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION"))
    out = student_version(nb)
    assert out.cells[0].source == "assert f(1) == 2\nprint('ok')"
    assert out.cells[1].source == "Why?\nYOUR ANSWER HERE"


@pytest.mark.parametrize("source,message", [
    ("### BEGIN SOLUTION\nx = 1\n", r"cell 1, line 1: '### BEGIN SOLUTION' is never closed"),
    ("x = 1\n### END SOLUTION\n", r"cell 1, line 2: unbalanced '### END SOLUTION'"),
    ("### BEGIN SOLUTION\n### BEGIN HIDDEN TESTS\n", r"cell 1, line 2: '### BEGIN HIDDEN TESTS' inside an open"),
    ("### BEGIN HIDDEN TESTS\n### END SOLUTION\n", r"expected '### END HIDDEN TESTS'"),
    ("x = 1  ### BEGIN SOLUTION\n", r"a marker must stand alone on its line"),
])
def test_unbalanced_markers_refused_with_cell_number(tmp_path, source, message):
    nb = _nb("ok = True", source)
    path = tmp_path / "bad.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(MarkerError, match=message):
        release([path], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written when any notebook is bad


def test_assign_cli_releases_a_folder(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cnncourse", "assign", str(ROOT / "labs"), "--out", str(tmp_path)],
                          capture_output=True, text=True, check=True)
    assert sorted(p.name for p in tmp_path.glob("*.ipynb")) == [p.name for p in LABS]
    assert "released" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "cnncourse", "assign", str(tmp_path / "none.txt"), "--out",
                          str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2 and "expected a notebook" in bad.stderr
    json.loads((tmp_path / LABS[0].name).read_text())  # valid JSON


def test_release_never_overwrites_a_notebook_edited_since_its_release(tmp_path):
    """A student's answers in the output folder survive `make labs` (and `make clean` keeps them, via edited_notebooks)."""
    lab = ROOT / "labs" / "lab00_tensors.ipynb"
    [out] = release([lab], tmp_path)
    assert edited_notebooks(tmp_path) == []
    assert release([lab], tmp_path) == [out]  # unchanged since its release: replaced
    nb = nbformat.read(out, as_version=4)
    nb.cells[3].source += "\nmy_answer = 42"
    nb.cells[3].outputs = []
    nbformat.write(nb, out)
    answered = out.read_bytes()
    assert edited_notebooks(tmp_path) == [out]
    with pytest.raises(ReleaseConflictError, match=r"got 1 changed since their release.*lab00_tensors.ipynb"):
        release([lab], tmp_path)
    assert out.read_bytes() == answered
    cli = subprocess.run([sys.executable, "-m", "cnncourse", "assign", str(lab), "--out", str(tmp_path)],
                         capture_output=True, text=True)
    assert cli.returncode == 2 and "--force" in cli.stderr and out.read_bytes() == answered
    release([lab], tmp_path, force=True)
    assert edited_notebooks(tmp_path) == []
    (tmp_path / "old.ipynb").write_text("{}")  # unreadable or released before the checksum existed: kept
    assert edited_notebooks(tmp_path) == [tmp_path / "old.ipynb"]


def test_make_clean_keeps_a_release_folder_with_edited_notebooks(tmp_path):
    """`make clean` deletes release/ only when nothing in it was edited since its release."""
    import os
    import shutil

    if shutil.which("make") is None:
        pytest.skip("needs make")
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parents[1])  # the Makefile runs .venv/bin/python
    [out] = release([ROOT / "labs" / "lab00_tensors.ipynb"], tmp_path / "release")
    nb = nbformat.read(out, as_version=4)
    nb.cells[3].source += "\nmy_answer = 42"
    nbformat.write(nb, out)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    kept = subprocess.run(["make", "clean"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert kept.returncode == 0 and out.is_file() and "kept release/" in kept.stdout, kept.stdout + kept.stderr
    # (An unedited release/ is deleted: edited_notebooks() is then empty, see the test above; one make run suffices.)


def test_committed_student_labs_are_up_to_date():
    """book/labs/ holds the released labs (the book's launch buttons point there); regenerate with `make book-labs`."""
    published = ROOT / "book" / "labs"
    assert sorted(p.name for p in published.glob("*.ipynb")) == [p.name for p in LABS], \
        "book/labs/ and labs/ list different notebooks: run `make book-labs`"
    for lab in LABS:
        expected = nbformat.writes(student_version(nbformat.read(lab, as_version=4), lab)) + "\n"
        assert (published / lab.name).read_text() == expected, f"book/labs/{lab.name} is stale: run `make book-labs`"


def _run_install_cell(monkeypatch, importable: bool) -> list:
    import importlib.util
    import subprocess

    nb = student_version(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Lab")]))
    [cell] = [c for c in nb.cells if "install" in c.metadata.get("tags", [])]
    calls = []
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (real_find_spec(name) if importable else None) if name == "cnncourse"
                        else real_find_spec(name, *a))
    monkeypatch.setattr(subprocess, "check_call", lambda cmd, *a, **k: calls.append(cmd))
    exec(compile(cell.source, "<install cell>", "exec"), {})
    return calls


def test_install_cell_does_nothing_where_cnncourse_imports(monkeypatch):
    assert _run_install_cell(monkeypatch, importable=True) == []


def test_install_cell_installs_the_pinned_release_where_cnncourse_is_missing(monkeypatch):
    import sys

    from cnncourse import __version__

    assert _run_install_cell(monkeypatch, importable=False) == [
        [sys.executable, "-m", "pip", "install", "--quiet",
         f"cnncourse @ git+https://github.com/cnncourse/cnncourse@v{__version__}"]]
