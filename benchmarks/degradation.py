"""The degradation experiment of He et al. (2016) on Fashion-MNIST: plain and residual 20- and 56-layer nets.

Trains four networks built by ``cifar_resnet(depth, residual=...)`` (the 6n+2 networks of
section 4.2; option A shortcuts, so plain and residual twins have identical parameters) on the
same training subset, with the same seed, optimiser and batch order, one epoch at a time in
lockstep. After every epoch of every network it writes ``book/results/degradation.json``
atomically, so an interrupted run still leaves every finished epoch on disk.

Recorded per network and epoch: the training error (the running error over the epoch's batches,
in training mode, as in the paper's Figure 6 dashed curves), the training loss, and the error on
a fixed subset of the test set (eval mode).

Usage (defaults: 3,000 training images at 28x28, 5 epochs; about 7 CPU-minutes on one core, so run it
in the background at low priority on a shared machine):
    CNNCOURSE_DATA=/work/shared/data nice -n 19 nohup python benchmarks/degradation.py > /tmp/degradation.log 2>&1 &
Options: --train-size N --test-size N --epochs N --image-size {28,14} --batch-size N --lr X --threads N

Reference: K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image Recognition", CVPR 2016,
section 4.2, Figures 1 and 6.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cnncourse.analysis import count_parameters  # noqa: E402
from cnncourse.data import load_dataset  # noqa: E402
from cnncourse.io import atomic_write_text  # noqa: E402
from cnncourse.models.resnet import cifar_resnet  # noqa: E402
from cnncourse.train import evaluate, fit, set_seed  # noqa: E402
from provenance import header, now_utc  # noqa: E402  (benchmarks/ is sys.path[0] for a script)

OUT = Path(__file__).resolve().parents[1] / "book" / "results" / "degradation.json"
NETWORKS = [("plain", 20), ("residual", 20), ("plain", 56), ("residual", 56)]


def downsample(size: int):
    """Batch transform: average-pool 28x28 images to ``size`` x ``size`` (identity for 28)."""
    if 28 % size != 0:
        raise ValueError(f"image size must divide 28 (28, 14, 7), got {size}")
    factor = 28 // size

    def pool(x: torch.Tensor) -> torch.Tensor:
        return x if factor == 1 else F.avg_pool2d(x, factor)

    return pool


def main(argv: list[str] | None = None) -> dict:
    """Run the experiment with the command-line options in ``argv``; return the results dict."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train-size", type=int, default=3000, help="training images (a fixed random subset)")
    p.add_argument("--test-size", type=int, default=1000, help="test images used for the test error")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--image-size", type=int, default=28, choices=(28, 14, 7))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is kindest on a shared machine)")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.train_size < args.batch_size or args.epochs < 1:
        p.error("need --train-size >= --batch-size and --epochs >= 1")

    torch.set_num_threads(args.threads)
    train = load_dataset("fashion-mnist", "train").take(args.train_size, seed=args.seed)
    test = load_dataset("fashion-mnist", "test").take(args.test_size, seed=args.seed)
    transform = downsample(args.image_size)
    prov = header(argv)
    results = {
        "experiment": "degradation: plain vs residual 6n+2 networks (He et al. 2016, Figures 1 and 6)",
        **prov, "started": prov["date"], "updated": prov["date"], "status": "running",
        "settings": {"dataset": "fashion-mnist", "train_size": args.train_size, "test_size": args.test_size,
                     "epochs": args.epochs, "image_size": args.image_size, "batch_size": args.batch_size,
                     "optimizer": "adam", "lr": args.lr, "seed": args.seed, "shortcut": "A"},
        "runs": {},
    }  # fmt: skip

    nets, opts = {}, {}
    for kind, depth in NETWORKS:
        name = f"{kind}-{depth}"
        set_seed(args.seed)  # same initial weights for the plain and residual twins of one depth
        nets[name] = cifar_resnet(depth, residual=kind == "residual", in_channels=1, num_classes=10)
        opts[name] = torch.optim.Adam(nets[name].parameters(), lr=args.lr)
        results["runs"][name] = {"depth": depth, "residual": kind == "residual",
                                 "params": count_parameters(nets[name]), "epochs": []}

    def save() -> None:
        results["updated"] = now_utc()
        atomic_write_text(args.out, json.dumps(results, indent=1) + "\n")

    save()
    for epoch in range(1, args.epochs + 1):
        for name, net in nets.items():
            start = time.perf_counter()
            # Passing the optimiser object keeps Adam's state across the one-epoch calls; the seed
            # changes per epoch so each epoch sees a new batch order, the same for all four nets.
            h = fit(net, train, epochs=1, optimizer=opts[name], batch_size=args.batch_size, seed=args.seed + epoch,
                    device="cpu", progress=False, transform=transform)  # fmt: skip
            test_metrics = evaluate(net, test, transform=transform, device="cpu")
            rec = {"epoch": epoch, "train_error": round(1 - h.last["train_acc"], 5),
                   "train_loss": round(h.last["train_loss"], 5), "test_error": round(1 - test_metrics["accuracy"], 5),
                   "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
            results["runs"][name]["epochs"].append(rec)
            save()
            print(f"epoch {epoch}/{args.epochs} {name:12s} train error {rec['train_error']:.3f} "
                  f"test error {rec['test_error']:.3f} ({rec['seconds']:.0f} s)", flush=True)
    results["status"] = "complete"
    save()
    return results


if __name__ == "__main__":
    main()
