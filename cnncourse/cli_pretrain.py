"""``python -m cnncourse pretrain NAME``: re-train the course's own checkpoints from their recipes.

The recipes and the training live in :mod:`cnncourse.checkpoints`; this module only parses and prints,
and imports torch only when a command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from cnncourse import checkpoints

    if args.list or not args.names:
        for name, r in checkpoints.RECIPES.items():
            print(f"{name:<20} {r.description}")
        return 0
    names = list(checkpoints.RECIPES) if args.names == ["all"] else args.names
    for name in names:
        if name not in checkpoints.RECIPES:
            print(f"error: unknown checkpoint {name!r}; expected one of: {', '.join(checkpoints.RECIPES)}")
            return 2
    for name in names:
        entry = checkpoints.pretrain(name, args.out_dir, progress=not args.no_progress)
        print(
            f"{name}: source accuracy {entry['source_accuracy']:.4f}, {entry['bytes']:,} bytes, "
            f"sha256 {entry['sha256']}"
        )
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``python -m cnncourse pretrain NAME [NAME ...]`` on the CLI's subparsers.

    Reference: https://docs.python.org/3/library/argparse.html#sub-commands
    """
    p = subparsers.add_parser("pretrain", help="re-train the course's own checkpoints from their recipes")
    p.add_argument("names", nargs="*", help="checkpoint names (see --list) or 'all'")
    p.add_argument("--out-dir", type=Path, default=None, help="output folder (default: the package's checkpoints/)")
    p.add_argument("--list", action="store_true", help="list the recipes and exit")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_pretrain)
    return p
