"""What the grader reads from notebooks: the source lab's graded tests, a submission, and the order to run them.

:func:`load_lab` splits each graded test cell of the source lab (nbgrader ``grade_id``) into
its public and hidden parts; :func:`read_submission` parses a student's notebook of any
nbformat version; :func:`plan` orders the submission's code cells and the lab's tests.
Grading itself is in :mod:`cnncourse.grading.autograde`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from cnncourse.grading.harness import lab_imports
from cnncourse.grading.release import BEGIN_HIDDEN, find_regions, is_selfcheck_cell


@dataclass(frozen=True)
class TestCell:
    """One graded test cell of the source lab."""

    grade_id: str
    points: float
    public: str
    hidden: str


@dataclass(frozen=True)
class LabSpec:
    """What the grader needs from a source lab: its checksum, graded tests and required cell ids."""

    path: Path
    sha256: str
    tests: tuple[TestCell, ...]
    required_ids: tuple[str, ...]
    imports: str = ""

    @property
    def max_total(self) -> float:
        return sum(t.points for t in self.tests)

    @property
    def name(self) -> str:
        return self.path.stem


def _nbgrader(cell: Any) -> dict[str, Any]:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta if isinstance(meta, dict) else {}


def load_lab(path: str | os.PathLike) -> LabSpec:
    """Parse a source lab into a :class:`LabSpec`, splitting each test cell into public and hidden parts.

    Raises:
        ValueError: when the lab has no graded test cells or repeats a ``grade_id``.

    Reference: nbgrader cell metadata, https://nbgrader.readthedocs.io/en/stable/contributor_guide/metadata.html
    """
    path = Path(path)
    raw = path.read_bytes()
    nb = nbformat.reads(raw.decode("utf-8"), as_version=4)
    tests, ids = [], []
    for index, cell in enumerate(nb.cells):
        meta = _nbgrader(cell)
        gid = meta.get("grade_id")
        if not gid or cell.cell_type != "code":
            continue
        if gid in ids:
            raise ValueError(f"{path}: grade_id {gid!r} appears twice (cell {index})")
        ids.append(gid)
        if meta.get("grade"):
            lines = cell.source.splitlines()
            regions = [r for r in find_regions(cell.source, index, path) if r.kind == BEGIN_HIDDEN]
            marked = {i for r in regions for i in range(r.start, r.end + 1)}  # markers included
            public = "\n".join(line for i, line in enumerate(lines) if i not in marked)
            hidden = "\n".join(lines[i] for r in regions for i in range(r.start + 1, r.end))
            tests.append(TestCell(gid, float(meta.get("points", 0)), public, hidden))
    if not tests:
        raise ValueError(f"{path}: expected graded test cells (nbgrader grade=True with a grade_id), found none")
    return LabSpec(path, hashlib.sha256(raw).hexdigest(), tuple(tests), tuple(ids), lab_imports(nb))


def read_submission(raw: bytes) -> nbformat.NotebookNode:
    """Parse a submitted notebook of any nbformat version into version 4.

    Raises:
        ValueError: for anything that is not a readable notebook (bad JSON, no cells, bad encoding).
    """
    try:
        nb = nbformat.reads(raw.decode("utf-8"), as_version=4)
    except Exception as exc:  # noqa: BLE001  (nbformat raises many types for bad input)
        raise ValueError(f"not a readable notebook: {type(exc).__name__}: {str(exc)[:200]}") from None
    if not isinstance(nb.get("cells"), list):
        raise ValueError("not a readable notebook: it has no list of cells")
    for cell in nb.cells:
        if not isinstance(cell, dict) or not isinstance(cell.get("source", ""), str):
            raise ValueError("not a readable notebook: a cell is malformed")
    return nb


def plan(lab: LabSpec, nb: nbformat.NotebookNode) -> tuple[list[tuple[str, Any]], list[str]]:
    """Order of execution: ``("student", (cell_index, source))`` and ``("test", TestCell)`` steps.

    Returns:
        The steps and the source ``grade_id``s missing from the submission.
    """
    tests = {t.grade_id: t for t in lab.tests}
    steps: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for index, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        gid = _nbgrader(cell).get("grade_id")
        if gid:
            seen.add(gid)
        if gid in tests:
            if not any(kind == "test" and t.grade_id == gid for kind, t in steps):
                steps.append(("test", tests[gid]))
        elif cell.source.strip() and not is_selfcheck_cell(cell):  # the release's self-check cell is not run
            steps.append(("student", (index, cell.source)))
    missing = [gid for gid in lab.required_ids if gid not in seen]
    steps.extend(("test", t) for t in lab.tests if t.grade_id not in seen)
    return steps, missing
