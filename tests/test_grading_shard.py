"""Sharded grading: ``grade --shard K/N`` and ``grade-merge``.

The one kernel-backed test grades three lab00 fixtures (full marks, half marks and an
unreadable notebook, one per shard; two of them start a kernel) once with ``--jobs 1`` and
once as 3 shards in 3 concurrent processes, and requires the merged ``gradebook.csv`` (and
every feedback page) to be byte-identical. Each kernel costs seconds, so the subset is the
smallest that puts a student in every shard. The gradebook holds no timings or paths (see
``report.gradebook_csv``), so no field is masked. The merge's refusals are tested on
shards of unreadable notebooks, which are graded without starting a kernel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnncourse.grading.autograde import Limits
from cnncourse.grading.merge import MergeError, merge
from cnncourse.grading.report import grade_batch
from cnncourse.grading.sandbox import available as sandbox_available
from cnncourse.grading.shard import MANIFEST, parse_shard, read_manifest, shard_of

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "grading"
LAB00 = ROOT / "labs" / "lab00_tensors.ipynb"
SANDBOX = sandbox_available()
LIMITS = ["--timeout", "60", "--cell-timeout", "5", "--wall-factor", "3", "--memory", "1500", "--no-progress"] + (
    [] if SANDBOX else ["--no-sandbox"])
# One student per shard: 1/3 invalid_json (graded without a kernel), 2/3 half_correct, 3/3 correct.
SUBSET = ["invalid_json", "half_correct", "correct"]


# ---------------------------------------------------------------- no kernel needed

def test_shard_of_is_a_stable_hash_of_the_name_alone():
    # Golden values: a change of hash would move students between shards of a class already being graded.
    assert [shard_of(s, 3) for s in ("correct", "half_correct", "blank")] == [3, 2, 3]
    assert [shard_of(s, 3) for s in SUBSET] == [1, 2, 3]
    names = [f"student{i:03d}" for i in range(300)]
    before = {s: shard_of(s, 7) for s in names}
    late = {s: shard_of(s, 7) for s in names + ["late_one", "late_two"]}
    assert all(late[s] == before[s] for s in names), "a late submission moved someone else"
    sizes = [list(before.values()).count(k) for k in range(1, 8)]
    assert min(sizes) > 25 and max(sizes) < 60, sizes  # roughly even: 300 / 7 = 43
    assert {shard_of(s, 1) for s in names} == {1}
    # Not Python's salted hash(): the same in a process with another PYTHONHASHSEED.
    code = "from cnncourse.grading.shard import shard_of; print([shard_of(f'student{i:03d}', 7) for i in range(300)])"
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=str(ROOT))
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert json.loads(other.stdout) == [before[s] for s in names]


@pytest.mark.parametrize("text", ["0/3", "4/3", "3", "a/b", "1/0", "-1/3", "2/3/4", ""])
def test_bad_shard_specs_are_refused(text):
    with pytest.raises(ValueError, match="expected a shard K/N"):
        parse_shard(text)


def test_cli_refuses_a_bad_shard(capsys):
    from cnncourse.cli import main

    with pytest.raises(SystemExit):
        main(["grade", str(LAB00), "subs", "--out", "out", "--shard", "0/3"])
    err = capsys.readouterr().err
    assert "--shard" in err and "got '0/3'" in err and "JOB_COMPLETION_INDEX" in err


def _unreadable(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name}.ipynb").write_text("{not json")
    return folder


def _grade_shards(tmp: Path, names: list[str], n: int, lab: Path = LAB00) -> list[Path]:
    subs = _unreadable(tmp / "subs", names)
    outs = []
    for k in range(1, n + 1):
        out = tmp / f"shard{k}"
        grade_batch(lab, [subs], out, limits=Limits(sandbox=SANDBOX), progress=False, shard=(k, n))
        outs.append(out)
    return outs


NAMES = ["ada", "bob", "cy", "dee", "eve", "fay", "gus"]


def test_merge_of_shards_equals_one_run_without_kernels(tmp_path):
    outs = _grade_shards(tmp_path, NAMES, 3)
    assert {json.loads((o / MANIFEST).read_text())["shard"] for o in outs} == {"1/3", "2/3", "3/3"}
    for out in outs:
        manifest = read_manifest(out)
        assert manifest["complete"] and manifest["submissions_found"] == len(NAMES)
        assert sorted(p.stem for p in out.glob("*.json")) == manifest["students"]
    assert sorted(s for o in outs for s in read_manifest(o)["students"]) == NAMES
    assert read_manifest(outs[1])["students"] == [], "shard 2/3 of NAMES is empty: an empty shard merges too"
    one = tmp_path / "one"
    grade_batch(LAB00, [tmp_path / "subs"], one, limits=Limits(sandbox=SANDBOX), progress=False)
    merged = tmp_path / "merged"
    merge(outs, merged)
    assert (merged / "gradebook.csv").read_bytes() == (one / "gradebook.csv").read_bytes()
    assert sorted(p.name for p in (merged / "feedback").iterdir()) == [f"{s}.html" for s in NAMES]
    assert read_manifest(merged)["shard"] == "1/1" and len(read_manifest(merged)["merged_from"]) == 3
    # The merged folder is an ordinary grading output: a whole-class run resumes into it and grades nothing.
    graded: list[str] = []
    grade_batch(LAB00, [tmp_path / "subs"], merged, limits=Limits(sandbox=SANDBOX), progress=False,
                on_record=lambda r: graded.append(r["student"]))
    assert graded == []
    # A late submission: the others keep their shards, and only its shard grades anything.
    _unreadable(tmp_path / "subs", ["zed"])
    k = shard_of("zed", 3)
    graded = []
    grade_batch(LAB00, [tmp_path / "subs"], outs[k - 1], limits=Limits(sandbox=SANDBOX), progress=False,
                shard=(k, 3), on_record=lambda r: graded.append(r["student"]))
    assert graded == ["zed"]
    again = tmp_path / "again"
    merge(outs, again)
    assert "zed," in (again / "gradebook.csv").read_text()
    merge(outs[::-1], again)  # replaces the earlier merge; the order of the folders does not matter
    zed = "zed,invalid-notebook,0,4,0,0,\n"
    assert (again / "gradebook.csv").read_text() == (merged / "gradebook.csv").read_text() + zed
    with pytest.raises(MergeError, match="holds other files"):  # never over a grading run's own output
        merge(outs, one)


def _expect_refusal(tmp_path: Path, folders: list[Path], *words: str) -> str:
    out = tmp_path / "merged"
    with pytest.raises(MergeError) as info:
        merge(folders, out)
    message = str(info.value)
    for word in words:
        assert word in message, message
    assert not out.exists(), "a refused merge wrote its output"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".merged")], "a refused merge left a temp folder"
    return message


def test_merge_refuses_missing_repeated_and_mismatched_shards(tmp_path):
    outs = _grade_shards(tmp_path, NAMES, 3)
    _expect_refusal(tmp_path, outs[:2], "missing shards", "3/3")
    _expect_refusal(tmp_path, [outs[0], outs[1], outs[1]], "shard 2/3 given twice")
    other = tmp_path / "other"
    other.mkdir()
    lab = other / LAB00.name
    lab.write_text(LAB00.read_text().replace("(2 points)", "(two points)"))
    changed = _grade_shards(other, NAMES, 3, lab=lab)
    _expect_refusal(tmp_path, [outs[0], outs[1], changed[2]], "mismatched source labs",
                    read_manifest(outs[0])["lab_sha256"][:12], read_manifest(changed[2])["lab_sha256"][:12])
    four = _grade_shards(tmp_path / "four", NAMES, 4)
    _expect_refusal(tmp_path, [*outs, four[3]], "mismatched shard counts", "4/4")
    _expect_refusal(tmp_path, [*outs, tmp_path / "subs"], "found none")


def test_merge_refuses_duplicate_students_and_unfinished_shards(tmp_path):
    outs = _grade_shards(tmp_path, NAMES, 3)
    # A copy of a shard 1 student planted in shard 3 (e.g. graded from a submissions folder twice).
    k1, m3 = read_manifest(outs[0]), read_manifest(outs[2])
    s = k1["students"][0]
    shutil.copy(outs[0] / f"{s}.json", outs[2] / f"{s}.json")
    shutil.copy(outs[0] / "feedback" / f"{s}.html", outs[2] / "feedback" / f"{s}.html")
    (outs[2] / MANIFEST).write_text(json.dumps({**m3, "students": m3["students"] + [s]}))
    _expect_refusal(tmp_path, outs, "duplicate student", repr(s), str(outs[0]), str(outs[2]))
    (outs[2] / MANIFEST).write_text(json.dumps({**m3, "students": m3["students"] + ["nobody"]}))
    _expect_refusal(tmp_path, outs, "'nobody' belongs to shard 1/3", "shard 3/3")
    ghost = next(name for name in (f"ghost{i}" for i in range(100)) if shard_of(name, 3) == 3)
    (outs[2] / MANIFEST).write_text(json.dumps({**m3, "students": m3["students"] + [ghost]}))
    _expect_refusal(tmp_path, outs, f"{ghost}.json", "FileNotFoundError")
    (outs[2] / MANIFEST).write_text(json.dumps({**m3, "complete": False}))
    _expect_refusal(tmp_path, outs, "did not finish")


def test_a_second_shard_pointed_at_a_claimed_folder_is_refused(tmp_path):
    outs = _grade_shards(tmp_path, NAMES, 3)
    with pytest.raises(ValueError, match="holds shard 1/3"):
        grade_batch(LAB00, [tmp_path / "subs"], outs[0], limits=Limits(sandbox=SANDBOX), progress=False,
                    shard=(2, 3))


# ---------------------------------------------------------------- graded in separate processes

def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cnncourse", "grade", str(LAB00), *args, *LIMITS]


def test_three_shards_in_separate_processes_merge_to_the_single_run_gradebook(tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    for name in SUBSET:
        shutil.copy(FIX / "lab00" / f"{name}.ipynb", subs / f"{name}.ipynb")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.monotonic()
    subprocess.run(_cli(str(subs), "--out", str(tmp_path / "one"), "--jobs", "1"), env=env, check=True,
                   capture_output=True)
    single = time.monotonic() - start
    start = time.monotonic()
    procs = [subprocess.Popen(_cli(str(subs), "--out", str(tmp_path / f"shard{k}"), "--shard", f"{k}/3"), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for k in (1, 2, 3)]
    logs = [p.communicate()[0].decode() for p in procs]
    sharded = time.monotonic() - start
    assert [p.returncode for p in procs] == [0, 0, 0], logs
    print(f"\nwall time: single --jobs 1 run {single:.1f} s, 3 concurrent shards {sharded:.1f} s "
          f"({len(SUBSET)} submissions, load {os.getloadavg()[0]:.1f})")
    assert [len(read_manifest(tmp_path / f"shard{k}")["students"]) for k in (1, 2, 3)] == [1, 1, 1]
    merged = tmp_path / "merged"
    done = subprocess.run([sys.executable, "-m", "cnncourse", "grade-merge", *(str(tmp_path / f"shard{k}")
                                                                                for k in (1, 2, 3)),
                           "--out", str(merged)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    one = (tmp_path / "one" / "gradebook.csv").read_bytes()
    assert (merged / "gradebook.csv").read_bytes() == one
    rows = one.decode().splitlines()
    assert rows[1:] == ["correct,ok,4,4,2,2,", "half_correct,ok,2,4,2,0,", "invalid_json,invalid-notebook,0,4,0,0,"]
    for name in SUBSET:
        assert (merged / "feedback" / f"{name}.html").read_bytes() == (
            tmp_path / "one" / "feedback" / f"{name}.html").read_bytes(), name
