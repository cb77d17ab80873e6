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

import csv
import html
import io
import json
import multiprocessing
import os
import re
import statistics
import sys
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from cnncourse.grading.autograde import SCHEMA, STATUSES, Job, LabSpec, Limits, load_lab, run_job, secret_id
from cnncourse.grading.limits import describe, resolve_limits
from cnncourse.grading.shard import MANIFEST, read_manifest, shard_of, shard_text, write_manifest
from cnncourse.io import atomic_write_text


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


def _fmt(points: float) -> str:
    return str(int(points)) if float(points).is_integer() else f"{points:.2f}"


def gradebook_csv(lab: LabSpec, records: list[dict[str, Any]]) -> str:
    """CSV text: ``student, status, total, max_total``, one column per ``grade_id``, then ``flags``; a row per record.

    ``flags`` joins the integrity flags of :mod:`cnncourse.grading.scan` with ``"; "``: notebooks to read, not scores.
    Nothing that depends on the machine or the run (times, paths) is in it, so shards merge into the same bytes.
    """
    return gradebook_csv_for([t.grade_id for t in lab.tests], records)


def gradebook_csv_for(ids: list[str], records: list[dict[str, Any]]) -> str:
    """:func:`gradebook_csv` from the graded ``grade_id`` list alone (``grade-merge`` has no lab file)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["student", "status", "total", "max_total", *ids, "flags"])
    for r in sorted(records, key=lambda r: r["student"]):
        points = {q["grade_id"]: q["points"] for q in r["questions"]}
        writer.writerow(
            [
                r["student"],
                r["status"],
                _fmt(r["total"]),
                _fmt(r["max_total"]),
                *(_fmt(points.get(i, 0.0)) for i in ids),
                "; ".join(r.get("flags", [])),
            ]
        )
    return out.getvalue()


def feedback_html(record: dict[str, Any]) -> str:
    """Student-facing HTML: per-question points and feedback; hidden-test details are withheld."""
    e = html.escape
    rows = "\n".join(
        f"<tr><td>{e(q['grade_id'])}</td><td>{'passed' if q['passed'] else 'failed'}</td>"
        f"<td>{_fmt(q['points'])} / {_fmt(q['max_points'])}</td><td><pre>{e(q['feedback'])}</pre></td></tr>"
        for q in record["questions"]
    )
    errors = "".join(f"<li>cell {c['cell']}: <code>{e(c['error'])}</code></li>" for c in record["cell_errors"])
    reason = f"<p>Note: {e(record['reason'])}</p>" if record["reason"] else ""
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{e(record['lab'])}: "
        f"{e(record['student'])}</title></head><body>\n<h1>{e(record['lab'])}: feedback for "
        f"{e(record['student'])}</h1>\n<p>Score: <b>{_fmt(record['total'])} / {_fmt(record['max_total'])}"
        f"</b> (grading status: {e(record['status'])})</p>{reason}\n<table border='1' cellpadding='4'>"
        f"<tr><th>question</th><th>result</th><th>points</th><th>feedback</th></tr>\n{rows}\n</table>\n"
        + (f"<h2>Cells that raised an error</h2><ul>{errors}</ul>\n" if errors else "")
        + "</body></html>\n"
    )


def questions_table(record: dict[str, Any], width: int = 72) -> str:
    """The feedback page's per-question table as text: question, result, points and the first line of feedback.

    A question may carry its own ``result`` word (the self-check's ``hidden``) and ``points: None`` for
    points not known yet; otherwise the result is ``passed`` or ``FAILED``.
    """
    rows = [("question", "result", "points", "feedback")]
    for q in record["questions"]:
        points = "?" if q["points"] is None else _fmt(q["points"])
        feedback = (q["feedback"].splitlines() or [""])[0]
        rows.append(
            (
                q["grade_id"],
                q.get("result") or ("passed" if q["passed"] else "FAILED"),
                f"{points} / {_fmt(q['max_points'])}",
                feedback if len(feedback) <= width else feedback[: width - 3] + "...",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}".rstrip() for r in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)


def summary_text(records: list[dict[str, Any]]) -> str:
    """A table of the count per status, the re-runs after a timeout, and the distribution of total scores."""
    lines = [f"{'status':<18}{'count':>6}"]
    counts = Counter(r["status"] for r in records)
    lines += [f"{s:<18}{counts[s]:>6}" for s in STATUSES if counts[s]]
    lines.append(f"{'all':<18}{len(records):>6}")
    reruns = [r for r in records if r.get("rerun")]
    if reruns:
        again = sum(r["status"] == "timeout" for r in reruns)
        lines.append(
            f"\nre-run alone after a timeout: {len(reruns)} ({len(reruns) - again} then finished, "
            f"{again} timed out again)"
        )
    if records:
        totals = [r["total"] for r in records]
        top = records[0]["max_total"]
        lines.append(
            f"\nscore (out of {_fmt(top)}): min {_fmt(min(totals))}, median "
            f"{_fmt(statistics.median(totals))}, mean {statistics.fmean(totals):.2f}, max {_fmt(max(totals))}"
        )
        for value, n in sorted(Counter(totals).items()):
            lines.append(f"  {_fmt(value):>6} | {'#' * n} {n}")
    return "\n".join(lines)


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
