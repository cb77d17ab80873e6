"""The transfer chapter's experiment: does pretraining help, and how deep should fine-tuning go?

Source: the course checkpoint ``lenet5_mnist04_full``, textbook LeNet-5 trained on all of MNIST's
digits 0-4 (about 29,000 images). If the checkpoint is missing it is pretrained first
(``python -m cnncourse pretrain lenet5_mnist04_full``, under a minute on one idle core).

Targets (``cnncourse.transfer.TARGETS``): "similar", MNIST digits 5-9 (five classes the source never
saw, from the same domain), and "different", Fashion-MNIST. For every number of labelled training
images per class, every strategy of ``cnncourse.transfer.STRATEGIES`` (``scratch`` is the same network
randomly initialised) and every seed, one run fine-tunes for the same number of Adam steps and records
the accuracy on the target's whole test split. The seed draws the training images, the new head and
the batch order.

The results go to ``book/results/transfer.json`` (rewritten after every cell, with ``"complete": false``
until the last one): the shared provenance header (command, UTC date, machine, threads, load), the
configuration, the source checkpoint's manifest entry, one row per run and the mean and standard
deviation per cell.

Usage::

    python benchmarks/transfer.py [--sizes 2 5 20 100 1000] [--seeds 0 1 2] [--steps 300] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from provenance import header  # benchmarks/ is sys.path[0] when run as a script

from cnncourse import __version__, checkpoints, transfer
from cnncourse.io import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = "lenet5_mnist04_full"


def ensure_checkpoint(name: str) -> dict:
    """The manifest entry of checkpoint ``name``, pretraining it first when it is missing."""
    try:
        checkpoints.checkpoint_path(name)
    except FileNotFoundError:
        print(f"checkpoint {name} not found: pretraining it (python -m cnncourse pretrain {name})", flush=True)
        checkpoints.pretrain(name, progress=False)
    return checkpoints.read_manifest()[name]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=CHECKPOINT)
    p.add_argument("--targets", nargs="+", default=list(transfer.TARGETS))
    p.add_argument("--sizes", nargs="+", type=int, default=[2, 5, 20, 100, 1000])
    p.add_argument("--strategies", nargs="+", default=list(transfer.STRATEGIES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--test-size", type=int, default=None, help="evaluate on this many test images (default all)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscribing shared cores)")
    p.add_argument("--out", type=Path, default=ROOT / "book" / "results" / "transfer.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    for t in args.targets:
        transfer.target_data(t, "test")  # fail now, not after an hour, on an unknown target or missing data
    prov = header(argv)
    config = {k: v for k, v in vars(args).items() if k != "out"}
    t0 = time.perf_counter()
    source = ensure_checkpoint(args.checkpoint)
    pretrain_seconds = round(time.perf_counter() - t0, 1)
    rows: list[dict] = []
    total = len(args.targets) * len(args.sizes) * len(args.strategies) * len(args.seeds)

    def write(complete: bool) -> None:
        doc = {**prov, "complete": complete, "runs_done": len(rows), "runs_total": total,
               "wall_seconds": round(time.perf_counter() - t0, 1), "pretrain_seconds": pretrain_seconds,
               "library_version": __version__, "config": config, "source": source,
               "summary": transfer.summarize(rows), "runs": rows}
        atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")

    # Sizes outermost, so a run stopped early still has every target and strategy for the smaller sizes.
    for size in args.sizes:
        for target in args.targets:
            for strategy in args.strategies:
                rows += transfer.run_grid(args.checkpoint, targets=[target], sizes=[size], strategies=[strategy],
                                          seeds=args.seeds, steps=args.steps, lr=args.lr,
                                          test_size=args.test_size, progress=False)
                write(complete=False)
                print(f"[{len(rows)}/{total}] {target} {size}/class {strategy}: "
                      + ", ".join(f"{r['accuracy']:.4f}" for r in rows[-len(args.seeds):])
                      + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
    write(complete=True)
    print(f"wrote {args.out} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
