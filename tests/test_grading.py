"""The instructor autograder: fixtures of hostile submissions, gradebook, resume, --jobs, CLI.

Kernel-backed tests grade each fixture once (module-scoped) with small limits; the
fixtures and their expected status and score are in tests/grading/ (see make_fixtures.py).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import nbformat
import pytest

from cnncourse.grading import cli_grade
from cnncourse.grading.autograde import Limits, load_lab, plan, read_submission
from cnncourse.grading.release import student_version
from cnncourse.grading.report import find_submissions, grade_batch, gradebook_csv, student_name
from cnncourse.grading.sandbox import available as sandbox_available

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "grading"
LAB00 = ROOT / "labs" / "lab00_tensors.ipynb"
CONV_LAB = FIX / "conv_lab.ipynb"
EXPECTED = json.loads((FIX / "expected.json").read_text())
SANDBOX = sandbox_available()  # .ci/run installs bubblewrap; without it these tests grade unsandboxed
LIMITS = ["--timeout", "60", "--cell-timeout", "5", "--wall-factor", "3", "--memory", "1500", "--no-progress"] + ([] if SANDBOX else
                                                                                            ["--no-sandbox"])


def _grade_cli(lab: Path, subs: Path, out: Path, *extra: str) -> int:
    parser = argparse.ArgumentParser()
    cli_grade.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["grade", str(lab), str(subs), "--out", str(out), *LIMITS, *extra])
    return args.func(args)


def _copy_fixtures(folder: str, dest: Path, out: Path, names: list[str] | None = None) -> Path:
    dest.mkdir(parents=True)
    for f in sorted((FIX / folder).glob("*.ipynb")):
        if names is None or f.stem in names:
            (dest / f.name).write_text(f.read_text().replace("__GRADER_OUT__", str(out)))
    return dest


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "gradebook.csv", newline="") as f:
        return list(csv.DictReader(f))


def _kernels_left() -> list[str]:
    """Command lines of this process's descendants that are kernels or sandboxes."""
    import psutil

    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(proc.cmdline())
        except psutil.Error:  # ended while we looked
            continue
        if "ipykernel" in cmd or "bwrap" in cmd:
            found.append(cmd[:200])
    return found


def _stable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("elapsed", "submission", "timing")}


# ---------------------------------------------------------------- no kernel needed

def test_lab_spec_splits_public_and_hidden_tests():
    lab = load_lab(LAB00)
    assert [t.grade_id for t in lab.tests] == ["test_to_nchw", "test_normalize"]
    assert lab.max_total == 4 and lab.required_ids == ("to_nchw", "test_to_nchw", "normalize", "test_normalize")
    first = lab.tests[0]
    assert "random batch of shape" in first.hidden and "random batch of shape" not in first.public
    assert "HIDDEN" not in first.hidden + first.public and "check_shape(out" in first.public


@pytest.mark.parametrize("lab_path", [LAB00, CONV_LAB])
def test_hidden_tests_are_not_in_the_student_release(lab_path):
    lab = load_lab(lab_path)
    released = nbformat.writes(student_version(nbformat.read(lab_path, as_version=4)))
    for test in lab.tests:
        hidden = [line.strip() for line in test.hidden.splitlines() if line.strip()]
        assert hidden, f"{test.grade_id} should have hidden tests"
        assert not [line for line in hidden if line in released], f"hidden test of {test.grade_id} leaked"


def test_plan_runs_source_tests_in_place_and_deleted_tests_at_the_end():
    lab = load_lab(LAB00)
    steps, missing = plan(lab, read_submission((FIX / "lab00" / "cells_deleted.ipynb").read_bytes()))
    assert missing == ["normalize", "test_normalize"]
    assert [s[1].grade_id for s in steps if s[0] == "test"] == ["test_to_nchw", "test_normalize"]
    assert steps[-1][0] == "test"
    steps, _ = plan(lab, read_submission((FIX / "lab00" / "helpers_redefined.ipynb").read_bytes()))
    student_code = "\n".join(s[1][1] for s in steps if s[0] == "student")
    assert "passes the public tests" not in student_code   # the student's copy of a test cell never runs


@pytest.mark.parametrize("raw", [b"{not json", b"[]", b'{"cells": 3}', b"\xff\xfe", b""])
def test_unreadable_notebooks_are_refused(raw):
    with pytest.raises(ValueError, match="not a readable notebook"):
        read_submission(raw)


def test_student_names_from_file_or_nbgrader_layout(tmp_path):
    assert student_name(Path("x/submitted/ada/lab00_tensors/lab00_tensors.ipynb")) == "ada"
    assert student_name(Path("x/bob smith.ipynb")) == "bob_smith"
    for who in ("ada", "bob"):
        (tmp_path / "submitted" / who / "lab00").mkdir(parents=True)
        (tmp_path / "submitted" / who / "lab00" / "lab00_tensors.ipynb").write_text("{}")
    assert [n for n, _ in find_submissions([tmp_path / "submitted"])] == ["ada", "bob"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "same.ipynb").write_text("{}")
    (tmp_path / "b" / "same.ipynb").write_text("{}")
    with pytest.raises(ValueError, match="same student name"):
        find_submissions([tmp_path / "a", tmp_path / "b"])


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    assert _grade_cli(LAB00, tmp_path / "nowhere", tmp_path / "out") == 2
    assert "expected a submitted notebook" in capsys.readouterr().err


# ---------------------------------------------------------------- graded fixtures

@pytest.fixture(scope="module")
def lab00_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("lab00")
    out = base / "out"
    subs = _copy_fixtures("lab00", base / "subs", out)
    assert _grade_cli(LAB00, subs, out, "--jobs", "2") == 0
    return subs, out


@pytest.mark.parametrize("name", [n for n, e in EXPECTED.items() if e["lab"] == "lab00"])
def test_lab00_fixture_gets_expected_status_and_score(lab00_run, name):
    _, out = lab00_run
    record = json.loads((out / f"{name}.json").read_text())
    expected = EXPECTED[name]
    assert (record["status"], record["total"]) == (expected["status"], expected["total"]), record
    assert record["max_total"] == 4 and len(record["questions"]) == 2
    row = next(r for r in _rows(out) if r["student"] == name)
    assert (row["status"], float(row["total"])) == (expected["status"], expected["total"])
    assert (out / "feedback" / f"{name}.html").is_file()


def test_lab00_gradebook_has_one_row_per_submission(lab00_run):
    subs, out = lab00_run
    rows = _rows(out)
    assert list(rows[0]) == ["student", "status", "total", "max_total", "test_to_nchw", "test_normalize", "flags"]
    assert sorted(r["student"] for r in rows) == sorted(f.stem for f in subs.glob("*.ipynb"))


def test_partial_credit_and_reasons_survive_hangs_and_crashes(lab00_run):
    _, out = lab00_run
    loop = json.loads((out / "infinite_loop_q2.json").read_text())
    assert [q["passed"] for q in loop["questions"]] == [True, False]
    assert "per-cell limit of 5 s of CPU time" in loop["questions"][1]["feedback"] or (
        "per-cell wall-clock ceiling" in loop["questions"][1]["feedback"])  # the latter only on a badly overloaded machine
    assert loop["rerun"] and [a["status"] for a in loop["attempts"]] == ["timeout", "timeout"]
    crash = json.loads((out / "os_exit.json").read_text())
    assert "kernel died" in crash["reason"] and crash["questions"][1]["feedback"].startswith("not graded")
    bomb = json.loads((out / "memory_bomb.json").read_text())
    assert bomb["questions"][1]["feedback"].startswith("MemoryError")


def test_hidden_test_details_are_withheld_from_student_feedback(lab00_run):
    _, out = lab00_run
    record = json.loads((out / "half_correct.json").read_text())
    q2 = record["questions"][1]
    assert q2["feedback"] == "passed the public tests but failed a hidden test"
    assert "-channel batch" in q2["detail"]          # the hidden test's own words: which input failed
    page = (out / "feedback" / "half_correct.html").read_text()
    assert "failed a hidden test" in page and "-channel batch" not in page


def test_a_submission_writing_into_the_output_folder_cannot_change_scores(lab00_run):
    _, out = lab00_run
    # The sandbox hides the output folder: the fixture's writes land in its private, discarded copy.
    assert (out / "planted.txt").is_file() != SANDBOX
    record = json.loads((out / "writes_output.json").read_text())
    assert record["total"] == 0 and record["lab_sha256"] == load_lab(LAB00).sha256
    assert "4 / 4" not in (out / "feedback" / "writes_output.html").read_text()
    assert len(_rows(out)) == len(list((FIX / "lab00").glob("*.ipynb")))


def test_delegation_to_f_conv2d_fails_the_hidden_test(tmp_path):
    out = tmp_path / "out"
    subs = _copy_fixtures("conv", tmp_path / "subs", out)
    assert _grade_cli(CONV_LAB, subs, out) == 0
    for name in ("conv_correct", "conv_delegates"):
        record = json.loads((out / f"{name}.json").read_text())
        assert (record["status"], record["total"]) == (EXPECTED[name]["status"], EXPECTED[name]["total"])
    delegated = json.loads((out / "conv_delegates.json").read_text())["questions"][0]
    assert delegated["feedback"] == "passed the public tests but failed a hidden test"
    assert "DelegationError" in delegated["detail"] and "torch.nn.functional.conv2d" in delegated["detail"]


def test_jobs_1_interrupted_and_resumed_equals_jobs_2(lab00_run, tmp_path):
    names = ["correct", "half_correct", "invalid_json", "os_exit"]
    _, out2 = lab00_run
    out = tmp_path / "out"
    subs = _copy_fixtures("lab00", tmp_path / "subs", out, names)
    limits = Limits(timeout=60, cell_timeout=5, wall_factor=3, memory_mb=1500, sandbox=SANDBOX)
    seen: list[str] = []

    def interrupt_after_two(record):
        seen.append(record["student"])
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        grade_batch(LAB00, [subs], out, jobs=1, limits=limits, progress=False, on_record=interrupt_after_two)
    assert sorted(p.stem for p in out.glob("*.json")) == sorted(seen)
    # The second kernel was started while the first submission ran; the one started for the third is killed.
    assert json.loads((out / f"{seen[1]}.json").read_text())["timing"]["prestarted"] is True
    assert _kernels_left() == [], "a kernel started ahead outlived the interrupted batch"
    resumed: list[str] = []
    records = grade_batch(LAB00, [subs], out, jobs=1, limits=limits, progress=False,
                          on_record=lambda r: resumed.append(r["student"]))
    assert sorted(resumed + seen) == sorted(names), "a resumed run grades only what is left"
    assert len(records) == len(_rows(out)) == len(names)
    for name in names:
        one = json.loads((out / f"{name}.json").read_text())
        two = json.loads((out2 / f"{name}.json").read_text())
        assert _stable(one) == _stable(two), name
    assert [r for r in _rows(out2) if r["student"] in names] == _rows(out)
    again: list[str] = []
    grade_batch(LAB00, [subs], out, jobs=1, limits=limits, progress=False, on_record=lambda r: again.append(1))
    assert again == [], "a re-run with the same lab and submissions re-grades nothing"


def test_gradebook_lists_every_record_even_unreadable_ones():
    lab = load_lab(LAB00)
    records = [{"student": s, "status": st, "total": t, "max_total": 4.0,
                "questions": [{"grade_id": "test_to_nchw", "points": t}], "flags": f}
               for s, st, t, f in [("b", "invalid-notebook", 0.0, []), ("a", "ok", 2.0, ["gc (cell 3, line 1): gc"])]]
    lines = gradebook_csv(lab, records).splitlines()
    assert lines == ["student,status,total,max_total,test_to_nchw,test_normalize,flags",
                     'a,ok,2,4,2,0,"gc (cell 3, line 1): gc"', "b,invalid-notebook,0,4,0,0,"]


def test_resume_ignores_records_for_another_lab(tmp_path):
    out = tmp_path / "out"
    subs = _copy_fixtures("lab00", tmp_path / "subs", out, ["invalid_json"])
    grade_batch(LAB00, [subs], out, progress=False, limits=Limits(sandbox=SANDBOX))
    other = tmp_path / "lab_changed.ipynb"
    shutil.copy(LAB00, other)
    other.write_text(other.read_text().replace("(2 points)", "(two points)"))
    graded: list[str] = []
    grade_batch(other, [subs], out, progress=False, limits=Limits(sandbox=SANDBOX),
                on_record=lambda r: graded.append(r["student"]))
    assert graded == ["invalid_json"]
    assert json.loads((out / "invalid_json.json").read_text())["lab_sha256"] == load_lab(other).sha256


def test_in_kernel_exploits_gain_nothing(lab00_run):
    """The four exploits of issue 11 each scored 4/4 when tests ran in the student's kernel."""
    _, out = lab00_run
    for name in ("exploit_replace_run_test", "exploit_wrap_import", "exploit_input_transformer", "exploit_liar_tensor"):
        record = json.loads((out / f"{name}.json").read_text())
        assert record["total"] == 0 and not any(q["passed"] for q in record["questions"]), record
    liar = json.loads((out / "exploit_liar_tensor.json").read_text())["questions"][0]
    assert "expected a torch.Tensor" in liar["feedback"] and "_Liar" in liar["feedback"]


def test_a_course_secret_defeats_memorised_hidden_inputs(lab00_run, tmp_path):
    _, plain = lab00_run
    assert json.loads((plain / "memorised_hidden_inputs.json").read_text())["total"] == 2, "passes without a secret"
    out = tmp_path / "out"
    subs = _copy_fixtures("lab00", tmp_path / "subs", out, ["memorised_hidden_inputs"])
    assert _grade_cli(LAB00, subs, out, "--secret", "fall-2026") == 0
    record = json.loads((out / "memorised_hidden_inputs.json").read_text())
    assert record["total"] == 0 and record["secret_id"] and "hidden test" in record["questions"][0]["feedback"]
    # A resumed run with another secret (or none) re-grades instead of reusing the record.
    graded: list[str] = []
    limits = Limits(timeout=60, cell_timeout=5, wall_factor=3, memory_mb=1500, sandbox=SANDBOX)
    grade_batch(LAB00, [subs], out, limits=limits, progress=False, on_record=lambda r: graded.append(r["student"]))
    assert graded == ["memorised_hidden_inputs"]
    assert json.loads((out / "memorised_hidden_inputs.json").read_text())["total"] == 2
