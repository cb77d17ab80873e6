"""Grade one submission of a source lab in its own kernel, under time and memory limits.

The grader reads the *source* lab (with solutions and hidden tests) and a student's
notebook (:mod:`cnncourse.grading.labspec` reads both). It takes a fresh IPython kernel for
the submission (:mod:`cnncourse.grading.kernel`; in a batch it was started while the previous
submission ran), whose grading agent (:mod:`cnncourse.grading.runner`) started before any
student code, and runs the student's code cells in the student's order. Wherever the
submission has a graded test cell (matched by nbgrader ``grade_id``) the source lab's test,
public and hidden parts, runs in *this* process (:func:`cnncourse.grading.harness.run_test`), reaching the student's
names through proxies; nothing the kernel does can change the test or its result. Each
test is scored as soon as it finishes, so a later hang or crash never loses a finished
question. Test cells the student deleted run after the last cell.

Limits: CPU time per cell and for the whole submission (see :mod:`cnncourse.grading.limits`:
measured on the kernel's processes, calibrated against the lab, with a wall-clock ceiling
as a safety net), and a data-segment limit
(``RLIMIT_DATA``) set in the kernel process before it starts. ``RLIMIT_AS`` is not used:
importing the CUDA build of torch alone maps about 3.3 GB of address space (and
initialising CUDA reserves far more), whereas ``RLIMIT_DATA`` counts only private
writable memory, which is what a memory bomb allocates. When a limit is hit the kernel's
whole process group is killed.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cnncourse.grading import limits as _limits
from cnncourse.grading.harness import run_test, warm_up
from cnncourse.grading.kernel import Kernel, Spare, kernel_env
from cnncourse.grading.labspec import LabSpec, TestCell, load_lab, plan, read_submission
from cnncourse.grading.rpc import PeerGone, PeerTimeout

__all__ = [
    "Job",
    "LabSpec",
    "Limits",
    "TestCell",
    "grade_submission",
    "kernel_env",
    "load_lab",
    "plan",
    "read_submission",
    "run_job",
]

SCHEMA = 1
STATUSES = ("ok", "timeout", "crashed", "invalid-notebook", "missing-cells", "error")
_DETAIL_CHARS = 600
_Kernel = Kernel  # its former name here (mutants.py and the benchmarks import it)


@dataclass(frozen=True)
class Limits:
    """Resource limits for one submission: CPU seconds per cell and in all, and data memory in MB.

    The wall-clock ceiling is ``wall_factor`` times each CPU limit; ``source`` says where the
    numbers came from (given, or calibrated by :func:`cnncourse.grading.limits.resolve_limits`).
    """

    timeout: float = 300.0
    cell_timeout: float = 60.0
    memory_mb: int | None = 4096
    # The kernel runs in a bubblewrap sandbox (see cnncourse.grading.sandbox) that hides `hide` too.
    sandbox: bool = True
    hide: tuple[str, ...] = ()
    wall_factor: float = _limits.WALL_FACTOR
    source: str = "given"


def secret_id(secret: str) -> str:
    """A short fingerprint of the course secret for records (so a resumed run never mixes secrets); "" for none."""
    return hashlib.sha256(b"cnncourse-secret\0" + secret.encode()).hexdigest()[:12] if secret else ""


def _short(text: str, n: int = _DETAIL_CHARS) -> str:
    text = str(text)
    return text if len(text) <= n else text[:n] + " [...]"


def _question(test: TestCell, passed: bool, feedback: str, detail: str = "") -> dict[str, Any]:
    return {
        "grade_id": test.grade_id,
        "points": test.points if passed else 0.0,
        "max_points": test.points,
        "passed": passed,
        "feedback": feedback,
        "detail": detail or feedback,
    }


def _score_report(test: TestCell, res: dict[str, Any]) -> dict[str, Any]:
    public, hidden = res.get("public"), res.get("hidden")
    if isinstance(public, dict):
        msg = f"{public.get('type')}: {public.get('message')}"
        return _question(test, False, _short(msg), _short(msg))
    if isinstance(hidden, dict):
        return _question(
            test,
            False,
            "passed the public tests but failed a hidden test",
            _short(f"hidden test: {hidden.get('type')}: {hidden.get('message')}"),
        )
    if public is None and hidden in (None, "not run"):
        return _question(test, True, "passed")
    return _question(test, False, "the test report was incomplete")


def grade_submission(
    lab: LabSpec,
    path: str | os.PathLike,
    student: str,
    limits: Limits = Limits(),
    secret: str = "",
    spare: Spare | None = None,
    after_start: Callable[[], None] | None = None,
) -> dict:
    """Grade one submission and return its record; never raises for a bad submission.

    The record holds ``student``, ``status`` (one of :data:`STATUSES`), ``reason``,
    ``total``, ``max_total``, ``elapsed``, per-question ``questions`` (points, pass/fail,
    student ``feedback`` and instructor ``detail``), ``cell_errors`` and checksums.

    Args:
        spare: kernels started ahead of time; the submission takes the spare one if it was started for a
            sandbox like its own (:class:`cnncourse.grading.kernel.Spare`), else starts a fresh kernel.
        after_start: called once this submission's kernel is connected (a batch starts the next kernel there,
            so it starts while this submission runs).

    Reference: nbclient's ``NotebookClient``, https://nbclient.readthedocs.io/en/latest/reference/nbclient.html
    """
    start = time.monotonic()
    path = Path(path)
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "student": student,
        "submission": str(path),
        "submission_sha256": "",
        "lab": lab.name,
        "lab_sha256": lab.sha256,
        "secret_id": secret_id(secret),
        "status": "ok",
        "reason": "",
        "total": 0.0,
        "max_total": lab.max_total,
        "elapsed": 0.0,
        "questions": [],
        "missing_cells": [],
        "cell_errors": [],
        "sandbox": limits.sandbox,
        "flags": [],
        "limits": _limits.describe(limits),
        "timing": {},
    }
    results: dict[str, dict[str, Any]] = {}
    steps_timing: list[dict[str, Any]] = []
    kernel = None

    def finish(status: str, reason: str, pending: str = "") -> dict[str, Any]:
        record["status"], record["reason"] = status, reason
        record["questions"] = [
            results.get(t.grade_id) or _question(t, False, pending or f"not graded: {reason}") for t in lab.tests
        ]
        record["total"] = sum(q["points"] for q in record["questions"])
        record["elapsed"] = round(time.monotonic() - start, 2)
        cpu_s = kernel.meter.read() if kernel is not None else 0.0
        record["timing"] = {
            **record["timing"],
            "cpu_s": round(cpu_s, 2),
            "wall_s": record["elapsed"],
            "loadavg": _limits.loadavg(),
            "steps": steps_timing,
        }
        return record

    try:
        raw = path.read_bytes()
    except OSError as exc:
        return finish("error", f"cannot read the submission: {exc}")
    record["submission_sha256"] = hashlib.sha256(raw).hexdigest()
    try:
        nb = read_submission(raw)
    except ValueError as exc:
        return finish("invalid-notebook", str(exc))
    from cnncourse.grading.scan import scan_notebook

    # For the instructor to read; a flag never changes a score.
    record["flags"] = scan_notebook(nb, [t.grade_id for t in lab.tests], lab.required_ids)
    steps, missing = plan(lab, nb)
    record["missing_cells"] = missing
    final = ("missing-cells", f"cells missing from the notebook: {', '.join(missing)}") if missing else ("ok", "")

    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    try:
        warm_up(lab.imports)
    except Exception as exc:  # noqa: BLE001
        return finish("error", _short(f"grader error importing the lab's modules: {type(exc).__name__}: {exc}", 300))
    channel = None
    current = "starting the kernel"
    running: TestCell | None = None
    cpu_left = wall_left = cpu_before = 0.0
    cpu_whole = wall_whole = False
    try:
        hide = job_hide(lab, path, limits)
        kernel = spare.take(limits, hide) if spare is not None else None
        record["timing"]["prestarted"] = kernel is not None
        if kernel is None:
            kernel = Kernel(limits, None, None, hide)
        current = "the grader's set-up"
        cpu_left, wall_left, cpu_whole, wall_whole = _limits.step_limits(
            limits, cpu_before := kernel.meter.read(), time.monotonic() - start, cell=False
        )
        with kernel.watchdog(max(cpu_left, 0)) as watchdog:
            try:
                channel = kernel.connect(wall_left)
            except BaseException:
                if watchdog.tripped:
                    raise _limits.CpuLimitExceeded(f"{watchdog.used:.1f} s of CPU time") from None
                raise
        record["timing"]["start_s"] = round(time.monotonic() - start, 2)
        if after_start is not None:
            try:
                after_start()
            except Exception:  # noqa: BLE001  (no spare: the next submission starts its own kernel)
                pass
        carry: dict[str, Any] = {}
        for kind, item in steps:
            cpu_before, wall_before = kernel.meter.read(), time.monotonic()
            cpu_left, wall_left, cpu_whole, wall_whole = _limits.step_limits(limits, cpu_before, wall_before - start)
            current = f"cell {item[0]}" if kind == "student" else f"the test {item.grade_id}"
            if cpu_left <= 0:
                raise _limits.CpuLimitExceeded("whole-submission CPU limit")
            if wall_left <= 0:
                raise CellTimeoutError("whole-submission wall-clock ceiling")
            per_cell = wall_left
            if kind == "student":
                index, source = item
                current, running = f"cell {index}", None
                reply = kernel.run(source, per_cell, cpu=cpu_left)
                if reply.get("status") == "error":
                    record["cell_errors"].append(
                        {"cell": index, "error": _short(f"{reply.get('ename')}: {reply.get('evalue')}", 300)}
                    )
            else:
                current, running = f"the test {item.grade_id}", item
                # The test runs here; its calls into the kernel wait at most the wall ceiling, and the kernel's
                # CPU time while they run counts against the same per-cell CPU limit as a student cell.
                channel.deadline = time.monotonic() + per_cell
                with kernel.watchdog(cpu_left) as watchdog:
                    try:
                        report = run_test(channel, item.grade_id, item.public, item.hidden, lab.imports, carry, secret)
                    except PeerTimeout:
                        raise CellTimeoutError("per-cell time limit") from None
                    except PeerGone:
                        if watchdog.tripped:
                            raise _limits.CpuLimitExceeded(f"{watchdog.used:.1f} s of CPU time") from None
                        raise DeadKernelError("the kernel closed its socket") from None
                    if watchdog.tripped:  # killed just as the test finished: the kernel's answers may be cut short
                        raise _limits.CpuLimitExceeded(f"{watchdog.used:.1f} s of CPU time")
                results[item.grade_id] = _score_report(item, report)
            steps_timing.append(
                {
                    "step": current,
                    "cpu_s": round(kernel.meter.read() - cpu_before, 2),
                    "wall_s": round(time.monotonic() - wall_before, 2),
                }
            )
        return finish(*final)
    except (CellTimeoutError, _limits.CpuLimitExceeded) as exc:
        cpu = isinstance(exc, _limits.CpuLimitExceeded)
        cell_cpu = kernel.meter.read() - cpu_before if kernel is not None else 0.0
        why = _limits.timeout_reason(
            limits, current, cpu=cpu, whole=cpu_whole if cpu else wall_whole, cell_cpu=cell_cpu
        )
        if running is not None:
            results[running.grade_id] = _question(running, False, f"timed out: {why}")
        return finish("timeout", why)
    except DeadKernelError:
        why = f"the kernel died during {current} (os._exit, a fatal signal or running out of memory)"
        if running is not None:
            results[running.grade_id] = _question(running, False, why)
        return finish("crashed", why)
    except Exception as exc:  # noqa: BLE001  (the grader must return a record whatever happens)
        return finish("error", _short(f"grader error during {current}: {type(exc).__name__}: {exc}", 300))
    finally:
        if channel is not None:
            channel.sock.close()
        if kernel is not None:
            kernel.kill()


@dataclass
class Job:
    """Arguments of one grading job, picklable for worker processes."""

    lab_path: str
    submission: str
    student: str
    limits: Limits = field(default_factory=Limits)
    secret: str = ""
    # Start a kernel for this submission once this job's kernel runs (the next job, if this process gets it).
    next_submission: str | None = None


_SPARE: Spare | None = None


def process_spare() -> Spare:
    """This process's :class:`~cnncourse.grading.kernel.Spare`; its kernel is killed when the process exits."""
    global _SPARE
    if _SPARE is None:
        _SPARE = Spare()
        atexit.register(_SPARE.close)
    return _SPARE


def job_hide(lab: LabSpec, submission: str | os.PathLike, limits: Limits) -> list | None:
    """What the sandbox hides from ``submission``'s kernel (:func:`~cnncourse.grading.sandbox.hidden_paths`)."""
    from cnncourse.grading.sandbox import hidden_paths

    return hidden_paths(lab.path, submission, limits.hide) if limits.sandbox else None


def run_job(job: Job) -> dict[str, Any]:
    """Worker entry point: grade one submission (the lab is re-read, so workers share nothing).

    It takes this process's spare kernel when that suits it, and with ``job.next_submission`` starts the
    next one while it runs.
    """
    lab, spare = load_lab(job.lab_path), process_spare()
    after_start = None
    if job.next_submission is not None:
        nxt = job.next_submission
        after_start = lambda: spare.start(job.limits, job_hide(lab, nxt, job.limits))  # noqa: E731
    return grade_submission(lab, job.submission, job.student, job.limits, job.secret, spare, after_start)
