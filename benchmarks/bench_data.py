"""Images per second: cnncourse's in-memory BatchLoader against torchvision + ToTensor + DataLoader.

Both pipelines produce the same normalised float batches of MNIST training images; the
ratio is measured in one run on the same machine.

    CNNCOURSE_DATA=../shared/data python benchmarks/bench_data.py [--epochs 1] [--batch-size 128]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torchvision
from torchvision import transforms

from cnncourse.data import BatchLoader, candidate_roots, load_dataset
from provenance import print_header  # benchmarks/ is sys.path[0] when run as a script


def images_per_second(loader, n_images: int, epochs: int) -> float:
    start = time.perf_counter()
    seen = 0
    for _ in range(epochs):
        for x, y in loader:
            seen += len(y)
    assert seen == n_images * epochs
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for the baseline")
    args = parser.parse_args()
    print_header()

    t0 = time.perf_counter()
    ds = load_dataset("mnist", "train")
    load_s = time.perf_counter() - t0
    ours = images_per_second(BatchLoader(ds, args.batch_size, shuffle=True), len(ds), args.epochs)

    root = next(r for r in candidate_roots() if (r / "MNIST" / "raw").is_dir())
    tv = torchvision.datasets.MNIST(str(root), train=True, download=False, transform=transforms.Compose([
        transforms.ToTensor(), transforms.Normalize((ds.mean,), (ds.std,))]))
    baseline = images_per_second(torch.utils.data.DataLoader(tv, args.batch_size, shuffle=True,
                                                             num_workers=args.workers), len(tv), args.epochs)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"batch {args.batch_size}, {args.epochs} epoch(s) of {len(ds)} images")
    print(f"cnncourse load_dataset (parse + SHA-256): {load_s:.2f} s")
    print(f"{'pipeline':<44} {'images/s':>12}")
    print(f"{'cnncourse BatchLoader':<44} {ours:>12,.0f}")
    print(f"{'torchvision MNIST + ToTensor + DataLoader':<44} {baseline:>12,.0f}")
    print(f"ratio (cnncourse / torchvision): {ours / baseline:.1f}x")


if __name__ == "__main__":
    main()
