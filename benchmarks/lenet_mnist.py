"""Textbook LeNet-5 on MNIST: ``cnncourse.train.fit`` against a plain torchvision DataLoader loop.

Prints seconds per epoch for both pipelines and their ratio (same model, optimizer, batch size and
thread count, measured in this run), then keeps training with ``fit`` and prints the test accuracy
after every epoch and the accuracy reached within 60 s of training. Writes
book/results/lenet_mnist_benchmark.json.

Usage:
    CNNCOURSE_DATA=/work/shared/data python benchmarks/lenet_mnist.py [--threads 2] [--budget 60]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cnncourse.data import candidate_roots, load_dataset  # noqa: E402
from cnncourse.io import atomic_write_text  # noqa: E402
from cnncourse.models.lenet import lenet5  # noqa: E402
from cnncourse.train import evaluate, fit, set_seed  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "book" / "results" / "lenet_mnist_benchmark.json"


def dataloader_epoch(model, optimizer, root: str) -> float:
    """One epoch of the standard PyTorch recipe: torchvision MNIST + ToTensor/Normalize + DataLoader."""
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    data = datasets.MNIST(root, train=True, download=False, transform=tf)
    loader = torch.utils.data.DataLoader(data, batch_size=128, shuffle=True, num_workers=0)
    model.train()
    start = time.perf_counter()
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--budget", type=float, default=60.0, help="training seconds for the accuracy run")
    p.add_argument("--lr", type=float, default=2e-3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    root = next(str(r) for r in candidate_roots() if (r / "MNIST" / "raw").is_dir())

    # 1. One epoch each, same initial weights, same optimizer settings.
    set_seed(0)
    m_dl = lenet5("textbook")
    m_fit = lenet5("textbook")
    m_fit.load_state_dict(m_dl.state_dict())
    dl_seconds = dataloader_epoch(m_dl, torch.optim.Adam(m_dl.parameters(), lr=1e-3), root)
    t0 = time.perf_counter()
    fit(m_fit, train, epochs=1, lr=1e-3, progress=False, device="cpu")
    fit_seconds = time.perf_counter() - t0
    dl_acc = evaluate(m_dl, test, device="cpu")["accuracy"]
    fit_acc = evaluate(m_fit, test, device="cpu")["accuracy"]
    print(f"seconds/epoch  DataLoader loop: {dl_seconds:.1f}   fit: {fit_seconds:.1f}   "
          f"ratio (DataLoader / fit): {dl_seconds / fit_seconds:.2f}x")  # fmt: skip
    print(f"test accuracy after 1 epoch: DataLoader loop {dl_acc:.4f}, fit {fit_acc:.4f}")

    # 2. Accuracy against training time with fit: Adam, learning rate halved every epoch.
    set_seed(0)
    model = lenet5("textbook")
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    trained, epochs, at_budget = 0.0, [], None
    for epoch in range(1, 11):
        for g in opt.param_groups:
            g["lr"] = args.lr * 0.5 ** (epoch - 1)
        t0 = time.perf_counter()
        fit(model, train, epochs=1, optimizer=opt, seed=epoch, progress=False, device="cpu")
        trained += time.perf_counter() - t0
        acc = evaluate(model, test, device="cpu")["accuracy"]
        epochs.append({"epoch": epoch, "train_seconds_cumulative": round(trained, 1), "test_acc": round(acc, 4)})
        print(f"epoch {epoch}: {trained:6.1f} s of training, test accuracy {acc:.4f}", flush=True)
        if trained <= args.budget:
            at_budget = acc
        if trained > args.budget:
            break
    print(f"accuracy within {args.budget:.0f} s of training: {at_budget}")
    load = os.getloadavg()
    print(f"load average during the run: {load[0]:.1f} (machine shared; timings are noisy)")
    atomic_write_text(OUT, json.dumps({
        "command": "python benchmarks/lenet_mnist.py " + " ".join(sys.argv[1:]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "threads": args.threads, "load_average_1min": round(load[0], 2),
        "dataloader_seconds_per_epoch": round(dl_seconds, 2), "fit_seconds_per_epoch": round(fit_seconds, 2),
        "ratio": round(dl_seconds / fit_seconds, 2), "one_epoch_acc": {"dataloader": dl_acc, "fit": fit_acc},
        "budget_seconds": args.budget, "accuracy_within_budget": at_budget, "epochs": epochs,
    }, indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
