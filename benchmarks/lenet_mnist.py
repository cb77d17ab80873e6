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
import json
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
from provenance import header  # noqa: E402  (benchmarks/ is sys.path[0] for a script)

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


PEAK_GFLOPS = 290.0  # fp32 peak of the course's reference machine, 2 cores (GUIDE.md, measured)


def gflop_per_epoch(images: int = 60_000, batch_size: int = 128) -> float:
    """Floating-point operations of one textbook LeNet-5 training epoch, counted by torch.

    ``FlopCounterMode`` counts the convolutions and matrix products of one forward and backward
    pass (2 per multiply-add); the rest (activations, pooling, Adam) adds well under 1%. The first
    convolution needs no input gradient, so the backward costs less than twice the forward.
    About 2.26 MFLOP per image: 136 GFLOP per 60,000-image epoch.
    """
    from torch.utils.flop_counter import FlopCounterMode

    model = lenet5(variant="textbook")
    x, y = torch.zeros(batch_size, *model.input_size), torch.zeros(batch_size, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() / batch_size * images / 1e9


def _batches(train, n: int, batch_size: int = 128) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` pre-sliced, normalised batches: the bare loop's input, with no data handling left to time."""
    from cnncourse.data import BatchLoader

    it = iter(BatchLoader(train, batch_size, shuffle=True, seed=0))
    return [next(it) for _ in range(n)]


def bare_loop(model, batches, memory_format=torch.contiguous_format) -> float:
    """Seconds for the textbook step (forward, loss, backward, Adam) over pre-sliced tensors."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    start = time.perf_counter()
    for x, y in batches:
        loss = F.cross_entropy(model(x.contiguous(memory_format=memory_format)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def fit_vs_bare(train, n_batches: int = 150, rounds: int = 3) -> dict:
    """``fit`` against the bare loop on the same ``n_batches``, interleaved, best of ``rounds`` each.

    Also the fraction of fp32 peak a LeNet-5 epoch reaches in the bare loop: eager, channels_last,
    and ``torch.compile`` (compile time excluded: one warm-up pass first).
    """
    batches = _batches(train, n_batches)
    best = {"fit": float("inf"), "bare": float("inf")}
    for _ in range(rounds):
        set_seed(0)
        t0 = time.perf_counter()
        fit(lenet5(variant="textbook"), train, epochs=1, max_batches=n_batches, progress=False, device="cpu")
        best["fit"] = min(best["fit"], time.perf_counter() - t0)
        set_seed(0)
        best["bare"] = min(best["bare"], bare_loop(lenet5(variant="textbook"), batches))
    out = {"batches": n_batches, "fit_seconds": round(best["fit"], 3), "bare_seconds": round(best["bare"], 3),
           "fit_over_bare": round(best["fit"] / best["bare"], 3)}
    print(f"{n_batches} batches: fit {best['fit']:.2f} s, bare loop {best['bare']:.2f} s, "
          f"fit/bare {best['fit'] / best['bare']:.2f}x (goal <= 1.15x)")
    epoch_batches = -(-len(train) // 128)
    variants = {"eager": (lambda m: m, torch.contiguous_format),
                "channels_last": (lambda m: m.to(memory_format=torch.channels_last), torch.channels_last),
                "compile": (torch.compile, torch.contiguous_format)}
    gflop = gflop_per_epoch(len(train))
    out["gflop_per_epoch"] = round(gflop, 1)
    out["peak_gflops"] = PEAK_GFLOPS
    out["peak_fraction"] = {}
    for name, (wrap, fmt) in variants.items():
        try:
            set_seed(0)
            model = wrap(lenet5(variant="textbook"))
            bare_loop(model, batches[:3], fmt)  # warm-up (compilation for torch.compile)
            seconds = min(bare_loop(model, batches, fmt) for _ in range(rounds)) * epoch_batches / n_batches
        except Exception as exc:  # torch.compile needs a C compiler; report instead of failing the run
            print(f"{name}: unavailable ({type(exc).__name__}: {str(exc)[:120]})")
            continue
        frac = gflop / seconds / PEAK_GFLOPS
        out["peak_fraction"][name] = {"epoch_seconds": round(seconds, 2), "fraction_of_peak": round(frac, 3)}
        print(f"{name:<14} {seconds:5.1f} s/epoch -> {gflop / seconds:5.1f} GFLOP/s "
              f"= {100 * frac:.1f}% of {PEAK_GFLOPS:.0f} GFLOP/s peak")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--budget", type=float, default=60.0, help="training seconds for the accuracy run")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--target", type=float, default=0.99, help="report the training time to this test accuracy")
    p.add_argument("--out", type=Path, default=OUT, help="results file (default book/results/...)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    root = next(str(r) for r in candidate_roots() if (r / "MNIST" / "raw").is_dir())

    # 0. Loop overhead: fit against a bare loop over pre-sliced tensors; fraction of fp32 peak.
    overhead = fit_vs_bare(train)

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
    trained, epochs, at_budget, to_target = 0.0, [], None, None
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
        if to_target is None and acc >= args.target:
            to_target = round(trained, 1)
        if trained > args.budget and to_target is not None:
            break
    print(f"accuracy within {args.budget:.0f} s of training: {at_budget}")
    print(f"training time to {args.target:.1%} test accuracy ({args.threads} threads): {to_target} s")
    prov = header()
    print(f"load average during the run: {prov['load_average_1min']:.1f} (machine shared; timings are noisy)")
    atomic_write_text(args.out, json.dumps({
        **prov,
        "dataloader_seconds_per_epoch": round(dl_seconds, 2), "fit_seconds_per_epoch": round(fit_seconds, 2),
        "ratio": round(dl_seconds / fit_seconds, 2), "one_epoch_acc": {"dataloader": dl_acc, "fit": fit_acc},
        "budget_seconds": args.budget, "accuracy_within_budget": at_budget, "epochs": epochs,
        "target_accuracy": args.target, "seconds_to_target": to_target, "loop_overhead": overhead,
    }, indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
