"""nbgrader interop, proven: the source labs are nbgrader source notebooks, and both graders agree.

One temporary nbgrader course folder (``source/<lab>/<lab>.ipynb`` for every lab, a
temporary ``nbgrader_config``-free configuration and SQLite gradebook, no network) is
built once per module through nbgrader's Python API (``NbGraderAPI``), the same code as
the ``nbgrader`` command line.

- ``generate_assignment`` succeeds on all 9 labs; its student version equals
  ``cnncourse assign``'s cell for cell (sources and cell types), once our install cell is
  left out; and its gradebook's graded cells have our ``grade_id``\\s and points.
- ``autograde`` of lab00's correct and half-correct fixture submissions gives the same
  points per question as our grader. Only lab00 is autograded: it is the lab the fixtures
  are for, and each extra submission costs a kernel start on each side.
- One documented difference is pinned: an exploit that rewrites test cells inside the
  student's kernel gets full marks from nbgrader and none from ours.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from pathlib import Path

import nbformat
import pytest

from cnncourse.grading.autograde import Limits, load_lab
from cnncourse.grading.release import student_version
from cnncourse.grading.report import grade_batch
from cnncourse.grading.sandbox import available as sandbox_available

ROOT = Path(__file__).resolve().parents[1]
LABS = sorted((ROOT / "labs").glob("lab*.ipynb"))
LAB00 = ROOT / "labs" / "lab00_tensors.ipynb"
FIX = ROOT / "tests" / "grading" / "lab00"
STUDENTS = ["correct", "half_correct", "exploit_input_transformer"]
# nbgrader 0.9.6 with SQLAlchemy 2.1 warns "Object of type <SubmittedAssignment> not in session" while autograding;
# the scores it stores are complete (the test reads them back).
pytestmark = pytest.mark.filterwarnings("ignore:Object of type:sqlalchemy.exc.SAWarning")
FULL, HALF, NONE = ({"test_to_nchw": a, "test_normalize": b} for a, b in ((2.0, 2.0), (2.0, 0.0), (0.0, 0.0)))


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A course folder after ``generate_assignment`` of every lab: ``(root, api, db_url, results)``."""
    from nbgrader.apps import NbGraderAPI
    from traitlets.config import Config

    root = tmp_path_factory.mktemp("course")
    for lab in LABS:
        (root / "source" / lab.stem).mkdir(parents=True)
        shutil.copy(lab, root / "source" / lab.stem / lab.name)
    config = Config()
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.db_url = f"sqlite:///{root / 'gradebook.db'}"
    config.Exchange.root = str(root / "exchange")  # never the system-wide /srv/nbgrader/exchange
    api = NbGraderAPI(config=config)
    start = time.monotonic()
    with _alembic_on_path():
        generated = {lab.stem: api.generate_assignment(lab.stem) for lab in LABS}
    print(f"\nnbgrader generate_assignment x {len(LABS)}: {time.monotonic() - start:.1f} s")
    return root, api, config.CourseDirectory.db_url, generated


@pytest.fixture(scope="module")
def autograded(course):
    """nbgrader's ``autograde`` of lab00's fixture submissions, in nbgrader's submitted/<student>/<assignment>/."""
    root, api, _, _ = course
    for who in STUDENTS:
        (root / "submitted" / who / LAB00.stem).mkdir(parents=True)
        shutil.copy(FIX / f"{who}.ipynb", root / "submitted" / who / LAB00.stem / LAB00.name)
    start = time.monotonic()
    with _alembic_on_path():
        results = {who: api.autograde(LAB00.stem, who, force=True, create=True) for who in STUDENTS}
    print(f"\nnbgrader autograde x {len(STUDENTS)}: {time.monotonic() - start:.1f} s")
    return results


@contextlib.contextmanager
def _alembic_on_path():
    # nbgrader runs the `alembic` script to set up its database: the one beside this Python.
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{old}"
    try:
        yield
    finally:
        os.environ["PATH"] = old


def _ours_without_install_cell(lab: Path) -> list:
    """Our release of ``lab`` less the cells nbgrader has no equivalent of: the install cell and the self-check."""
    cells = student_version(nbformat.read(lab, as_version=4), lab).cells
    return [c for c in cells if "install" not in c.get("metadata", {}).get("tags", [])
            and c.get("id") not in ("selfcheck-text", "selfcheck-cnncourse")]


@pytest.mark.parametrize("lab", LABS, ids=[lab.stem for lab in LABS])
def test_generate_assignment_removes_what_cnncourse_assign_removes(course, lab):
    root, _, _, generated = course
    assert generated[lab.stem]["success"], generated[lab.stem].get("error") or generated[lab.stem].get("log")
    theirs = nbformat.read(root / "release" / lab.stem / lab.name, as_version=4).cells
    ours = _ours_without_install_cell(lab)
    assert len(student_version(nbformat.read(lab, as_version=4)).cells) == len(ours) + 1, "one install cell"
    assert [c.cell_type for c in theirs] == [c.cell_type for c in ours]
    for index, (a, b) in enumerate(zip(theirs, ours)):
        # Byte-equal sources: the same stub ("# YOUR CODE HERE" + raise NotImplementedError()), the same
        # hidden tests dropped, not even whitespace differs.
        assert a.source == b.source, f"{lab.name}, cell {index}: nbgrader {a.source!r} != ours {b.source!r}"
        assert "### BEGIN" not in a.source and "### END" not in a.source


@pytest.mark.parametrize("lab", LABS, ids=[lab.stem for lab in LABS])
def test_nbgrader_gradebook_has_our_grade_ids_and_points(course, lab):
    from nbgrader.api import Gradebook

    _, _, db_url, _ = course
    with Gradebook(db_url) as gb:
        cells = [(g.name, float(g.max_score), g.cell_type) for nb in gb.find_assignment(lab.stem).notebooks
                 for g in nb.grade_cells]
    ours = [(t.grade_id, t.points, "code") for t in load_lab(lab).tests]
    assert sorted(cells) == sorted(ours)


def test_autograde_points_per_question_equal_ours(course, autograded, tmp_path):
    from nbgrader.api import Gradebook

    root, _, db_url, _ = course
    for who in STUDENTS:
        assert autograded[who]["success"], autograded[who].get("error") or autograded[who].get("log")
    limits = Limits(timeout=60, cell_timeout=10, wall_factor=3, memory_mb=1500, sandbox=sandbox_available())
    records = grade_batch(LAB00, [root / "submitted"], tmp_path / "ours", jobs=2, limits=limits, progress=False)
    ours = {r["student"]: {q["grade_id"]: q["points"] for q in r["questions"]} for r in records}
    with Gradebook(db_url) as gb:
        theirs = {who: {g.name: float(g.score) for g in gb.find_submission_notebook(LAB00.stem, LAB00.stem, who).grades}
                  for who in STUDENTS}
    assert {"correct": theirs["correct"], "half_correct": theirs["half_correct"]} == {
        "correct": ours["correct"], "half_correct": ours["half_correct"]}
    assert (ours["correct"], ours["half_correct"]) == (FULL, HALF)
    # Where they differ (README, "nbgrader and cnncourse"): nbgrader runs the tests in the student's kernel, where
    # an IPython input transformer the student installed rewrites them; ours run in the grader's own process.
    assert (theirs["exploit_input_transformer"], ours["exploit_input_transformer"]) == (FULL, NONE)
