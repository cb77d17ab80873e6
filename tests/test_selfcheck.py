"""The student's self-check (`python -m cnncourse check`): public tests only, the grader's table, Validate's verdict."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from cnncourse.grading.autograde import plan
from cnncourse.grading.release import (
    BEGIN_HIDDEN,
    END_HIDDEN,
    is_selfcheck_cell,
    release,
    selfcheck_cell_source,
    student_version,
)
from cnncourse.grading.report import questions_table
from cnncourse.grading.selfcheck import SelfCheck, SelfCheckError, check, questions, report_text, self_check

ROOT = Path(__file__).resolve().parents[1]
LAB00 = ROOT / "labs" / "lab00_tensors.ipynb"


def _solved(source: nbformat.NotebookNode, name: str, **wrong: str) -> nbformat.NotebookNode:
    """The student release of ``source`` with the reference solutions filled in (``wrong[grade_id]`` instead)."""
    out = student_version(source, name)
    solutions = {c.metadata["nbgrader"]["grade_id"]: c.source for c in source.cells
                 if c.metadata.get("nbgrader", {}).get("solution")}
    for cell in out.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in solutions:
            cell.source = wrong.get(gid) or "\n".join(
                line for line in solutions[gid].splitlines() if "### BEGIN SOLUTION" not in line
                and "### END SOLUTION" not in line)
    return out


def _cell(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _hidden_lines() -> set[str]:
    lines, inside = set(), False
    for cell in nbformat.read(LAB00, as_version=4).cells:
        for line in cell.source.splitlines():
            if line.strip() in (BEGIN_HIDDEN, END_HIDDEN):
                inside = line.strip() == BEGIN_HIDDEN
            elif inside and len(line.strip()) > 12:
                lines.add(line.strip())
    return lines


def test_release_ends_with_the_selfcheck_cell_and_records_the_questions(tmp_path):
    [out] = release([LAB00], tmp_path)
    nb = nbformat.read(out, as_version=4)
    last = nb.cells[-1]
    assert last.source == selfcheck_cell_source("lab00_tensors.ipynb") and is_selfcheck_cell(last)
    assert "SAVE this notebook first" in last.source and "Save the notebook" in nb.cells[-2].source
    qs, ids = questions(nb)
    assert [(q.grade_id, q.points) for q in qs] == [("test_to_nchw", 2.0), ("test_normalize", 2.0)]
    assert ids == ["to_nchw", "test_to_nchw", "normalize", "test_normalize"]
    # The grader never runs the self-check cell (a submission keeps it), but does run an edited one.
    from cnncourse.grading.autograde import load_lab

    steps, _ = plan(load_lab(LAB00), nb)
    assert all(item[1] != last.source for kind, item in steps if kind == "student")
    assert not is_selfcheck_cell({"source": last.source + "\nprint('x')"})
    assert not is_selfcheck_cell({"source": selfcheck_cell_source("other.ipynb").replace("self_check", "exec")})


def test_missing_corrupt_and_ungraded_notebooks_get_clear_errors(tmp_path):
    missing = subprocess.run([sys.executable, "-m", "cnncourse", "check", str(tmp_path / "nowhere.ipynb")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no notebook at" in missing.stderr and "nowhere.ipynb" in missing.stderr
    assert "Traceback" not in missing.stderr and "Running" not in missing.stderr
    for name, text in (("bad.ipynb", "{ not json"), ("empty.ipynb", ""), ("nocells.ipynb", '{"nbformat": 4}')):
        (tmp_path / name).write_text(text)
        with pytest.raises(SelfCheckError, match=f"{name}: not a readable notebook"):
            check(tmp_path / name)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), tmp_path / "plain.ipynb")
    with pytest.raises(SelfCheckError, match="expected a released lab with graded test cells"):
        check(tmp_path / "plain.ipynb")
    with pytest.raises(SelfCheckError, match="expected a notebook file"):
        check(tmp_path)


def test_in_colab_the_selfcheck_cell_says_what_to_run_instead(tmp_path):
    """Colab's kernel runs in /content, where no copy of the notebook exists: the released cell must not raise.

    A fresh Python runs the cell's exact source in an empty folder, with a stand-in ``google.colab``
    package imported first (how the cell detects Colab).
    """
    (tmp_path / "stub" / "google" / "colab").mkdir(parents=True)
    (tmp_path / "stub" / "google" / "colab" / "__init__.py").write_text("")
    (tmp_path / "content").mkdir()
    cell = selfcheck_cell_source("lab00_tensors.ipynb")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "stub"), str(ROOT)])}
    run = subprocess.run([sys.executable, "-c", f"import google.colab\n{cell}\nassert result is None"],
                         cwd=tmp_path / "content", env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "in Colab this kernel cannot read your notebook" in run.stdout and "Download .ipynb" in run.stdout
    assert "python -m cnncourse check lab00_tensors.ipynb" in run.stdout and "Traceback" not in run.stderr
    # Outside Colab, a missing (renamed, unsaved) notebook gets its own advice, and no traceback either.
    out = io.StringIO()
    assert self_check(tmp_path / "renamed.ipynb", stream=out, colab=False) is None
    assert "no saved notebook" in out.getvalue() and "self_check('your-name.ipynb')" in out.getvalue()
    (tmp_path / "bad.ipynb").write_text("{ not json")
    assert self_check(tmp_path / "bad.ipynb", stream=out, colab=False) is None
    assert "The self-check cannot run: " in out.getvalue() and "not a readable notebook" in out.getvalue()


def test_deleted_test_cells_are_reported_missing_without_running(tmp_path):
    nb = student_version(nbformat.read(LAB00, as_version=4), LAB00)
    nb.cells = [c for c in nb.cells if not c.metadata.get("nbgrader", {}).get("grade")]
    nbformat.write(nb, tmp_path / "lab00_tensors.ipynb")
    result = check(tmp_path / "lab00_tensors.ipynb")
    assert result.missing == ["test_to_nchw", "test_normalize"] and not result.ok
    assert "SELF-CHECK FAILED ON 2 QUESTION(S)" in report_text(result)


@pytest.mark.timeout(300)
def test_cli_runs_the_public_tests_and_prints_the_graders_table(tmp_path):
    """One kernel run: a pass with an edited test cell, a wrong answer, a question with only hidden tests."""
    source = nbformat.read(LAB00, as_version=4)
    extra = nbformat.v4.new_code_cell(f"{BEGIN_HIDDEN}\nassert to_nchw(torch.zeros(1, 2, 3, 4)).shape == (1, 4, 2, 3)"
                                      f"\n{END_HIDDEN}", metadata={"nbgrader": {
                                          "grade": True, "grade_id": "test_extra", "locked": True, "points": 1,
                                          "schema_version": 3, "solution": False}})
    source.cells.insert(source.cells.index(_cell(source, "test_normalize")) + 1, extra)
    wrong = "def normalize(x, mean, std):\n    return x - torch.as_tensor(mean).view(1, -1, 1, 1)\n"  # forgets std
    nb = _solved(source, "lab00_tensors.ipynb", normalize=wrong)
    _cell(nb, "test_to_nchw").source += "\n# a student's note"  # an edited test cell is reported as changed
    nbformat.write(nb, tmp_path / "lab00_tensors.ipynb")
    proc = subprocess.run([sys.executable, "-m", "cnncourse", "check", "lab00_tensors.ipynb"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=280)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert re.search(r"^question\s+result\s+points\s+feedback$", out, re.M), out
    assert [line.split()[:4] for line in out.splitlines() if line.startswith("test_") and " / " in line] == [
        ["test_to_nchw", "passed", "2", "/"], ["test_normalize", "FAILED", "0", "/"],
        ["test_extra", "hidden", "?", "/"]]
    assert "public tests: 2 / 4 points; 1 more points are graded only by hidden tests (lab total 5)" in out
    assert "SELF-CHECK FAILED ON 1 QUESTION(S)" in out and "test_normalize failed:" in out
    assert "THE CONTENTS OF 1 TEST CELL(S) HAVE CHANGED: test_to_nchw" in out
    assert "cells that raised an error" not in out, "a cell failed (the self-check cell must not run in the check)"
    assert "to_nchw(torch.zeros(1, 2, 3, 4))" not in out
    assert not [line for line in _hidden_lines() if line in out], "the self-check printed a hidden test"


def test_success_needs_every_public_test_and_a_finished_run():
    def result(status="ok", passed=True, **extra):
        q = {"grade_id": "test_a", "points": 2.0 if passed else 0.0, "max_points": 2.0, "passed": passed,
             "feedback": "passed" if passed else "AssertionError: wrong"}
        return SelfCheck({"lab": "lab", "status": status, "reason": "the kernel died", "questions": [q],
                          "cell_errors": [], "total": q["points"], "max_total": 2.0}, **extra)

    assert result().ok and "Success! Your notebook passes all the public tests." in report_text(result())
    assert questions_table(result().record) in report_text(result())  # the grader's own table
    for bad in (result(passed=False), result(status="crashed"), result(missing=["test_b"])):
        assert not bad.ok and "SELF-CHECK FAILED" in report_text(bad)
    assert "the run stopped: the kernel died" in report_text(result(status="crashed"))
