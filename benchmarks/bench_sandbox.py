"""The sandbox's fixed cost per submission: kernel start and setup with and without bubblewrap.

Usage: ``CNNCOURSE_DATA=/path/to/data python benchmarks/bench_sandbox.py [--repeats 5]``

Starts ``repeats`` kernels each way, interleaved so that a change of machine load hits both
alike, runs the grader's setup cell in each (it imports torch and the check helpers), and prints
the median seconds for each, their difference and their ratio. The sandboxed kernels hide the
same paths as in a real run (the source lab's folder and checkouts).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnncourse.grading import sandbox  # noqa: E402
from cnncourse.grading.autograde import Limits, _Kernel  # noqa: E402
from provenance import print_header  # noqa: E402  (benchmarks/ is sys.path[0] for a script)

LAB = ROOT / "labs" / "lab00_tensors.ipynb"


def start_and_setup(hide: list | None) -> tuple[float, float]:
    """Seconds to start one kernel, and to start the grading agent in it (imports torch, connects)."""
    work = tempfile.mkdtemp(prefix="cnncourse-grade-")
    t0 = time.perf_counter()
    kernel = _Kernel(Limits(), work, time.monotonic() + 120, hide)
    t1 = time.perf_counter()
    try:
        kernel.connect(120).sock.close()
    finally:
        t2 = time.perf_counter()
        kernel.kill()
        shutil.rmtree(work, ignore_errors=True)
    return t1 - t0, t2 - t1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print_header()
    if not sandbox.available():
        sys.exit("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
    hide = sandbox.hidden_paths(LAB, LAB)
    times: dict[str, list[tuple[float, float]]] = {"plain": [], "sandboxed": []}
    for _ in range(args.repeats):
        times["plain"].append(start_and_setup(None))
        scratch = tempfile.mkdtemp()
        t0 = time.perf_counter()
        sandbox.bwrap_prefix(scratch, scratch, hide)
        times.setdefault("prefix", []).append((time.perf_counter() - t0, 0.0))
        shutil.rmtree(scratch, ignore_errors=True)
        times["sandboxed"].append(start_and_setup(hide))
    med = {k: (statistics.median(s for s, _ in v), statistics.median(u for _, u in v)) for k, v in times.items()}
    print(f"{'kernel':<12}{'start s':>9}{'setup s':>9}{'total s':>9}   (median of {args.repeats})")
    for k in ("plain", "sandboxed"):
        print(f"{k:<12}{med[k][0]:>9.2f}{med[k][1]:>9.2f}{sum(med[k]):>9.2f}")
    extra = sum(med["sandboxed"]) - sum(med["plain"])
    print(f"\nsandbox cost per submission: {extra:+.2f} s ({sum(med['sandboxed']) / sum(med['plain']):.2f}x); "
          f"building the bwrap command: {med['prefix'][0] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
