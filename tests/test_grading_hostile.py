"""Hostile submissions by students who have read the grader: none may score above its true score.

tests/grading/hostile/ holds one lab00 submission per attack (see make_hostile.py) and
expected.json with its status, true score and integrity-flag codes. All are graded once, with
--jobs 2, in one run (module-scoped); the contamination pair is graded again with --jobs 1.
Cases marked ``defeated_by_trusted_tests`` are defeated only because tests run in the grader,
outside the student's kernel; the sandbox and the scan alone would not stop them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import nbformat
import pytest

import cnncourse.grading.checks
from cnncourse.grading import cli_grade, sandbox
from cnncourse.grading.scan import flag_codes

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = ROOT / "tests" / "grading" / "hostile"
LAB00 = ROOT / "labs" / "lab00_tensors.ipynb"
EXPECTED = json.loads((HOSTILE / "expected.json").read_text())
sys.path.insert(0, str(HOSTILE))
from make_hostile import FORK_MARKER, empty_cells  # noqa: E402

from tests.conftest import processes_with  # noqa: E402

# Generous whole-submission time (a loaded 2-core machine); a short per-cell limit ends the hang quickly.
# CPU seconds; the wall-clock ceiling (2 x) ends a sleeping hang, which is re-run once alone before it counts.
LIMITS = ["--timeout", "90", "--cell-timeout", "8", "--wall-factor", "2", "--memory", "1500", "--no-progress"]
CHECKS = Path(cnncourse.grading.checks.__file__)
pytestmark = pytest.mark.skipif(not sandbox.available(), reason="bubblewrap (bwrap) is not installed; .ci/run "
                                                                "installs it")


def _grade(subs: Path, out: Path, jobs: int) -> None:
    parser = argparse.ArgumentParser()
    cli_grade.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["grade", str(LAB00), str(subs), "--out", str(out), "--jobs", str(jobs), *LIMITS])
    assert args.func(args) == 0


def _survivors() -> list[int]:
    return processes_with(FORK_MARKER)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def guarded_checks():
    """checks.py's bytes before the run; put back if a broken sandbox let a submission rewrite it."""
    before = CHECKS.read_bytes()
    yield before
    if CHECKS.read_bytes() != before:
        CHECKS.write_bytes(before)


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory, guarded_checks):
    base = tmp_path_factory.mktemp("hostile")
    subs, out = base / "subs", base / "out"
    subs.mkdir()
    for name in EXPECTED:
        target = subs / f"{name}.ipynb"
        if name == "empty_cells_20000":
            nbformat.write(empty_cells(), target)
        else:
            target.write_bytes((HOSTILE / f"{name}.ipynb").read_bytes())
    try:
        _grade(subs, out, jobs=2)
        deadline = time.monotonic() + 15         # the PID namespace is torn down as the kernel dies
        while _survivors() and time.monotonic() < deadline:
            time.sleep(0.2)
        survivors = _survivors()
    finally:
        for pid in _survivors():
            os.kill(pid, signal.SIGKILL)
    return out, survivors, CHECKS.read_bytes() == guarded_checks


def _record(out: Path, name: str) -> dict:
    return json.loads((out / f"{name}.json").read_text())


CASES = sorted(EXPECTED)


@pytest.mark.parametrize("name", CASES)
def test_hostile_submission_scores_no_more_than_its_true_score(hostile_run, name):
    out, _, _ = hostile_run
    record, expected = _record(out, name), EXPECTED[name]
    assert record["total"] <= expected["total"], f"{name} gained points: {record}"
    assert (record["status"], record["total"]) == (expected["status"], expected["total"]), record
    assert record["sandbox"] is True


@pytest.mark.parametrize("name", CASES)
def test_hostile_submission_is_flagged(hostile_run, name):
    out, _, _ = hostile_run
    record = _record(out, name)
    assert flag_codes(record["flags"]) == set(EXPECTED[name]["flags"]), record["flags"]
    row = next(r for r in (out / "gradebook.csv").read_text().splitlines() if r.startswith(name + ","))
    assert all(f in row for f in record["flags"])
    page = (out / "feedback" / f"{name}.html").read_text()
    assert not any(flag in page for flag in record["flags"]), "flags are for the instructor only"


def test_a_forked_child_does_not_outlive_its_kernel(hostile_run):
    _, survivors, _ = hostile_run
    assert survivors == []


def test_hanging_and_exiting_kernels_end_within_the_limits(hostile_run):
    out, _, _ = hostile_run
    hang = _record(out, "signals_then_hang")
    # It sleeps, so the wall-clock ceiling (2 x 8 s of CPU) ends it, twice: the re-run confirms the timeout.
    assert "per-cell wall-clock ceiling of 16 s" in hang["reason"], hang["reason"]
    assert hang["rerun"] and [a["status"] for a in hang["attempts"]] == ["timeout", "timeout"]
    # A sleeping atexit hook must not hold the grader: the record is complete (the run itself is bounded by
    # pytest's per-test timeout, not by a timing assertion here).
    assert _record(out, "atexit_sleeps")["status"] == "ok"


def test_no_submission_changes_another_ones_result_jobs_2(hostile_run):
    out, _, checks_untouched = hostile_run
    assert checks_untouched, "a submission rewrote the installed checks.py"
    assert _record(out, "a_rewrites_checks")["cell_errors"], "the write should have failed in the sandbox"
    victim = _record(out, "b_victim")
    assert victim["total"] == 2 and [q["passed"] for q in victim["questions"]] == [True, False]


def test_no_submission_changes_another_ones_result_jobs_1(tmp_path, guarded_checks):
    subs = tmp_path / "subs"
    subs.mkdir()
    for name in ("a_rewrites_checks", "b_victim"):      # graded in this order
        (subs / f"{name}.ipynb").write_bytes((HOSTILE / f"{name}.ipynb").read_bytes())
    before = _sha(CHECKS)
    _grade(subs, tmp_path / "out", jobs=1)
    assert _sha(CHECKS) == before, "a submission rewrote the installed checks.py"
    poison = _record(tmp_path / "out", "a_rewrites_checks")
    assert any("Read-only file system" in e["error"] for e in poison["cell_errors"]), poison["cell_errors"]
    assert _record(tmp_path / "out", "b_victim")["total"] == 2
