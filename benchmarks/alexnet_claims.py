"""AlexNet's training claims measured on the 28x28 twin; writes book/results/alexnet_claims.json.

Experiments (Fashion-MNIST, ``alexnet_small``, CPU, one seed each):
  1. "activation": ReLU against tanh, the paper's Figure 1. No dropout, no augmentation, plain
     SGD with momentum 0.9 and the same learning rate for both; the training error of every epoch
     (running error over that epoch's mini-batches, as ``fit`` reports it) on a training subset.
     For each threshold the first epoch at which each network's training error is at or below it,
     and the ratio tanh / ReLU.
  2. "regularisation": a small training subset trained long enough to overfit, three runs:
     neither, dropout 0.5 only, random crops and flips only (``random_crop_flip(2)``).
     Final training accuracy (eval mode, no augmentation), test accuracy on a test subset, the gap.

The JSON is rewritten atomically after every run, so a partial run is still readable.

Usage (full, about 5 CPU-minutes at one thread; the two parts can run as two processes with --only):
    CNNCOURSE_DATA=/work/shared/data python benchmarks/alexnet_claims.py
Quick check of the script (a couple of CPU-minutes, does not overwrite the book's file by default):
    CNNCOURSE_DATA=/work/shared/data python benchmarks/alexnet_claims.py --quick --out /tmp/alexnet_claims.json

Reference: A. Krizhevsky, I. Sutskever, G. E. Hinton, "ImageNet Classification with Deep
Convolutional Neural Networks", NeurIPS 2012, sections 3.1 (ReLU, Figure 1), 4.1 (data
augmentation), 4.2 (dropout).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cnncourse.analysis import count_parameters  # noqa: E402
from cnncourse.data import load_dataset, random_crop_flip  # noqa: E402
from cnncourse.io import atomic_write_text  # noqa: E402
from cnncourse.models.alexnet import alexnet_small  # noqa: E402
from cnncourse.train import evaluate, fit  # noqa: E402
from provenance import header, now_utc  # noqa: E402  (benchmarks/ is sys.path[0] for a script)

OUT = Path(__file__).resolve().parents[1] / "book" / "results" / "alexnet_claims.json"
THRESHOLDS = [0.40, 0.30, 0.25, 0.20, 0.15, 0.12, 0.10]

SETTINGS = {
    "full": {"act_train": 1500, "act_epochs": 12, "act_lr": 0.02, "act_batch": 16,
             "reg_train": 500, "reg_test": 2000, "reg_epochs": 30, "reg_lr": 1e-3, "reg_batch": 32},
    "quick": {"act_train": 500, "act_epochs": 3, "act_lr": 0.02, "act_batch": 16,
              "reg_train": 200, "reg_test": 500, "reg_epochs": 2, "reg_lr": 1e-3, "reg_batch": 64},
}  # fmt: skip


def first_epoch_below(errors: list[float], threshold: float) -> int | None:
    """1-based index of the first epoch whose error is at or below ``threshold``; None if never."""
    return next((i + 1 for i, e in enumerate(errors) if e <= threshold), None)


def save(results: dict[str, Any], out: Path) -> None:
    """Write ``results`` atomically; with ``--only``, keep the other experiment's block from the file on disk."""
    if results.get("only") and out.exists():
        other = "regularisation" if results["only"] == "activation" else "activation"
        on_disk = json.loads(out.read_text())
        if other in on_disk:
            results[other] = on_disk[other]
    results["updated"] = now_utc()
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(results, indent=1) + "\n")


def activation_runs(train, s: dict[str, Any], results: dict[str, Any], out: Path) -> None:
    subset = train.take(s["act_train"], seed=0)
    block: dict[str, Any] = {"train_images": len(subset), "epochs": s["act_epochs"], "optimizer": "sgd momentum 0.9",
                             "lr": s["act_lr"], "batch_size": s["act_batch"], "dropout": 0.0, "curves": {}}
    results["activation"] = block
    for act in ("relu", "tanh"):
        start = time.perf_counter()
        h = fit(alexnet_small(activation=act, dropout=0.0), subset, epochs=s["act_epochs"], optimizer="sgd",
                lr=s["act_lr"], batch_size=s["act_batch"], seed=0, progress=False, device="cpu")
        block["curves"][act] = [round(1 - a, 5) for a in h["train_acc"]]
        block[f"{act}_seconds"] = round(time.perf_counter() - start, 1)
        print(f"{act}: training error per epoch {block['curves'][act]}", flush=True)
        save(results, out)
    block["first_epoch_below"] = {}
    for t in THRESHOLDS:
        r, th = (first_epoch_below(block["curves"][a], t) for a in ("relu", "tanh"))
        block["first_epoch_below"][str(t)] = {"relu": r, "tanh": th, "ratio": round(th / r, 2) if r and th else None}
    save(results, out)


def regularisation_runs(train, test, s: dict[str, Any], results: dict[str, Any], out: Path) -> None:
    subset = train.take(s["reg_train"], seed=1)
    test_subset = test.take(s["reg_test"], seed=0)
    block: dict[str, Any] = {"train_images": len(subset), "test_images": len(test_subset), "epochs": s["reg_epochs"],
                             "optimizer": "adam", "lr": s["reg_lr"], "batch_size": s["reg_batch"],
                             "augment": "random_crop_flip(pad=2, flip=True)", "runs": {}}
    results["regularisation"] = block
    for name, dropout, augment in (("neither", 0.0, False), ("dropout", 0.5, False),
                                   ("augmentation", 0.0, True)):
        gen = torch.Generator().manual_seed(0)
        model = alexnet_small(dropout=dropout)
        start = time.perf_counter()
        h = fit(model, subset, epochs=s["reg_epochs"], lr=s["reg_lr"], batch_size=s["reg_batch"],
                seed=0, progress=False, device="cpu", augment=random_crop_flip(2, generator=gen) if augment else None)
        clean_train = evaluate(model, subset, device="cpu")["accuracy"]
        test_acc = evaluate(model, test_subset, device="cpu")["accuracy"]
        block["runs"][name] = {
            "dropout": dropout, "augment": augment, "params": count_parameters(model),
            "train_acc_running": [round(a, 5) for a in h["train_acc"]],
            "final_train_acc": round(clean_train, 5), "final_test_acc": round(test_acc, 5),
            "gap": round(clean_train - test_acc, 5), "seconds": round(time.perf_counter() - start, 1),
        }  # fmt: skip
        r = block["runs"][name]
        print(f"{name}: train {r['final_train_acc']:.4f} test {r['final_test_acc']:.4f} gap {r['gap']:.4f}",
              flush=True)
        save(results, out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny settings, to check that the script runs")
    p.add_argument("--out", type=Path, default=OUT, help=f"JSON file to write (default {OUT})")
    # One thread: on a shared, busy machine two OpenMP threads per process waste CPU spinning.
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", choices=["activation", "regularisation"], default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    mode = "quick" if args.quick else "full"
    s = SETTINGS[mode]
    prov = header(argv)
    results: dict[str, Any] = {
        **prov, "mode": mode, "started": prov["date"],
        "dataset": "fashion-mnist", "model": "alexnet_small", "thresholds": THRESHOLDS,
    }  # fmt: skip
    if args.only:
        results["only"] = args.only  # two processes can fill the two blocks of one file
    train, test = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    if args.only in (None, "activation"):
        activation_runs(train, s, results, args.out)
    if args.only in (None, "regularisation"):
        regularisation_runs(train, test, s, results, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
