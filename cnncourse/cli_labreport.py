"""``python -m cnncourse lab-report labs/``: per lab, its graded questions, their mutants and the kill rate.

Without ``--no-run`` each lab's mutant suite runs through the grader (see
:mod:`cnncourse.grading.mutants`), ``--jobs`` labs at a time (2 by default), which takes minutes;
``--no-run`` only counts mutants.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cnncourse.grading.mutants import MutantResult


def _labs(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        out += sorted(p.glob("lab*.ipynb")) if p.is_dir() else [p]
    return out


def _show(lab: str, result: MutantResult) -> None:
    """Print one mutant's result (module level, so that the suite's worker processes can receive it)."""
    print(f"  {lab:<24} {result.status:<10} {result.seconds:5.1f} s  {result.describe()}", flush=True)


def _cmd_lab_report(args: argparse.Namespace) -> int:
    from cnncourse.grading.autograde import load_lab
    from cnncourse.grading.mutants import MutantFileError, load_mutants, mutant_file, run_suites

    labs = _labs(args.labs)
    if not labs:
        print(f"error: no labs (lab*.ipynb) found in {', '.join(args.labs)}", file=sys.stderr)
        return 2
    found = {}
    for lab_path in labs:
        toml = mutant_file(lab_path, args.mutants)
        try:
            found[lab_path] = (toml, load_mutants(toml, lab_path) if toml.is_file() else [])
        except MutantFileError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    suites = {}
    if not args.no_run:
        graded = sum(bool(m) for _, m in found.values())
        print(f"grading the mutants of {graded} lab(s), {max(args.jobs, 1)} at a time: minutes for a whole course"
              f"{'' if args.verbose else ' (--verbose shows each mutant as it is graded)'}", flush=True)  # fmt: skip
        suites = run_suites([p for p, (_, m) in found.items() if m], jobs=args.jobs,
                            progress=_show if args.verbose else None, tests_dir=args.mutants)  # fmt: skip
    total_mutants = total_killed = 0
    complete = True
    for lab_path, (toml, mutants) in found.items():
        lab = load_lab(lab_path)
        killed: dict[str, int] = {}
        note = ""
        suite = suites.get(lab_path.stem)
        if isinstance(suite, Exception):
            note, complete = f", SUITE FAILED: {type(suite).__name__}: {suite}", False
        elif suite is not None:
            for r in suite.results:
                killed[r.mutant.question] = killed.get(r.mutant.question, 0) + (r.status == "killed")
            note = f", {suite.seconds:.0f} s" + ("" if suite.reference_ok else ", REFERENCE LOSES POINTS")
            complete &= suite.reference_ok
        print(
            f"\n{lab.name}  ({lab.max_total:g} points, {len(mutants)} mutants{note}"
            f"{'' if toml.is_file() else ', no ' + str(toml)})"
        )
        print(f"  {'question':<34} {'points':>6} {'mutants':>7} {'killed':>8}")
        for t in lab.tests:
            n = sum(m.question == t.grade_id for m in mutants)
            shown = "-" if args.no_run or not n else f"{killed.get(t.grade_id, 0) / n:.0%}"
            print(f"  {t.grade_id:<34} {t.points:>6g} {n:>7} {shown:>8}")
            complete &= n >= 5 and (args.no_run or killed.get(t.grade_id, 0) == n)
        total_mutants += len(mutants)
        total_killed += sum(killed.values())
    rate = (
        "not run"
        if args.no_run
        else f"{total_killed}/{total_mutants} killed"
        + (f" ({total_killed / total_mutants:.0%})" if total_mutants else "")
    )
    print(f"\ntotal: {len(labs)} labs, {total_mutants} mutants, {rate}; goal: >= 5 mutants per question, 100% killed")
    return 0 if complete else 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``lab-report`` on the ``python -m cnncourse`` parser."""
    r = sub.add_parser("lab-report", help="per lab: questions, points, mutants per question and the fraction killed")
    r.add_argument("labs", nargs="+", help="source labs or folders of them (e.g. labs/)")
    r.add_argument("--mutants", default=None, help="folder of <lab>.toml mutant files (default: tests/labs)")
    r.add_argument("--no-run", action="store_true", help="only count the mutants (fast); do not grade them")
    r.add_argument("--verbose", action="store_true", help="print each mutant's result as it is known")
    r.add_argument("--jobs", type=int, default=2, help="labs graded at a time, one process each (default: 2)")
    r.set_defaults(func=_cmd_lab_report)
