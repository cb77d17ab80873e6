"""Autograder throughput: grade N copies of a correct lab00 submission with --jobs 1 and --jobs 2.

Usage: ``CNNCOURSE_DATA=/path/to/data python benchmarks/bench_grading.py [--copies 20]``

Prints submissions per minute for each job count, the speed-up of --jobs 2 over --jobs 1
(same run, same machine), and the fixed cost of every submission: starting a fresh
kernel, starting the grading agent in it (which imports torch and connects the kernel
to the grader's socket) inside the bubblewrap sandbox. Tests run in the grader's process,
against the kernel through proxies, as in a real run. The limits are calibrated on the lab,
as the ``grade`` command does: once into an empty cache (timed), then from the cache.
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

from cnncourse.grading.autograde import Limits, _Kernel  # noqa: E402
from cnncourse.grading.limits import resolve_limits  # noqa: E402
from cnncourse.grading.report import grade_batch  # noqa: E402
from cnncourse.grading.sandbox import hidden_paths  # noqa: E402
from provenance import print_header  # noqa: E402  (benchmarks/ is sys.path[0] for a script)

LAB = ROOT / "labs" / "lab00_tensors.ipynb"
CORRECT = ROOT / "tests" / "grading" / "lab00" / "correct.ipynb"


def kernel_overhead(repeats: int, limits: Limits) -> tuple[float, float]:
    """Mean seconds to start a kernel, and to start the grading agent in it (imports torch, connects)."""
    starts, setups = [], []
    for _ in range(repeats):
        work = tempfile.mkdtemp()
        t0 = time.perf_counter()
        kernel = _Kernel(limits, work, time.monotonic() + 120, hidden_paths(LAB, CORRECT) if limits.sandbox else None)
        t1 = time.perf_counter()
        channel = kernel.connect(120)
        t2 = time.perf_counter()
        channel.sock.close()
        kernel.kill()
        shutil.rmtree(work, ignore_errors=True)
        starts.append(t1 - t0)
        setups.append(t2 - t1)
    return sum(starts) / repeats, sum(setups) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=20)
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
        rates, results = {}, {}
        for jobs in (1, 2):
            out = Path(tmp) / f"out{jobs}"
            t0 = time.perf_counter()
            records = grade_batch(LAB, [subs], out, jobs=jobs, limits=limits, force=True, progress=True)
            seconds = time.perf_counter() - t0
            assert all(r["status"] == "ok" and r["total"] == r["max_total"] for r in records), "a copy failed"
            rates[jobs] = 60 * args.copies / seconds
            results[jobs] = (out / "gradebook.csv").read_text()
            mean_elapsed = sum(r["elapsed"] for r in records) / len(records)
            print(f"--jobs {jobs}: {args.copies} submissions in {seconds:.1f} s = {rates[jobs]:.1f} "
                  f"submissions/min (mean {mean_elapsed:.2f} s per submission inside its worker)")
        start, setup = kernel_overhead(3, limits)
    print(f"speed-up of --jobs 2 over --jobs 1: {rates[2] / rates[1]:.2f}x (on {os.cpu_count()} CPUs)")
    print(f"identical gradebooks: {results[1] == results[2]}")
    per_sub = 60 / rates[1]
    print(f"fixed cost per submission: kernel start {start:.2f} s + grading agent/import torch {setup:.2f} s "
          f"= {start + setup:.2f} s of {per_sub:.2f} s per submission at --jobs 1 "
          f"({100 * (start + setup) / per_sub:.0f}%)")


if __name__ == "__main__":
    main()
