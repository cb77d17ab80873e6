"""``python -m cnncourse lab-report``, run as an instructor runs it: the per-lab table, the kill rate, the exit code."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
GRADED = {"grade": True, "locked": True, "schema_version": 3, "solution": False}
SOLUTION = {"grade": False, "locked": False, "schema_version": 3, "solution": True}


def _lab(folder: Path, name: str, mutants: list[tuple[str, str]]) -> Path:
    """A two-question lab ``folder/labs/<name>.ipynb`` and its mutant file ``folder/tests/labs/<name>.toml``."""
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("QUICK = True", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("def f(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION",
                                  metadata={"nbgrader": {**SOLUTION, "grade_id": "f"}}),
        nbformat.v4.new_code_cell(
            "assert f(3) == 4\n### BEGIN HIDDEN TESTS\nfrom cnncourse.grading.checks import course_seed\n"
            "v = course_seed(1) % 1000\nassert f(v) == v + 1\n### END HIDDEN TESTS",
            metadata={"nbgrader": {**GRADED, "grade_id": "test_f", "points": 2}}),
        nbformat.v4.new_code_cell("def g(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION",
                                  metadata={"nbgrader": {**SOLUTION, "grade_id": "g"}}),
        nbformat.v4.new_code_cell("assert g(5) == 10",
                                  metadata={"nbgrader": {**GRADED, "grade_id": "test_g", "points": 1}}),
    ])
    lab = folder / "labs" / f"{name}.ipynb"
    lab.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, lab)
    toml = folder / "tests" / "labs" / f"{name}.toml"
    toml.parent.mkdir(parents=True, exist_ok=True)
    toml.write_text("".join(
        f'[[mutant]]\nname = "{n}"\nsolution = "f"\nquestion = "test_f"\nkind = "other"\nwhy = "w"\ncode = "{code}"\n\n'
        for n, code in mutants
    ))
    return lab


def _report(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "cnncourse", "lab-report", *args], capture_output=True, text=True,
                          env=env, timeout=600)


WRONG = [("plus_two", "return x + 2"), ("times", "return x * 1"), ("zero", "return 0"), ("neg", "return -x"),
         ("hard_coded", "return 4")]


@pytest.mark.timeout(900)
def test_lab_report_grades_every_mutant_in_two_workers_and_counts_the_survivors(tmp_path):
    good = _lab(tmp_path / "a", "lab_good", WRONG)
    # `1 + x` is right: it survives, so the report must show 5 of 6 killed and exit 1.
    weak = _lab(tmp_path / "b", "lab_weak", WRONG + [("same", "return 1 + x")])
    run = _report(str(good), str(weak), "--jobs", "2", "--verbose")
    out = run.stdout
    assert run.returncode == 1, (run.returncode, out, run.stderr)
    lines = out.splitlines()
    rows = {(lab, line.split()[0]): line.split()[1:] for lab in ("lab_good", "lab_weak")
            for line in lines[lines.index(next(t for t in lines if t.startswith(lab))):][:4] if line.startswith("  test_")}
    assert rows[("lab_good", "test_f")] == ["2", "5", "100%"], out
    assert rows[("lab_good", "test_g")] == ["1", "0", "-"], out
    assert rows[("lab_weak", "test_f")] == ["2", "6", "83%"], out
    assert "total: 2 labs, 11 mutants, 10/11 killed (91%)" in out, out
    assert "lab_weak" in out and "survived" in out and "same" in out, out  # --verbose names the survivor

    alone = _report(str(good), "--jobs", "1")
    assert alone.returncode == 1, alone.stdout  # test_g has no mutants: the goal (5 per question) is not met
    assert "total: 1 labs, 5 mutants, 5/5 killed (100%)" in alone.stdout, alone.stdout


def test_lab_report_no_run_counts_and_a_bad_mutant_file_is_named(tmp_path):
    lab = _lab(tmp_path, "lab_count", WRONG)
    run = _report(str(lab), "--no-run")
    assert "total: 1 labs, 5 mutants, not run" in run.stdout, run.stdout
    toml = tmp_path / "tests" / "labs" / "lab_count.toml"
    toml.write_text(toml.read_text().replace('question = "test_f"', 'question = "test_h"', 1))
    bad = _report(str(lab), "--no-run")
    assert bad.returncode == 2 and "question 'test_h' is not a graded test cell" in bad.stderr, bad.stderr
    assert str(toml) in bad.stderr, bad.stderr


def test_a_lab_without_mutants_is_reported_as_such(tmp_path):
    lab = _lab(tmp_path, "lab_none", WRONG)
    (tmp_path / "tests" / "labs" / "lab_none.toml").unlink()
    run = _report(str(lab))
    assert run.returncode == 1 and "0 mutants, no " in run.stdout, run.stdout
    assert textwrap.dedent("""\
          test_f                                  2       0        -""") in run.stdout, run.stdout
