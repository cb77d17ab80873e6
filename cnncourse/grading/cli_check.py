"""``python -m cnncourse check NOTEBOOK``: the student's self-check before submitting (public tests only)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _cmd_check(args: argparse.Namespace) -> int:
    from cnncourse.grading.selfcheck import SelfCheckError, check, questions, read_notebook, report_text

    if args.cell_timeout <= 0 or args.timeout <= 0:
        print("error: --cell-timeout and --timeout must be positive", file=sys.stderr)
        return 2
    try:
        questions(read_notebook(args.notebook))  # a missing or unreadable notebook is refused at once
        print(
            f"Running {args.notebook} from the top in a fresh kernel with the public tests...",
            file=sys.stderr,
            flush=True,
        )
        result = check(args.notebook, cell_timeout=args.cell_timeout, timeout=args.timeout)
    except SelfCheckError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report_text(result))
    return 0 if result.ok else 1


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``check`` subcommand on ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    from cnncourse.grading.selfcheck import CELL_TIMEOUT, TIMEOUT

    c = subparsers.add_parser(
        "check",
        help="self-check a lab before submitting: run it with the public tests",
        description="Run a saved, released lab from the top in a fresh kernel with its public "
        "tests, through the grader's own code, and print the points per question "
        "(questions graded only by hidden tests are marked 'hidden'). Exit status "
        "0 when every public test passes, 1 when one fails, 2 for a missing or "
        "unreadable notebook. Like nbgrader's Validate button.",
    )
    c.add_argument("notebook", help="the saved student notebook, e.g. release/lab01_convolution.ipynb")
    c.add_argument(
        "--cell-timeout", type=float, default=CELL_TIMEOUT, help=f"CPU seconds per cell (default {CELL_TIMEOUT:g})"
    )
    c.add_argument("--timeout", type=float, default=TIMEOUT, help=f"CPU seconds in all (default {TIMEOUT:g})")
    c.set_defaults(func=_cmd_check)
    return c
