"""Fair time limits for the autograder: CPU time of the submission's own processes, calibrated on the lab.

Wall-clock limits punish a correct submission for what else the machine is doing: three
copies of lab03's reference solution graded with ``--jobs 2`` beside two busy processes
all timed out. So the grader limits **CPU time** of the kernel's processes instead, read
from the outside (``/proc`` on Linux, psutil elsewhere): every process in the kernel's
process group, plus every descendant of the launched process (which also covers a kernel
started inside a sandbox with its own PID namespace, or a child that called ``setsid``).
A processor shared with other work slows the wall clock, not the CPU time a computation
needs.

* **CPU limits:** a per-cell limit and a whole-submission limit. :class:`~cnncourse.grading.cputime.Watchdog`
  polls the meter (:mod:`cnncourse.grading.cputime`) while a cell runs and kills the kernel's processes
  when a limit is used up.
* **Wall-clock ceiling:** ``wall_factor`` times each CPU limit, a safety net for a cell
  that sleeps or blocks (it uses no CPU), reported separately.
* **Calibration:** :func:`calibrate` runs the source lab (the reference solution) once in a
  grading kernel and records each cell's CPU time, cached per lab checksum and machine;
  :func:`calibrated_limits` then gives every cell ``max(floor, factor × slowest reference
  cell)`` and the submission ``max(floor, factor × reference total)``. The slowest cell sets
  the per-cell limit for all cells because students split, merge and reorder cells.

Process CPU time still varies a little with load (shared caches, frequency scaling),
hence the factor; a timeout is also re-run alone before it counts (see ``report.py``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cnncourse.grading.cputime import (
    POLL_S,
    CpuLimitExceeded,
    CpuMeter,
    Watchdog,
    kill_tree,
    tree_cpu_seconds,
    tree_pids,
)
from cnncourse.io import atomic_write_text

# Measuring and enforcing CPU time lives in cputime.py; its names stay importable from here.
__all__ = [
    "POLL_S",
    "CpuLimitExceeded",
    "CpuMeter",
    "Watchdog",
    "calibrate",
    "calibrated_limits",
    "describe",
    "kill_tree",
    "resolve_limits",
    "step_limits",
    "timeout_reason",
    "tree_cpu_seconds",
    "tree_pids",
]

FACTOR = 3.0  # a cell may use this many times the reference solution's slowest cell ...
CELL_FLOOR = 10.0  # ... but never less than this many CPU seconds
TOTAL_FLOOR = 60.0  # the whole submission: max(TOTAL_FLOOR, FACTOR × reference total) CPU seconds
WALL_FACTOR = 4.0  # wall-clock ceiling = WALL_FACTOR × each CPU limit
CALIBRATION_SCHEMA = 1


# ---------------------------------------------------------------- per-step limits and the reasons given


def step_limits(limits: Any, cpu_used: float, wall_used: float, cell: bool = True) -> tuple[float, float, bool, bool]:
    """CPU and wall seconds the next cell may take: ``(cpu, wall, cpu_is_whole, wall_is_whole)``.

    ``limits`` is an :class:`~cnncourse.grading.autograde.Limits`; the ``*_is_whole`` flags say
    that what is left of the whole-submission limit is smaller than the per-cell limit. With
    ``cell=False`` (the grader's own set-up, not student work) only the whole-submission limits apply.
    """
    cpu_left = limits.timeout - cpu_used
    wall_left = limits.timeout * limits.wall_factor - wall_used
    if not cell:
        return cpu_left, wall_left, True, True
    cell_wall = limits.cell_timeout * limits.wall_factor
    return (
        min(limits.cell_timeout, cpu_left),
        min(cell_wall, wall_left),
        cpu_left < limits.cell_timeout,
        wall_left < cell_wall,
    )


def timeout_reason(limits: Any, current: str, *, cpu: bool, whole: bool, cell_cpu: float = 0.0) -> str:
    """The record's reason for a timeout: which limit (CPU or the wall-clock ceiling, per cell or in all) ran out."""
    if cpu and whole:
        return f"the whole-submission limit of {limits.timeout:g} s of CPU time ran out during {current}"
    if cpu:
        return f"{current} ran longer than the per-cell limit of {limits.cell_timeout:g} s of CPU time"
    if whole:
        return (
            f"the whole-submission wall-clock ceiling of {limits.timeout * limits.wall_factor:g} s "
            f"ran out during {current}"
        )
    ceiling = limits.cell_timeout * limits.wall_factor
    return (
        f"{current} ran longer than the per-cell wall-clock ceiling of {ceiling:g} s, using {cell_cpu:.1f} s "
        f"of its {limits.cell_timeout:g} s of CPU time (sleeping, waiting, or a busy machine)"
    )


def describe(limits: Any) -> dict[str, Any]:
    """The limits a record was graded under, for the record itself."""
    return {
        "cell_cpu_s": limits.cell_timeout,
        "total_cpu_s": limits.timeout,
        "cell_wall_s": round(limits.cell_timeout * limits.wall_factor, 2),
        "total_wall_s": round(limits.timeout * limits.wall_factor, 2),
        "memory_mb": limits.memory_mb,
        "source": limits.source,
    }


def loadavg() -> list[float]:
    """The 1-, 5- and 15-minute load averages (empty where the system has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return []


# ---------------------------------------------------------------- calibration against the reference solution


def machine_fingerprint() -> dict[str, Any]:
    """What makes a CPU-time measurement valid on this machine: processor, count, platform, Python and torch."""
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = "none"
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "system": platform.system(),
        "python": platform.python_version(),
        "torch": torch_version,
    }


def cache_dir() -> Path:
    """``$CNNCOURSE_CACHE/calibration``, else ``$XDG_CACHE_HOME/cnncourse/calibration`` (default ``~/.cache``)."""
    if os.environ.get("CNNCOURSE_CACHE"):
        return Path(os.environ["CNNCOURSE_CACHE"]) / "calibration"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnncourse" / "calibration"


def _cache_file(lab: Any, machine: dict[str, Any], sandbox: bool, folder: Path) -> Path:
    # The sandbox is part of the key: bwrap's namespaces and mounts change a kernel's start-up cost.
    fp = hashlib.sha256(json.dumps(dict(machine, sandbox=sandbox), sort_keys=True).encode()).hexdigest()[:12]
    return folder / f"{lab.name}-{lab.sha256[:16]}-{fp}.json"


def calibrate(
    lab_path: str | os.PathLike,
    *,
    memory_mb: int | None = 4096,
    folder: str | os.PathLike | None = None,
    progress: bool = True,
    sandbox: bool = True,
) -> dict[str, Any]:
    """Measure the CPU time of each cell of the source lab's reference solution, or reuse the cached measurement.

    The source lab is graded as if it were a submission (same kernel, same tests) under
    generous limits. The result is cached under :func:`cache_dir` (or ``folder``) keyed by
    the lab's SHA-256, :func:`machine_fingerprint` and ``sandbox``, so a changed lab, another
    machine or a switch to or from the sandbox is measured afresh. The returned dict has
    ``cpu_s`` (whole run), ``slowest`` (the step, its ``cpu_s`` and ``wall_s``), ``steps``,
    and ``cached`` (whether it was reused).

    Raises:
        ValueError: when the reference solution does not score full marks (its limits would be meaningless).
    """
    from cnncourse.grading.autograde import Limits, grade_submission, load_lab

    lab = load_lab(lab_path)
    machine = machine_fingerprint()
    path = _cache_file(lab, machine, sandbox, Path(folder) if folder else cache_dir())
    try:
        data = json.loads(path.read_text("utf-8"))
        if (
            data.get("schema") == CALIBRATION_SCHEMA
            and data.get("lab_sha256") == lab.sha256
            and data.get("machine") == machine
            and data.get("sandbox") is sandbox
            and isinstance(data.get("steps"), list)
            and data["steps"]
        ):
            return dict(data, cached=True, file=str(path))
    except (OSError, ValueError, AttributeError):
        pass
    if progress:
        print(
            f"calibrating time limits: running the reference solution of {lab.name} once (cached in {path.parent})",
            file=sys.stderr,
        )
    generous = Limits(
        timeout=7200.0, cell_timeout=3600.0, memory_mb=memory_mb, source="calibration run", sandbox=sandbox
    )
    record = grade_submission(lab, lab.path, "reference solution", generous)
    if record["status"] != "ok" or record["total"] != record["max_total"]:
        failed = [q["grade_id"] for q in record["questions"] if not q["passed"]]
        raise ValueError(
            f"{lab.path}: the source lab's own solution scored {record['total']:g} of "
            f"{record['max_total']:g} (status {record['status']}: {record['reason'] or 'failed tests'}; "
            f"failed: {', '.join(failed) or 'none'}); fix the lab or give --timeout and --cell-timeout"
        )
    steps = record["timing"]["steps"]
    data = {
        "schema": CALIBRATION_SCHEMA,
        "lab": lab.name,
        "lab_sha256": lab.sha256,
        "machine": machine,
        "sandbox": sandbox,
        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "loadavg": loadavg(),
        "cpu_s": record["timing"]["cpu_s"],
        "wall_s": record["timing"]["wall_s"],
        "slowest": max(steps, key=lambda s: s["cpu_s"]),
        "steps": steps,
    }
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")
    return dict(data, cached=False, file=str(path))


def calibrated_limits(
    calibration: dict[str, Any],
    *,
    factor: float = FACTOR,
    cell_floor: float = CELL_FLOOR,
    total_floor: float = TOTAL_FLOOR,
    wall_factor: float = WALL_FACTOR,
    memory_mb: int | None = 4096,
    cell_timeout: float | None = None,
    timeout: float | None = None,
    sandbox: bool = True,
) -> Any:
    """Limits from a :func:`calibrate` result; an explicit ``cell_timeout`` or ``timeout`` overrides its part."""
    from cnncourse.grading.autograde import Limits

    cell = cell_timeout or round(max(cell_floor, factor * calibration["slowest"]["cpu_s"]), 1)
    total = timeout or round(max(total_floor, factor * calibration["cpu_s"], cell), 1)
    given = [name for name, v in (("--cell-timeout", cell_timeout), ("--timeout", timeout)) if v]
    source = (
        f"calibrated on {calibration['lab']}: {factor:g} x reference CPU time (slowest cell "
        f"{calibration['slowest']['cpu_s']:.1f} s, all {calibration['cpu_s']:.1f} s), floors "
        f"{cell_floor:g} s / {total_floor:g} s" + (f"; given {', '.join(given)}" if given else "")
    )
    return Limits(
        timeout=total, cell_timeout=cell, memory_mb=memory_mb, wall_factor=wall_factor, source=source, sandbox=sandbox
    )


def resolve_limits(
    lab_path: str | os.PathLike,
    *,
    timeout: float | None = None,
    cell_timeout: float | None = None,
    memory_mb: int | None = 4096,
    wall_factor: float = WALL_FACTOR,
    progress: bool = True,
    sandbox: bool = True,
) -> Any:
    """The limits to grade ``lab_path`` with: the given ones if both are given, else calibrated ones."""
    from cnncourse.grading.autograde import Limits

    if timeout and cell_timeout:
        return Limits(
            timeout=timeout,
            cell_timeout=cell_timeout,
            memory_mb=memory_mb,
            wall_factor=wall_factor,
            source="given",
            sandbox=sandbox,
        )
    calibration = calibrate(lab_path, memory_mb=memory_mb, progress=progress, sandbox=sandbox)
    return calibrated_limits(
        calibration,
        memory_mb=memory_mb,
        wall_factor=wall_factor,
        cell_timeout=cell_timeout,
        timeout=timeout,
        sandbox=sandbox,
    )
