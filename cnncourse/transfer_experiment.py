"""The transfer chapter's experiment: every (target, data budget, strategy, seed), summarised and plotted.

Source: a course checkpoint pretrained on MNIST digits 0-4. Targets: ``"similar"`` (MNIST
digits 5-9, new classes from the same domain) and ``"different"`` (Fashion-MNIST).

Reference: J. Yosinski, J. Clune, Y. Bengio, H. Lipson, "How transferable are features in deep neural
networks?", NeurIPS 2014.
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Sequence

import torch

from cnncourse.checkpoints import load_pretrained, recipe
from cnncourse.data import ImageDataset, load_dataset
from cnncourse.train import evaluate
from cnncourse.transfer import STRATEGIES, fine_tune

TARGETS: dict[str, tuple[str, tuple[int, ...] | None]] = {
    "similar": ("mnist", (5, 6, 7, 8, 9)),
    "different": ("fashion-mnist", None),
}


def target_data(target: str, split: str) -> ImageDataset:
    """The ``"similar"`` (MNIST 5-9, relabelled 0-4) or ``"different"`` (Fashion-MNIST) target split.

    Reference: this module's ``TARGETS`` table.
    """
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of: {', '.join(TARGETS)}")
    name, classes = TARGETS[target]
    data = load_dataset(name, split)
    return data.filter_classes(classes) if classes is not None else data


def run_grid(checkpoint: str = "lenet5_mnist04", *, targets: Sequence[str] = tuple(TARGETS),
             sizes: Iterable[int] = (10, 100, 1000), strategies: Iterable[str] = tuple(STRATEGIES),
             seeds: Iterable[int] = (0, 1, 2), steps: int = 200, lr: float = 1e-3, batch_size: int = 64,
             test_size: int | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Fine-tune checkpoint ``checkpoint`` on every (target, images per class, strategy, seed).

    Each run starts from the checkpoint, draws ``size`` training images per class with ``seed``, trains
    for about ``steps`` Adam steps and records the accuracy on the target's test split (its first
    ``test_size`` images in a fixed random order when given).

    Returns:
        One dict per run: ``target, size, strategy, seed, accuracy, trainable_params, seconds``.

    Reference: the transfer chapter of this course; Yosinski et al., NeurIPS 2014.
    """
    from tqdm.auto import tqdm

    model_name = recipe(checkpoint).model
    cells = [(t, n, s, seed) for t in targets for n in sizes for s in strategies for seed in seeds]
    data = {t: (target_data(t, "train"), target_data(t, "test")) for t in targets}
    if test_size is not None:
        data = {t: (tr, te.take(min(test_size, len(te)), seed=0)) for t, (tr, te) in data.items()}
    rows = []
    for t, n, s, seed in tqdm(cells, desc=f"transfer grid ({checkpoint})", disable=not progress):
        train, test = data[t][0].per_class(n, seed=seed), data[t][1]
        model = load_pretrained(model_name, checkpoint)
        start = time.perf_counter()
        fine_tune(model, train, s, steps=steps, lr=lr, batch_size=batch_size, seed=seed, progress=False)
        rows.append({"target": t, "size": n, "strategy": s, "seed": seed,
                     "accuracy": evaluate(model, test)["accuracy"],
                     "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
                     "seconds": round(time.perf_counter() - start, 3)})
    return rows


def summarize(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation (``ddof=1``; 0 for one seed) of the accuracy per (target, size, strategy).

    Reference: :func:`run_grid`.
    """
    cells: dict[tuple, list[float]] = {}
    for r in rows:
        cells.setdefault((r["target"], r["size"], r["strategy"]), []).append(r["accuracy"])
    out = []
    for (t, n, s), accs in cells.items():
        a = torch.tensor(accs, dtype=torch.float64)
        out.append({"target": t, "size": n, "strategy": s, "mean": a.mean().item(),
                    "std": a.std().item() if len(accs) > 1 else 0.0, "seeds": len(accs)})
    return out


def plot_grid(summary: Sequence[dict[str, Any]], title: str | None = None):
    """Accuracy against images per class: one panel per target, one line (mean +- std) per strategy.

    Reference: :func:`summarize`.
    """
    import matplotlib.pyplot as plt

    targets = list(dict.fromkeys(r["target"] for r in summary))
    fig, axes = plt.subplots(1, len(targets), figsize=(4.6 * len(targets), 3.6), squeeze=False, sharey=True)
    for ax, t in zip(axes[0], targets):
        for s in dict.fromkeys(r["strategy"] for r in summary):
            pts = sorted((r["size"], r["mean"], r["std"]) for r in summary if r["target"] == t and r["strategy"] == s)
            n, m, sd = zip(*pts)
            ax.errorbar(n, m, yerr=sd, marker="o", capsize=3, label=s)
        dataset, classes = TARGETS.get(t, (t, None))
        ax.set_title(f"{t}: {dataset}" + (f" {classes[0]}-{classes[-1]}" if classes else ""))
        ax.set_xscale("log")
        ax.set_xlabel("training images per class")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy")
    axes[0][0].legend(title="strategy", loc="center right", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
