"""Autograder throughput and fixed cost per submission, with and without kernels started ahead.

Usage: ``CNNCOURSE_DATA=/path/to/data python benchmarks/bench_grading.py [--copies 10] [--jobs 1 2] [--repeats 1]``

Grades N copies of a correct lab00 submission with each ``--jobs`` value, once with every kernel
started when its submission's turn comes (``prestart off``) and once with the next kernel started
while the current submission is graded (``prestart on``, the default of ``grade``), interleaved
(off, on, off, on ...) so a change in the machine's load hits both alike. For each batch it prints:

- submissions per minute and wall seconds per submission (batch wall time / copies);
- the **fixed cost per submission as seen by the batch**: wall seconds per submission (times the
  number of workers) minus the mean wall time of the submission's own cells and tests: what a
  batch spends per submission that is not the submission's work (kernel start not hidden behind
  the previous submission, agent connection, scan, records), and ``start``, the mean wall time from a submission's turn to its
  kernel being connected;
- CPU seconds per submission: the kernel's (metered from its start, so start-up included) and, of
  that, what is not the cells' and tests' own (start-up, agent); and the grader's own (``os.times``
  of this process and its workers). Prestarting moves start-up off the critical path, it does not
  remove its CPU time: on a machine with no idle core (load above the CPU count) the wall figures
  approach the CPU ones.

Finally the raw cost of one kernel alone: spawn, and wait until its agent is connected; and of one zygote
(:mod:`cnncourse.grading.zygote`), the process that imports torch once per grading process and forks the
sandboxed kernels, so that a kernel's start no longer includes ``import torch``.
Tests run in the grader's process, against the kernel through proxies, as in a real run. The limits
are calibrated on the lab, as the ``grade`` command does: once into an empty cache, then from the cache.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnncourse.grading.autograde import Limits, job_hide, load_lab  # noqa: E402
from cnncourse.grading.kernel import Kernel  # noqa: E402
from cnncourse.grading.limits import resolve_limits  # noqa: E402
from cnncourse.grading.report import grade_batch  # noqa: E402
from provenance import print_header  # noqa: E402  (benchmarks/ is sys.path[0] for a script)

LAB = ROOT / "labs" / "lab00_tensors.ipynb"
CORRECT = ROOT / "tests" / "grading" / "lab00" / "correct.ipynb"


def kernel_overhead(repeats: int, limits: Limits) -> tuple[float, float, float]:
    """Mean wall seconds to spawn a kernel and to wait for its connected agent, and its CPU seconds by then."""
    spawns, connects, cpus = [], [], []
    hide = job_hide(load_lab(LAB), CORRECT, limits)
    for _ in range(repeats):
        t0 = time.perf_counter()
        kernel = Kernel(limits, None, None, hide)
        t1 = time.perf_counter()
        channel = kernel.connect(120)
        t2 = time.perf_counter()
        cpus.append(kernel.meter.read())
        channel.sock.close()
        kernel.kill()
        spawns.append(t1 - t0)
        connects.append(t2 - t1)
    return sum(spawns) / repeats, sum(connects) / repeats, sum(cpus) / repeats


def zygote_start() -> tuple[float, float] | None:
    """Wall and CPU seconds for one zygote to be ready (imports done): paid once per grading process."""
    from cnncourse.grading import zygote
    from cnncourse.grading.cputime import tree_cpu_seconds
    from cnncourse.grading.kernel import kernel_env

    if not zygote.available():
        return None
    t0 = time.perf_counter()
    z = zygote.Zygote(kernel_env())
    z.wait_ready(120)
    wall, cpu = time.perf_counter() - t0, tree_cpu_seconds(z.process.pid)
    z.close()
    return wall, cpu


def cpu_now() -> float:
    """CPU seconds of this process and its reaped children (worker processes; not the kernels, whose
    sandbox reaps them, so they are counted from the records)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def batch(subs: Path, out: Path, jobs: int, limits: Limits, prestart: bool) -> dict[str, float]:
    """Grade the copies once; the figures described in the module docstring."""
    load0 = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), cpu_now()
    records = grade_batch(LAB, [subs], out, jobs=jobs, limits=limits, force=True, progress=False, prestart=prestart)
    wall, cpu = time.perf_counter() - t0, cpu_now() - c0
    assert all(r["status"] == "ok" and r["total"] == r["max_total"] for r in records), "a copy failed"
    n = len(records)
    work = sum(s["wall_s"] for r in records for s in r["timing"]["steps"]) / n
    work_cpu = sum(s["cpu_s"] for r in records for s in r["timing"]["steps"]) / n
    kernel_cpu = sum(r["timing"]["cpu_s"] for r in records) / n
    return {
        "rate": 60 * n / wall,
        "per_sub": wall / n,
        "work": work,
        "fixed": wall * jobs / n - work,  # per worker: a batch takes n / jobs x (work + fixed)
        "start": sum(r["timing"]["start_s"] for r in records) / n,
        "cpu": kernel_cpu,
        "fixed_cpu": kernel_cpu - work_cpu,
        "grader_cpu": cpu / n,
        "prestarted": sum(bool(r["timing"].get("prestarted")) for r in records),
        "load": (load0 + os.getloadavg()[0]) / 2,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=1, help="interleaved off/on pairs per --jobs value")
    args = parser.parse_args()
    print_header()
    if not os.environ.get("CNNCOURSE_DATA"):
        sys.exit("set CNNCOURSE_DATA to the folder holding MNIST/raw")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CNNCOURSE_CACHE"] = str(Path(tmp) / "cache")
        t0 = time.perf_counter()
        resolve_limits(LAB, memory_mb=4096, progress=False)
        t1 = time.perf_counter()
        limits = resolve_limits(LAB, memory_mb=4096, progress=False)
        t2 = time.perf_counter()
        print(f"calibration: {t1 - t0:.1f} s once per lab and machine, then {1000 * (t2 - t1):.0f} ms from the cache; "
              f"limits {limits.cell_timeout:g} s CPU per cell, {limits.timeout:g} s in all")
        subs = Path(tmp) / "subs"
        subs.mkdir()
        for i in range(args.copies):
            shutil.copy(CORRECT, subs / f"student{i:03d}.ipynb")
        rows: dict[tuple[int, bool], list[dict[str, float]]] = {}
        for jobs in args.jobs:
            for rep in range(args.repeats):
                for prestart in (False, True):
                    r = batch(subs, Path(tmp) / f"out{jobs}{prestart}{rep}", jobs, limits, prestart)
                    rows.setdefault((jobs, prestart), []).append(r)
                    print(f"--jobs {jobs} prestart {'on ' if prestart else 'off'}: {r['rate']:5.1f} subs/min, "
                          f"{r['per_sub']:5.2f} s/sub wall, own cells+tests {r['work']:5.2f} s, fixed cost seen by "
                          f"the batch {r['fixed']:5.2f} s (turn to kernel connected {r['start']:5.2f} s, "
                          f"{r['prestarted']:.0f}/{args.copies} prestarted); CPU per sub: kernel {r['cpu']:5.2f} s, "
                          f"{r['fixed_cpu']:5.2f} s of it outside the cells, grader {r['grader_cpu']:5.2f} s; "
                          f"load {r['load']:.1f}", flush=True)
        spawn, connect, cpu = kernel_overhead(3, limits)
    print("\nmeans over repeats (fixed cost per submission as seen by the batch, wall):")
    for (jobs, prestart), rs in sorted(rows.items()):
        mean = {k: sum(r[k] for r in rs) / len(rs) for k in rs[0]}
        print(f"  --jobs {jobs} prestart {'on ' if prestart else 'off'}: {mean['fixed']:5.2f} s fixed, "
              f"{mean['rate']:5.1f} subs/min, load {mean['load']:.1f}")
    started = zygote_start()
    if started is not None:
        print(f"one zygote (once per grading process: --jobs N starts N, and each worker process imports torch too): "
              f"{started[0]:.2f} s wall, {started[1]:.2f} s CPU until ready")
    print(f"one kernel alone: spawn {spawn:.2f} s + until the agent is connected {connect:.2f} s "
          f"= {spawn + connect:.2f} s wall, {cpu:.2f} s CPU; load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
