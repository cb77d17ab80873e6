"""Batch grading: find submissions, grade them (in parallel), write records, gradebook and feedback.

Every file is written atomically by the main process. A re-run skips submissions whose
record already carries the same source-lab and submission checksums, so an interrupted
run resumes where it stopped. At the end every record of the run is written again from
memory, so a submission that wrote into the output folder cannot change a score.

Without given limits the batch is graded under limits calibrated on the lab's reference
solution (:mod:`cnncourse.grading.limits`). A submission that timed out is graded once
more at the end, alone, before the timeout counts; its record keeps both attempts.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import sys
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from cnncourse.grading.autograde import (
    SCHEMA,
    STATUSES,
    Job,
    LabSpec,
    Limits,
    load_lab,
    process_spare,
    run_job,
    secret_id,
)
from cnncourse.grading.limits import describe, resolve_limits
from cnncourse.grading.render import (
    _fmt,
    feedback_html,
    gradebook_csv,
    gradebook_csv_for,
    questions_table,
    summary_text,
)
from cnncourse.grading.shard import MANIFEST, read_manifest, shard_of, shard_text, write_manifest
from cnncourse.io import atomic_write_text

# The gradebook, feedback and summary texts are made in render.py; their names stay importable from here.
__all__ = [
    "_fmt",
    "check_shard_folder",
    "feedback_html",
    "find_submissions",
    "grade_batch",
    "gradebook_csv",
    "gradebook_csv_for",
    "questions_table",
    "require_sandbox",
    "rerun_timeouts",
    "student_name",
    "summary_text",
]


def student_name(path: Path) -> str:
    """The student's name: ``<student>`` in nbgrader's ``submitted/<student>/<assignment>/`` layout, else the file stem.

    Reference: nbgrader's exchange layout, https://nbgrader.readthedocs.io/en/stable/user_guide/managing_assignment_files.html
    """
    parts = path.parts
    name = parts[-3] if len(parts) >= 4 and parts[-4] == "submitted" else path.stem
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "unnamed"


def find_submissions(paths: list[str | os.PathLike]) -> list[tuple[str, Path]]:
    """Expand files and folders into sorted ``(student, notebook)`` pairs.

    Raises:
        FileNotFoundError: for a path that does not exist.
        ValueError: when two submissions map to the same student name.
    """
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(
                sorted(
                    f
                    for f in p.rglob("*.ipynb")
                    if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
                )
            )
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"expected a submitted notebook or a folder of them, got {p}")
    pairs = sorted((student_name(f), f) for f in dict.fromkeys(found))
    names = Counter(name for name, _ in pairs)
    clashes = [f"{n}: " + ", ".join(str(f) for m, f in pairs if m == n) for n, c in names.items() if c > 1]
    if clashes:
        raise ValueError(
            "two submissions have the same student name; rename them or use nbgrader's "
            "submitted/<student>/<assignment>/ layout:\n  " + "\n  ".join(clashes)
        )
    return pairs


def _write_record(out: Path, record: dict[str, Any]) -> None:
    atomic_write_text(out / f"{record['student']}.json", json.dumps(record, indent=1, sort_keys=True) + "\n")
    atomic_write_text(out / "feedback" / f"{record['student']}.html", feedback_html(record))


def _previous(out: Path, student: str, lab: LabSpec, submission: Path, secret: str = "") -> dict[str, Any] | None:
    import hashlib

    try:
        record = json.loads((out / f"{student}.json").read_text("utf-8"))
        sha = hashlib.sha256(submission.read_bytes()).hexdigest()
    except (OSError, ValueError):
        return None
    ok = (
        isinstance(record, dict)
        and record.get("schema") == SCHEMA
        and record.get("lab_sha256") == lab.sha256
        and record.get("submission_sha256") == sha
        and record.get("student") == student
        and record.get("status") in STATUSES
        and isinstance(record.get("questions"), list)
        and record.get("secret_id", "") == secret_id(secret)
    )
    return record if ok else None


def _attempt(record: dict[str, Any]) -> dict[str, Any]:
    timing = record.get("timing") or {}
    return {
        "status": record["status"],
        "reason": record["reason"],
        "total": record["total"],
        "limits": record.get("limits"),
        "cpu_s": timing.get("cpu_s"),
        "wall_s": record.get("elapsed"),
        "loadavg": timing.get("loadavg"),
    }


def rerun_timeouts(
    records: list[dict[str, Any]],
    lab: LabSpec,
    limits: Limits,
    done: Callable[[dict[str, Any]], None],
    progress: bool = True,
    secret: str = "",
) -> None:
    """Grade each ``timeout`` record not yet re-run once more, alone; report the final record to ``done``.

    The second attempt's result stands (a timeout counts only when it happens twice); the
    record gets ``rerun: True`` and ``attempts`` with the limits, CPU and wall seconds and
    load average of both attempts.
    """
    from tqdm.auto import tqdm

    todo = [r for r in records if r["status"] == "timeout" and not r.get("rerun")]
    for first in tqdm(todo, desc="re-running timeouts alone", unit="nb", disable=not progress or not todo):
        second = run_job(Job(str(lab.path), first["submission"], first["student"], limits, secret))
        second["rerun"], second["attempts"] = True, [_attempt(first), _attempt(second)]
        done(second)


def require_sandbox(sandboxed: bool) -> None:
    """Refuse to grade sandboxed kernels where bubblewrap is missing (checked before any calibration run).

    Raises:
        ValueError: when ``sandboxed`` and ``bwrap`` is missing or cannot create namespaces here.
    """
    from cnncourse.grading.sandbox import available

    if sandboxed and not available():
        raise ValueError(
            "expected the bubblewrap sandbox (`bwrap`) to isolate student kernels, but it is missing or "
            "cannot create namespaces here; install it (`apt-get install bubblewrap`) or grade with "
            "--no-sandbox"
        )


def check_shard_folder(out: str | os.PathLike, shard: tuple[int, int]) -> None:
    """Refuse to grade shard ``shard`` into a folder that holds another shard's output (checked before calibrating).

    Raises:
        ValueError: naming the shard the folder holds and the one expected.
    """
    before = read_manifest(out)
    if before is not None and before["shard"] != shard_text(shard):
        raise ValueError(
            f"{out} holds shard {before['shard']} of {before.get('lab')}; expected an empty folder or "
            f"shard {shard_text(shard)}'s own (give each shard its own --out)"
        )


def grade_batch(
    lab_path: str | os.PathLike,
    submissions: list[str | os.PathLike],
    out: str | os.PathLike,
    *,
    jobs: int = 1,
    limits: Limits | None = None,
    force: bool = False,
    progress: bool = True,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    secret: str = "",
    shard: tuple[int, int] = (1, 1),
    prestart: bool = True,
) -> list[dict[str, Any]]:
    """Grade every submission against the source lab and write ``out``'s records, gradebook and feedback.

    Args:
        jobs: submissions graded at once, each in its own worker process and kernel.
        limits: the limits to grade with; ``None`` calibrates them on the lab's reference solution
            (once per lab and machine, then cached), see :func:`cnncourse.grading.limits.resolve_limits`.
        force: re-grade submissions already graded with the same lab and submission checksums.
        secret: the course's secret, which seeds the hidden tests' random inputs (see :func:`checks.course_seed`).
        on_record: called in the main process after each new record is written (a re-run's too).
        shard: ``(K, N)``: grade only the students of the K-th of N shards (:func:`cnncourse.grading.shard.shard_of`);
            ``out``'s manifest records it for ``grade-merge``.
        prestart: start each submission's kernel while the one before it is graded (see
            :class:`cnncourse.grading.kernel.Spare`); ``False`` starts every kernel when its submission's turn comes.

    Returns:
        One record per submission, sorted by student name.

    Reference: nbgrader's ``autograde`` command, https://nbgrader.readthedocs.io/en/stable/command_line_tools/nbgrader-autograde.html
    """
    from tqdm.auto import tqdm

    require_sandbox(limits is None or limits.sandbox)
    if limits is None:
        limits = resolve_limits(lab_path, progress=progress)
    lab, out = load_lab(lab_path), Path(out)
    # Sandboxed kernels see neither the submissions nor the output folder.
    limits = replace(limits, hide=(*limits.hide, *map(str, submissions), str(out)))
    pairs = find_submissions(submissions)
    found = len(pairs)
    pairs = [(s, p) for s, p in pairs if shard_of(s, shard[1]) == shard[0]]
    check_shard_folder(out, shard)
    out.mkdir(parents=True, exist_ok=True)

    def manifest(complete: bool) -> None:
        write_manifest(
            out,
            lab=lab.name,
            lab_sha256=lab.sha256,
            grade_ids=[t.grade_id for t in lab.tests],
            shard=shard_text(shard),
            students=[s for s, _ in pairs],
            submissions_found=found,
            secret_id=secret_id(secret),
            sandbox=limits.sandbox,
            limits=describe(limits),
            complete=complete,
        )

    manifest(complete=False)  # claims the folder: a second shard pointed at it is refused
    records: dict[str, dict[str, Any]] = {}
    todo: list[Job] = []
    for student, path in pairs:
        previous = None if force else _previous(out, student, lab, path, secret)
        if previous is not None and limits.sandbox and previous.get("sandbox") is not True:
            previous = None  # graded without the sandbox before: grade again inside it
        if previous is not None:
            records[student] = previous
        else:
            todo.append(Job(str(lab.path), str(path), student, limits, secret))
    # Each job starts the kernel of the job `jobs` places later (what its worker most likely gets next)
    # while it runs; the last ones start none. A kernel that does not suit the job it meets is killed.
    for i, job in enumerate(todo[: len(todo) - max(1, jobs)] if prestart else ()):
        job.next_submission = todo[i + max(1, jobs)].submission
    bar = tqdm(total=len(pairs), initial=len(records), desc=f"grading {lab.name}", unit="nb", disable=not progress)

    def done(record: dict[str, Any], rerun: bool = False) -> None:
        record.setdefault("rerun", False)
        records[record["student"]] = record
        _write_record(out, record)
        if not rerun:
            bar.update(1)
            bar.set_postfix_str(f"{record['student']}: {record['status']}", refresh=False)
        if on_record is not None:
            on_record(record)

    try:
        if jobs <= 1:
            for job in todo:
                done(run_job(job))
        else:
            with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                pending: dict[Future, Job] = {pool.submit(run_job, job): job for job in todo}
                try:
                    while pending:
                        finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in sorted(finished, key=lambda f: pending[f].student):
                            job = pending.pop(fut)
                            try:
                                record = fut.result()
                            except Exception as exc:  # noqa: BLE001  (a dead worker still yields a record)
                                record = _error_record(lab, job, f"worker failed: {type(exc).__name__}: {exc}")
                            done(record)
                except BaseException:
                    for fut in pending:
                        fut.cancel()
                    raise
    finally:
        process_spare().close()  # the timeouts are re-run alone: no kernel starting beside them
        bar.close()
    rerun_timeouts([records[s] for s, _ in pairs], lab, limits, lambda r: done(r, rerun=True), progress, secret)
    ordered = [records[s] for s, _ in pairs]
    for record in ordered:  # rewrite from memory: undo anything a submission wrote into `out`
        _write_record(out, record)
    atomic_write_text(out / "gradebook.csv", gradebook_csv(lab, ordered))
    manifest(complete=True)
    expected = {f"{s}.json" for s, _ in pairs} | {f"feedback/{s}.html" for s, _ in pairs} | {"gradebook.csv", MANIFEST}
    extra = sorted(
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.is_file() and p.relative_to(out).as_posix() not in expected
    )
    if extra:
        print(
            f"warning: files in {out} that this run did not write (left untouched): " + ", ".join(extra[:20]),
            file=sys.stderr,
        )
    return ordered


def _error_record(lab: LabSpec, job: Job, reason: str) -> dict[str, Any]:
    questions = [
        {
            "grade_id": t.grade_id,
            "points": 0.0,
            "max_points": t.points,
            "passed": False,
            "feedback": f"not graded: {reason}",
            "detail": reason,
        }
        for t in lab.tests
    ]
    return {
        "schema": SCHEMA,
        "student": job.student,
        "submission": job.submission,
        "submission_sha256": "",
        "lab": lab.name,
        "lab_sha256": lab.sha256,
        "secret_id": secret_id(job.secret),
        "status": "error",
        "reason": reason,
        "total": 0.0,
        "max_total": lab.max_total,
        "elapsed": 0.0,
        "questions": questions,
        "missing_cells": [],
        "cell_errors": [],
        "sandbox": job.limits.sandbox,
        "flags": [],
        "limits": describe(job.limits),
        "timing": {},
    }
