"""The student's self-check: run a released lab through its public tests, as the grader will, before submitting.

``python -m cnncourse check release/lab01_convolution.ipynb``, or the last cell of every
released lab, does what nbgrader's *Validate* button does: it reads the **saved** notebook,
runs it from the top in a fresh kernel and reports the test cells that fail, with their
errors. It runs through the grader's own code (:func:`cnncourse.grading.autograde.grade_submission`,
trusted tests, the same per-question table), with two differences:

* it has only what the student has: the released notebook, so only the **public** tests
  run. A question whose tests are all hidden is shown as ``hidden``, with its points; a
  question that passes here can still lose points to the grader's hidden tests;
* the kernel runs on the student's own machine, unsandboxed, under generous time limits
  (the grader calibrates its limits on the reference solution, which the student lacks).

The questions and their points come from the metadata the release writes
(:func:`cnncourse.grading.release.add_questions_metadata`), so a deleted test cell is
reported as missing and an edited one as changed, as *Validate* warns about changed cells.

Reference: nbgrader's validator, https://nbgrader.readthedocs.io/en/stable/command_line_tools/nbgrader-validate.html
"""

from __future__ import annotations

import ast
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import nbformat

CELL_TIMEOUT = 900.0  # CPU seconds per cell: QUICK mode's slowest cell needs about 100 on a 2-core laptop
TIMEOUT = 3600.0  # CPU seconds for the whole notebook


class SelfCheckError(ValueError):
    """The notebook to check is missing, unreadable or not a released lab."""


@dataclass(frozen=True)
class Question:
    """One graded question of a released lab, as the release recorded it."""

    grade_id: str
    points: float
    sha256: str = ""


@dataclass
class SelfCheck:
    """The outcome of a self-check: the grader's record plus what only the self-check knows."""

    record: dict[str, Any]
    hidden: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        """The questions whose public tests failed (or that could not be run)."""
        return [q for q in self.record["questions"] if q.get("result") not in ("hidden", "missing") and not q["passed"]]

    @property
    def ok(self) -> bool:
        """True when every public test passes, the notebook ran to its end and no test cell is missing."""
        return not self.failed and not self.missing and self.record["status"] == "ok"


def read_notebook(path: str | os.PathLike) -> nbformat.NotebookNode:
    """Read a saved notebook for checking.

    Raises:
        SelfCheckError: naming the path and what was expected, for a missing, unreadable or empty file.
    """
    path = Path(path)
    if path.is_dir():
        raise SelfCheckError(f"expected a notebook file (.ipynb), got the folder {path}")
    if not path.is_file():
        raise SelfCheckError(
            f"no notebook at {path.resolve()}: expected a saved lab such as "
            f"release/lab01_convolution.ipynb (save it first, or give its path)"
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SelfCheckError(f"cannot read {path}: {exc}") from None
    try:  # the grader's own reader (autograde.read_submission) imports torch; this check must answer at once
        nb = nbformat.reads(raw.decode("utf-8"), as_version=4)
        if not isinstance(nb.get("cells"), list) or not all(isinstance(c, dict) for c in nb.cells):
            raise ValueError("it has no list of cells")
    except Exception as exc:  # noqa: BLE001  (nbformat raises many types for bad input)
        raise SelfCheckError(
            f"{path}: not a readable notebook ({type(exc).__name__}: {str(exc)[:200]}); save it "
            f"again from Jupyter, or start from a fresh copy of the released lab"
        ) from None
    return nb


def _nbgrader(cell: Any) -> dict[str, Any]:
    meta = cell.get("metadata", {}).get("nbgrader", {}) if isinstance(cell.get("metadata"), dict) else {}
    return meta if isinstance(meta, dict) else {}


def questions(nb: nbformat.NotebookNode) -> tuple[list[Question], list[str]]:
    """The lab's graded questions and all its ``grade_id``s, from the release's metadata (else from the cells).

    Raises:
        SelfCheckError: when the notebook has no graded questions at all (not a released lab).
    """
    recorded = nb.metadata.get("cnncourse", {}) if isinstance(nb.metadata.get("cnncourse"), dict) else {}
    found: list[Question] = []
    for q in recorded.get("questions", []) if isinstance(recorded.get("questions"), list) else []:
        if isinstance(q, dict) and isinstance(q.get("grade_id"), str) and isinstance(q.get("points"), (int, float)):
            found.append(Question(q["grade_id"], float(q["points"]), str(q.get("sha256", ""))))
    ids = (
        [i for i in recorded.get("grade_ids", []) if isinstance(i, str)]
        if isinstance(recorded.get("grade_ids"), list)
        else []
    )
    if not found:  # a lab released before the metadata existed: trust the cells
        for cell in nb.cells:
            meta = _nbgrader(cell)
            if meta.get("grade") and meta.get("grade_id") and cell.get("cell_type") == "code":
                found.append(Question(str(meta["grade_id"]), float(meta.get("points", 0) or 0)))
        ids = [str(_nbgrader(c)["grade_id"]) for c in nb.cells if _nbgrader(c).get("grade_id")]
    if not found:
        raise SelfCheckError(
            "expected a released lab with graded test cells (nbgrader metadata), found none: "
            "check the notebook the course released, not a copy saved without its metadata"
        )
    return found, ids or [q.grade_id for q in found]


def _is_hidden_only(source: str) -> bool:
    """True when a released test cell has no test code left: all its tests were hidden."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    return not any(not isinstance(node, (ast.Import, ast.ImportFrom)) for node in tree.body)


def check(path: str | os.PathLike, cell_timeout: float = CELL_TIMEOUT, timeout: float = TIMEOUT) -> SelfCheck:
    """Run the saved notebook ``path`` with its public tests and return the outcome (nothing is printed).

    Raises:
        SelfCheckError: for a missing, unreadable or ungraded notebook.
    """
    import hashlib

    from cnncourse.grading.autograde import LabSpec, Limits, TestCell, grade_submission
    from cnncourse.grading.harness import lab_imports
    from cnncourse.grading.release import cell_sha256

    path = Path(path)
    nb = read_notebook(path)
    qs, ids = questions(nb)
    cells = {
        str(_nbgrader(c)["grade_id"]): c
        for c in nb.cells
        if _nbgrader(c).get("grade_id") and c.get("cell_type") == "code"
    }
    tests, hidden, missing, changed = [], [], [], []
    for q in qs:
        cell = cells.get(q.grade_id)
        if cell is None:
            missing.append(q.grade_id)
            continue
        if q.sha256 and cell_sha256(cell.source) != q.sha256:
            changed.append(q.grade_id)
        if _is_hidden_only(cell.source):
            hidden.append(q.grade_id)
        tests.append(TestCell(q.grade_id, q.points, cell.source, ""))
    spec = LabSpec(
        path,
        hashlib.sha256(path.read_bytes()).hexdigest(),
        tuple(tests),
        tuple(i for i in ids if i not in missing),
        lab_imports(nb),
    )
    limits = Limits(timeout=timeout, cell_timeout=cell_timeout, memory_mb=None, sandbox=False, source="self-check")
    record: dict[str, Any] = (
        grade_submission(spec, path, "self-check", limits)
        if tests
        else {"status": "missing-cells", "reason": "", "questions": [], "cell_errors": [], "total": 0.0}
    )
    by_id = {q["grade_id"]: q for q in record["questions"]}
    rows: list[dict[str, Any]] = []
    for q in qs:
        if q.grade_id in missing:
            rows.append(
                {
                    "grade_id": q.grade_id,
                    "points": 0.0,
                    "max_points": q.points,
                    "passed": False,
                    "result": "missing",
                    "feedback": "its test cell was deleted; the grader runs the test after your last cell",
                }
            )
        elif q.grade_id in hidden:
            rows.append(
                {
                    **by_id[q.grade_id],
                    "points": None,
                    "passed": False,
                    "result": "hidden",
                    "feedback": "graded only by hidden tests",
                }
            )
        else:
            row = dict(by_id[q.grade_id])
            if row["feedback"].strip() == "NotImplementedError:":  # the release's stub, still in place
                row["feedback"] = "NotImplementedError: not answered yet (a cell above still raises it)"
            if q.grade_id in changed:
                row["feedback"] = f"(test cell changed) {row['feedback']}"
            rows.append(row)
    record.update(
        questions=rows, max_total=sum(q.points for q in qs), total=sum(r["points"] or 0 for r in rows), lab=path.stem
    )
    return SelfCheck(record, hidden, missing, changed)


def report_text(result: SelfCheck) -> str:
    """What the student reads: the grader's per-question table, then each failure in full, then the verdict."""
    from cnncourse.grading.report import _fmt, questions_table

    r = result.record
    public_max = sum(q["max_points"] for q in r["questions"] if q.get("result") != "hidden")
    hidden_max = r["max_total"] - public_max
    out = [f"{r['lab']}: self-check with the public tests", "", questions_table(r), ""]
    out.append(
        f"public tests: {_fmt(r['total'])} / {_fmt(public_max)} points"
        + (f"; {_fmt(hidden_max)} more points are graded only by hidden tests" if hidden_max else "")
        + f" (lab total {_fmt(r['max_total'])})"
    )
    if r.get("reason") and r["status"] not in ("ok", "missing-cells"):
        out.append(f"the run stopped: {r['reason']}")
    if result.changed:
        out += [
            "",
            f"THE CONTENTS OF {len(result.changed)} TEST CELL(S) HAVE CHANGED: {', '.join(result.changed)}.",
            "The grader runs the original tests, so these results may not be the ones you get.",
        ]
    for q in result.failed:
        out += ["", "=" * 72, f"{q['grade_id']} failed:", "    " + q["feedback"].replace("\n", "\n    ")]
    if r.get("missing_cells"):
        out += ["", f"cells missing from the notebook (the grader needs them): {', '.join(r['missing_cells'])}"]
    errors = r.get("cell_errors", [])
    if errors:
        out += [
            "",
            "cells that raised an error: "
            + "; ".join(f"cell {e['cell']}: {e['error'].splitlines()[0][:120]}" for e in errors),
        ]
    out.append("")
    if result.ok:
        out.append("Success! Your notebook passes all the public tests.")
    else:
        n = len(result.failed) + len(result.missing) or 1
        out.append(
            f"SELF-CHECK FAILED ON {n} QUESTION(S)! If you submit your notebook as it is, you will not "
            f"receive full credit."
        )
    return "\n".join(out)


def missing_notebook_message(path: str | os.PathLike, colab: bool) -> str:
    """What the self-check cell prints when the kernel cannot find its saved notebook, and what to run instead.

    In Colab the notebook lives in Google Drive (or came from GitHub): the kernel's folder (``/content``)
    holds no copy of it, so the student downloads it and checks that file.
    """
    name = Path(path).name
    if colab:
        return (
            f"The self-check cannot run here: in Colab this kernel cannot read your notebook (it lives in Google "
            f"Drive, not in the kernel's folder {Path.cwd()}).\n"
            f"Instead: File > Download > Download .ipynb, then either\n"
            f"  * upload the downloaded {name} to this folder (Files panel on the left, Upload) and run this cell "
            f"again, or\n"
            f"  * on a machine with the course installed, run: python -m cnncourse check {name}"
        )
    return (
        f"The self-check cannot run: no saved notebook {path} in the kernel's folder {Path.cwd()}.\n"
        f"Save the notebook first. If you renamed or moved it, give its name in this cell, "
        f"self_check('your-name.ipynb'), or run from a terminal: python -m cnncourse check PATH/TO/{name}"
    )


def self_check(path: str | os.PathLike, stream: TextIO | None = None, colab: bool | None = None) -> SelfCheck | None:
    """Check the saved notebook ``path`` and print the report; the function a released lab's last cell calls.

    Args:
        path: the saved notebook, relative to the kernel's working folder (the notebook's own folder in Jupyter).
        stream: where to print (default standard output).
        colab: whether the kernel runs in Google Colab, where the notebook is no file the kernel can read;
            by default, whether ``google.colab`` is imported.

    Returns:
        The :class:`SelfCheck` (``result.ok`` says whether every public test passed), or None when the
        notebook cannot be found or read: then the printed message says what to run instead.
    """
    stream = stream or sys.stdout
    if colab is None:
        colab = "google.colab" in sys.modules
    if not Path(path).is_file():
        print(missing_notebook_message(path, colab), file=stream, flush=True)
        return None
    print(
        f"Running {path} from the top in a fresh kernel with the public tests "
        f"(this takes as long as running every cell)...",
        file=stream,
        flush=True,
    )
    try:
        result = check(path)
    except SelfCheckError as exc:
        print(f"The self-check cannot run: {exc}", file=stream, flush=True)
        return None
    print(report_text(result), file=stream, flush=True)
    return result
