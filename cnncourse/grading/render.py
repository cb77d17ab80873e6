"""What a batch writes for people to read: the gradebook CSV, each student's feedback page, summaries.

Pure functions of the records (:mod:`cnncourse.grading.report` grades and writes them).
"""

from __future__ import annotations

import csv
import html
import io
import statistics
from collections import Counter
from typing import Any

from cnncourse.grading.autograde import STATUSES
from cnncourse.grading.labspec import LabSpec


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
