"""The transfer-learning grid of the transfer chapter: strategies x target sizes x targets x seeds.

Starts from the course checkpoint ``lenet5_mnist04`` (textbook LeNet-5 trained on MNIST digits 0-4)
and fine-tunes it on the "similar" target (MNIST digits 5-9) and the "different" one (Fashion-MNIST)
with 10, 100 and 1,000 training images per class, with each strategy of
``cnncourse.transfer.STRATEGIES`` and 3 seeds. Every run trains for the same number of Adam steps, so
the sizes differ in data, not in compute. Test accuracy is measured on the target's whole test split.

The results go to ``book/results/transfer_grid.json`` (rewritten after every run, with
``"complete": false`` until the last one), with the command, the date and the configuration.

Usage::

    python benchmarks/transfer_grid.py [--seeds 0 1 2] [--sizes 10 100 1000] [--steps 300] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from provenance import header, now_utc  # benchmarks/ is sys.path[0] when run as a script

import torch

from cnncourse import __version__, transfer, transfer_experiment
from cnncourse.io import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="lenet5_mnist04")
    p.add_argument("--targets", nargs="+", default=list(transfer_experiment.TARGETS))
    p.add_argument("--sizes", nargs="+", type=int, default=[10, 100, 1000])
    p.add_argument("--strategies", nargs="+", default=list(transfer.STRATEGIES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--test-size", type=int, default=None, help="evaluate on this many test images (default all)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscribing shared cores)")
    p.add_argument("--out", type=Path, default=ROOT / "book" / "results" / "transfer_grid.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    prov = header(argv)
    config = {k: v for k, v in vars(args).items() if k != "out"}
    rows: list[dict] = []
    total = len(args.targets) * len(args.sizes) * len(args.strategies) * len(args.seeds)

    def write(complete: bool) -> None:
        doc = {**prov, "started": prov["date"], "updated": now_utc(), "complete": complete,
               "runs_done": len(rows), "runs_total": total, "wall_seconds": round(time.perf_counter() - t0, 1),
               "library_version": __version__, "config": config,
               "summary": transfer_experiment.summarize(rows), "runs": rows}
        atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")

    t0 = time.perf_counter()
    # Sizes outermost, so a run stopped early still has both targets for the smaller sizes.
    for size in args.sizes:
        for target in args.targets:
            for strategy in args.strategies:
                rows += transfer_experiment.run_grid(args.checkpoint, targets=[target], sizes=[size], strategies=[strategy],
                                          seeds=args.seeds, steps=args.steps, lr=args.lr,
                                          test_size=args.test_size, progress=False)
                write(complete=False)
                print(f"[{len(rows)}/{total}] {target} {size}/class {strategy}: "
                      + ", ".join(f"{r['accuracy']:.4f}" for r in rows[-len(args.seeds):]), flush=True)
    write(complete=True)
    print(f"wrote {args.out} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
