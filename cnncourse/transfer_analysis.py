"""Measuring transfer: the experiment grid's targets, the backbone's features, and the grid's results.

* ``TARGETS`` / ``target_data``: the "similar" (MNIST 5-9) and "different" (Fashion-MNIST) targets.
* ``extract_features`` / ``pca_2d``: the features a backbone hands its head, and a 2-D view of them.
* ``summarize`` / ``plot_grid``: the runs of :func:`cnncourse.transfer.run_grid` reduced to mean and
  standard deviation per cell, and drawn.

:func:`~cnncourse.transfer.run_grid` itself stays in :mod:`cnncourse.transfer` beside
:func:`~cnncourse.transfer.fine_tune`, which it calls; that module re-exports everything here, so
``transfer.summarize`` and ``transfer.plot_grid`` (the transfer chapter, lab 6) keep working.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
import torch.nn as nn

from cnncourse.data import BatchLoader, ImageDataset, load_dataset
from cnncourse.model_parts import find_head
from cnncourse.utils import eval_mode

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


@torch.no_grad()
def extract_features(
    model: nn.Module, data: ImageDataset, *, head: str | None = None, batch_size: int = 512
) -> torch.Tensor:
    """The inputs of the head (the backbone's features), ``(N, D)``, for every image of ``data``, in eval mode.

    Reference: Donahue et al., "DeCAF", ICML 2014 (features of a frozen network as a representation).
    """
    head_module = model.get_submodule(head or find_head(model))
    feats: list[torch.Tensor] = []
    handle = head_module.register_forward_pre_hook(lambda m, args: feats.append(args[0].flatten(1).cpu()))
    device = next(model.parameters()).device
    try:
        with eval_mode(model):
            for x, _ in BatchLoader(data, batch_size, device=device):
                model(x)
    finally:
        handle.remove()
    return torch.cat(feats)


def pca_2d(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Project ``(N, D)`` features on their first two principal components.

    Returns:
        ``(N, 2)`` coordinates and the fraction of the variance each of the two components explains.

    Reference: I. T. Jolliffe, *Principal Component Analysis*, 2nd ed., Springer 2002, ch. 1.
    """
    if features.dim() != 2 or features.shape[0] < 2:
        raise ValueError(f"expected features (N >= 2, D), got {tuple(features.shape)}")
    x = features.double() - features.double().mean(0)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    return (x @ vh[:2].T).float(), (s[:2] ** 2 / (s**2).sum()).float()


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
        out.append(
            {
                "target": t,
                "size": n,
                "strategy": s,
                "mean": a.mean().item(),
                "std": a.std().item() if len(accs) > 1 else 0.0,
                "seeds": len(accs),
            }
        )
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
