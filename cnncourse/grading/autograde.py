"""Grade one submission of a source lab in its own kernel, under time and memory limits.

The grader reads the *source* lab (with solutions and hidden tests) and a student's
notebook. It starts a fresh IPython kernel for the submission, starts the grading agent
in it (:mod:`cnncourse.grading.runner`) before any student code, and runs the student's
code cells in the student's order. Wherever the submission has a graded test cell
(matched by nbgrader ``grade_id``) the source lab's test, public and hidden parts, runs
in *this* process (:func:`cnncourse.grading.harness.run_test`), reaching the student's
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

import hashlib
import math
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import nbformat

from cnncourse.grading import limits as _limits
from cnncourse.grading.harness import GraderChannel, lab_imports, run_test, warm_up
from cnncourse.grading.release import BEGIN_HIDDEN, find_regions, is_selfcheck_cell
from cnncourse.grading.rpc import PeerGone, PeerTimeout

SCHEMA = 1
STATUSES = ("ok", "timeout", "crashed", "invalid-notebook", "missing-cells", "error")
_DETAIL_CHARS = 600


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


def secret_id(secret: str) -> str:
    """A short fingerprint of the course secret for records (so a resumed run never mixes secrets); "" for none."""
    return hashlib.sha256(b"cnncourse-secret\0" + secret.encode()).hexdigest()[:12] if secret else ""


def kernel_env() -> dict[str, str]:
    """The environment of a student's kernel: the grader's, less the course secret, with one thread.

    The kernel inherits ``PYTHONPATH`` (so a development checkout of ``cnncourse`` is the one
    imported) and gets an absolute ``CNNCOURSE_DATA``.
    """
    # OMP_WAIT_POLICY=PASSIVE: a lab that asks for 2 threads on a busy machine would otherwise spin-wait
    # for a descheduled thread, burning CPU time that counts against its limit (measured: 12x the CPU time).
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        MPLBACKEND="Agg",
        PYDEVD_DISABLE_FILE_VALIDATION="1",
        PYTHONHASHSEED="0",
        OMP_WAIT_POLICY="PASSIVE",
    )
    env.pop("CNNCOURSE_SECRET", None)
    if env.get("CNNCOURSE_DATA"):
        # The kernel runs in a temporary folder: a relative data path would point nowhere.
        env["CNNCOURSE_DATA"] = os.path.abspath(env["CNNCOURSE_DATA"])
    return env


def _limit_memory(memory_mb: int | None) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if memory_mb:
            nbytes = int(memory_mb) * 2**20
            resource.setrlimit(resource.RLIMIT_DATA, (nbytes, nbytes))

    return apply


class _Kernel:
    """A kernel for one submission, driven through nbclient, that keeps no student output."""

    def __init__(self, limits: Limits, workdir: str, deadline: float, hide: list | None = None) -> None:
        from jupyter_client import AsyncKernelManager
        from nbclient import NotebookClient

        from cnncourse.grading import sandbox

        class Client(NotebookClient):
            def output(self, outs: Any, msg: dict[str, Any], display_id: Any, cell_index: int) -> None:
                # Outputs are dropped as they arrive: a 100 MB print costs no memory here, and
                # nothing the student's kernel prints is read by the grader.
                return None

        # IPC sockets in a private folder instead of TCP on localhost, which other users could reach.
        self.sockets = tempfile.mkdtemp(prefix="cnncourse-kernel-")
        if hide is None:
            self.km = AsyncKernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(self.sockets, "k"))
        else:  # sandboxed: the connection file sits with the sockets, the only folder shared with the kernel
            self.km = sandbox.kernel_manager(
                sandbox.bwrap_prefix(workdir, self.sockets, hide),
                kernel_name="python3",
                transport="ipc",
                ip=os.path.join(self.sockets, "k"),
                connection_file=os.path.join(self.sockets, "kernel.json"),
            )
        self.reply: dict[str, Any] = {}
        self.client = Client(
            nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("")]),
            km=self.km,
            allow_errors=True,
            iopub_timeout=10,
            shutdown_kernel="immediate",
            startup_timeout=max(1, int(min(120, deadline - time.monotonic()))),
        )
        self.client.on_cell_executed = self._on_executed
        env = kernel_env()
        try:
            self.client.start_new_kernel(
                cwd=workdir,
                env=env,
                preexec_fn=_limit_memory(limits.memory_mb),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.client.start_new_kernel_client()
        except BaseException:
            self.kill()
            raise
        provisioner: Any = self.km.provisioner  # a LocalProvisioner: it has the process
        self.meter = _limits.CpuMeter(provisioner.process.pid, getattr(provisioner, "pgid", None))

    def _on_executed(self, cell: Any, cell_index: int, execute_reply: dict[str, Any]) -> None:
        self.reply = execute_reply.get("content", {})

    def run(self, source: str, timeout: float, cpu: float | None = None) -> dict[str, Any]:
        """Execute ``source`` within ``timeout`` wall seconds and ``cpu`` CPU seconds; return the reply content.

        Raises:
            CpuLimitExceeded: when the kernel's processes used ``cpu`` seconds (they are killed).
            nbclient.exceptions.CellTimeoutError: when ``timeout`` wall seconds passed.
        """
        from nbclient.exceptions import DeadKernelError

        self.client.timeout = max(1, math.ceil(timeout))
        self.reply = {}
        with self.watchdog(cpu) as watchdog:
            try:
                self.client.execute_cell(nbformat.v4.new_code_cell(source), 0, store_history=False)
            except DeadKernelError:
                if watchdog.tripped:
                    raise _limits.CpuLimitExceeded(f"{watchdog.used:.1f} s of CPU time") from None
                raise
        return self.reply

    def watchdog(self, cpu: float | None) -> _limits.Watchdog:
        """A watchdog that kills the kernel's processes (the sandbox's too) once they used ``cpu`` more CPU seconds.

        Wrapped around every wait for the kernel: a student cell, and a trusted test's calls into the kernel.
        """
        return _limits.Watchdog(
            self.meter, math.inf if cpu is None else cpu, lambda: _limits.kill_tree(self.meter.root, self.meter.pgid)
        )

    def connect(self, timeout: float) -> GraderChannel:
        """Start the agent in the kernel (before any student code) and return the grader's end of its socket."""
        import socket

        path = os.path.join(self.sockets, "grader.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            server.bind(path)
            server.listen(1)
            server.settimeout(max(1.0, timeout))
            reply = self.run(
                f"import cnncourse.grading.runner as _cg_runner\n"
                f"_cg_runner.start({path!r}, get_ipython().user_ns)\ndel _cg_runner",
                timeout,
            )
            if reply.get("status") != "ok":
                raise RuntimeError(f"the grading agent did not start: {reply.get('ename')}: {reply.get('evalue')}")
            conn, _ = server.accept()
        finally:
            server.close()
        conn.settimeout(None)
        return GraderChannel(conn)

    def kill(self) -> None:
        """Kill the kernel's process group (its children too) and release its files."""
        pgid = getattr(self.km.provisioner, "pgid", None) if self.km.provisioner else None
        try:
            if self.client.kc is not None:
                self.client.kc.stop_channels()
        except Exception:  # noqa: BLE001
            pass
        if pgid:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        from nbclient.util import run_sync

        try:
            run_sync(self.km.shutdown_kernel)(now=True)
        except Exception:  # noqa: BLE001
            pass
        shutil.rmtree(self.sockets, ignore_errors=True)


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
    lab: LabSpec, path: str | os.PathLike, student: str, limits: Limits = Limits(), secret: str = ""
) -> dict:
    """Grade one submission and return its record; never raises for a bad submission.

    The record holds ``student``, ``status`` (one of :data:`STATUSES`), ``reason``,
    ``total``, ``max_total``, ``elapsed``, per-question ``questions`` (points, pass/fail,
    student ``feedback`` and instructor ``detail``), ``cell_errors`` and checksums.

    Reference: nbclient's ``NotebookClient``, https://nbclient.readthedocs.io/en/latest/reference/nbclient.html
    """
    start = time.monotonic()
    deadline = start + limits.timeout * limits.wall_factor
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
    workdir = tempfile.mkdtemp(prefix="cnncourse-grade-")
    channel = None
    current = "starting the kernel"
    running: TestCell | None = None
    cpu_left = wall_left = cpu_before = 0.0
    cpu_whole = wall_whole = False
    try:
        from cnncourse.grading.sandbox import hidden_paths

        hide = hidden_paths(lab.path, path, limits.hide) if limits.sandbox else None
        kernel = _Kernel(limits, workdir, deadline, hide)
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
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class Job:
    """Arguments of one grading job, picklable for worker processes."""

    lab_path: str
    submission: str
    student: str
    limits: Limits = field(default_factory=Limits)
    secret: str = ""


def run_job(job: Job) -> dict[str, Any]:
    """Worker entry point: grade one submission (the lab is re-read, so workers share nothing)."""
    return grade_submission(load_lab(job.lab_path), job.submission, job.student, job.limits, job.secret)
