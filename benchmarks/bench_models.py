"""The four CPU-sized twins on Fashion-MNIST: seconds per epoch, test accuracy, parameters.

Trains ``alexnet_small``, ``vgg_small``, ``googlenet_small`` and ``cifar_resnet(20)`` with the
same data subset, epochs, optimizer (Adam, lr 1e-3, batch 128) and seed, evaluates each on the
Fashion-MNIST test set, prints one table and writes it to book/results/bench_models.json.
Seconds per epoch are training time only (no evaluation), the mean over the epochs; the
load average is recorded because the machine may be shared.

With ``--full-size`` (meant for a GPU) it also times forward + backward of the ImageNet
models (``alexnet``, ``vgg16``, ``googlenet``, ``resnet50``) on random 224x224 batches and
prints images per second.

Usage:
    CNNCOURSE_DATA=/work/shared/data python benchmarks/bench_models.py [--epochs 2]
        [--train-size 10000] [--threads 2] [--device cpu] [--full-size]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cnncourse.data import load_dataset  # noqa: E402
from cnncourse.io import atomic_write_text  # noqa: E402
from cnncourse.models import get_model  # noqa: E402
from cnncourse.train import evaluate, fit, pick_device, set_seed  # noqa: E402
from provenance import header  # noqa: E402  (benchmarks/ is sys.path[0] for a script)

OUT = Path(__file__).resolve().parents[1] / "book" / "results" / "bench_models.json"

# label shown in the table -> (registry name, builder kwargs)
TWINS: dict[str, tuple[str, dict]] = {
    "alexnet_small": ("alexnet_small", {}),
    "vgg_small": ("vgg_small", {}),
    "googlenet_small": ("googlenet_small", {}),
    "cifar_resnet20": ("cifar_resnet", {"depth": 20}),
}
FULL_SIZE = ["alexnet", "vgg16", "googlenet", "resnet50"]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def bench_twin(label: str, train, test, args: argparse.Namespace, device: torch.device) -> dict:
    """Train one twin from the same seed and return its row of the table."""
    name, kwargs = TWINS[label]
    set_seed(args.seed)
    model = get_model(name, **kwargs)
    history = fit(model, train, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                  device=device, progress=args.progress)
    metrics = evaluate(model, test, device=device)
    seconds = [e["seconds"] for e in history.epochs]
    return {
        "model": label,
        "builder": name,
        "kwargs": kwargs,
        "params": n_params(model),
        "seconds_per_epoch": round(sum(seconds) / len(seconds), 2),
        "epoch_seconds": [round(s, 2) for s in seconds],
        "train_acc": round(history.last["train_acc"], 4),
        "test_acc": round(metrics["accuracy"], 4),
        "test_loss": round(metrics["loss"], 4),
    }


def bench_full_size(name: str, device: torch.device, batch: int, size: int, steps: int) -> dict:
    """Forward + backward images per second of one ImageNet model on random data."""
    torch.manual_seed(0)
    model = get_model(name).to(device).train()
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    step()  # warm-up: kernel selection and allocation
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"model": name, "params": n_params(model), "batch": batch, "image_size": size,
            "images_per_second": round(batch * steps / seconds, 1)}


def format_table(rows: list[dict]) -> str:
    baseline = rows[0]["seconds_per_epoch"]
    lines = [f"{'model':<17}{'params':>10}{'s/epoch':>10}{'vs first':>10}{'train acc':>11}{'test acc':>10}"]
    for r in rows:
        lines.append(f"{r['model']:<17}{r['params']:>10,}{r['seconds_per_epoch']:>10.1f}"
                     f"{r['seconds_per_epoch'] / baseline:>9.2f}x{r['train_acc']:>11.4f}{r['test_acc']:>10.4f}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-size", type=int, default=10000, help="random training subset (0 = all 60,000)")
    p.add_argument("--test-size", type=int, default=0, help="random test subset (0 = all 10,000)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--models", nargs="+", default=list(TWINS), choices=list(TWINS))
    p.add_argument("--full-size", action="store_true", help="also time the ImageNet models (use a GPU)")
    p.add_argument("--full-batch", type=int, default=64)
    p.add_argument("--full-image", type=int, default=224)
    p.add_argument("--full-steps", type=int, default=10)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    if args.epochs < 1 or args.train_size < 0 or args.test_size < 0:
        raise SystemExit("--epochs must be >= 1 and sizes >= 0")

    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    train = load_dataset("fashion-mnist", "train")
    test = load_dataset("fashion-mnist", "test")
    if args.train_size:
        train = train.take(args.train_size, seed=args.seed)
    if args.test_size:
        test = test.take(args.test_size, seed=args.seed)

    started = time.perf_counter()
    loads = [os.getloadavg()[0]]
    rows = []
    for label in args.models:
        rows.append(bench_twin(label, train, test, args, device))
        loads.append(os.getloadavg()[0])
        print(f"{label}: done ({rows[-1]['seconds_per_epoch']:.1f} s/epoch)", flush=True)

    print(f"\nFashion-MNIST, {len(train)} training images, {args.epochs} epochs, seed {args.seed}, "
          f"{len(test)} test images, device {device}, {args.threads} threads")
    print(format_table(rows))
    print(f"1-minute load average: {min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} CPUs "
          "(a shared machine makes seconds noisy; compare ratios within one run)")

    full = []
    if args.full_size:
        for name in FULL_SIZE:
            full.append(bench_full_size(name, device, args.full_batch, args.full_image, args.full_steps))
            print(f"{name:<10} {full[-1]['params']:>12,} params  {full[-1]['images_per_second']:>9.1f} images/s "
                  f"(forward + backward, batch {args.full_batch}, {args.full_image}x{args.full_image})", flush=True)

    atomic_write_text(args.out, json.dumps({
        **header(),
        "device": str(device),
        "load_average_1min": {"min": round(min(loads), 2), "max": round(max(loads), 2)},  # over the run
        "dataset": "fashion-mnist",
        "train_size": len(train),
        "test_size": len(test),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": f"adam lr={args.lr}",
        "seed": args.seed,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
        "full_size": full,
    }, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
