"""``python -m cnncourse grade LAB SUBMISSIONS... --out DIR``: the instructor's batch autograder."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def _cmd_grade(args: argparse.Namespace) -> int:
    from cnncourse.grading.limits import resolve_limits
    from cnncourse.grading.release import MarkerError
    from cnncourse.grading.report import (
        _fmt,
        check_shard_folder,
        find_submissions,
        grade_batch,
        questions_table,
        require_sandbox,
        summary_text,
    )

    positive = [v for v in (args.timeout, args.cell_timeout) if v is not None]
    if args.jobs < 1 or min(positive, default=1) <= 0 or args.wall_factor < 1 or (args.memory or 0) < 0:
        print(
            "error: --jobs, --timeout, --cell-timeout and --memory must be positive, --wall-factor at least 1",
            file=sys.stderr,
        )
        return 2
    if args.no_sandbox:
        from cnncourse.grading.sandbox import UNPROTECTED

        print(
            "warning: --no-sandbox: student kernels run unconfined, so\n  - "
            + "\n  - ".join(UNPROTECTED)
            + "\nEvery record says sandbox: false.",
            file=sys.stderr,
        )
    try:
        find_submissions(args.submissions)  # bad paths fail here, before any calibration run
        check_shard_folder(args.out, args.shard)
        require_sandbox(not args.no_sandbox)
        limits = resolve_limits(
            args.lab,
            timeout=args.timeout,
            cell_timeout=args.cell_timeout,
            memory_mb=args.memory or None,
            wall_factor=args.wall_factor,
            progress=not args.no_progress,
            sandbox=not args.no_sandbox,
        )
        if not args.no_progress:
            print(
                f"limits: {limits.cell_timeout:g} s of CPU per cell, {limits.timeout:g} s in all, wall-clock "
                f"ceiling {args.wall_factor:g}x ({limits.source})",
                file=sys.stderr,
            )
        records = grade_batch(
            args.lab,
            args.submissions,
            args.out,
            jobs=args.jobs,
            limits=limits,
            force=args.force,
            progress=not args.no_progress,
            shard=args.shard,
            secret=args.secret if args.secret is not None else os.environ.get("CNNCOURSE_SECRET", ""),
        )
    except (FileNotFoundError, ValueError, MarkerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: records written so far are kept; run the same command again to resume", file=sys.stderr)
        return 130
    if len(records) == 1:  # one submission: its per-question table, as on its feedback page
        print(
            f"{records[0]['student']}: {_fmt(records[0]['total'])} / {_fmt(records[0]['max_total'])}\n"
            + questions_table(records[0])
            + "\n"
        )
    print(summary_text(records))
    shard = "" if args.shard == (1, 1) else f" (shard {args.shard[0]}/{args.shard[1]}; merge with grade-merge)"
    print(f"\nwrote {Path(args.out) / 'gradebook.csv'}, {len(records)} records and feedback/ in {args.out}{shard}")
    return 0


def _shard_arg(text: str) -> tuple[int, int]:
    """An argparse ``type`` for ``--shard K/N``."""
    from cnncourse.grading.shard import parse_shard

    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``grade`` subcommand on ``subparsers`` (from ``ArgumentParser.add_subparsers``).

    Reference: https://docs.python.org/3/library/argparse.html#sub-commands
    """
    g = subparsers.add_parser(
        "grade",
        help="autograde submitted notebooks against a source lab",
        description="Run each submission in its own kernel under time and memory limits, "
        "then the source lab's public and hidden tests; write DIR/<student>.json, "
        "DIR/gradebook.csv and DIR/feedback/<student>.html.",
    )
    g.add_argument("lab", help="the source lab notebook, with solutions and hidden tests")
    g.add_argument(
        "submissions",
        nargs="+",
        help="submitted notebooks or folders of them (nbgrader's submitted/<student>/<assignment>/ layout works)",
    )
    g.add_argument("--out", required=True, help="folder for records, gradebook.csv and feedback/")
    g.add_argument("--jobs", type=int, default=1, help="submissions graded in parallel (default 1)")
    g.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="CPU seconds per submission (default: calibrated, max(60, 3 x the reference solution's))",
    )
    g.add_argument(
        "--cell-timeout",
        type=float,
        default=None,
        help="CPU seconds per cell or test (default: calibrated, max(10, 3 x the reference solution's slowest cell))",
    )
    g.add_argument(
        "--wall-factor",
        type=float,
        default=4.0,
        help="wall-clock ceiling as a multiple of each CPU limit, for cells that sleep (default 4)",
    )
    g.add_argument(
        "--memory",
        type=int,
        default=4096,
        help="data memory limit per kernel in MB, RLIMIT_DATA (default 4096; 0 for none)",
    )
    g.add_argument(
        "--secret",
        default=None,
        help="the course's secret: seeds every random input of the hidden tests, so values memorised "
        "from the public repository are of no use (default: $CNNCOURSE_SECRET, else none)",
    )
    g.add_argument(
        "--no-sandbox",
        action="store_true",
        help="run kernels without the bubblewrap sandbox (when `bwrap` is missing); unsafe, see README",
    )
    g.add_argument(
        "--shard",
        type=_shard_arg,
        default=(1, 1),
        metavar="K/N",
        help="grade only the K-th of N shards of the class (K from 1), each student's shard fixed by a "
        "hash of the name; give each shard its own --out and join them with grade-merge",
    )
    g.add_argument("--force", action="store_true", help="re-grade submissions that already have a record")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.set_defaults(func=_cmd_grade)
    return g
