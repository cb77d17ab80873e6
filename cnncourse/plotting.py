"""Pictures of what a CNN learned: filters, feature maps, the LeNet shift demo, errors, confusion.

Every helper returns a matplotlib ``Figure`` (or a ``FuncAnimation``) and never calls ``plt.show()``.
Images are ``(N, C, H, W)`` or ``(C, H, W)`` tensors, uint8 or float (already normalised for the model).

Reference: M. Zeiler and R. Fergus, "Visualizing and understanding convolutional networks", ECCV 2014;
Y. LeCun, LeNet-5 demos (http://yann.lecun.com/exdb/lenet/).
"""

from __future__ import annotations

import html
import math
import re
import shutil
from dataclasses import dataclass
from typing import Sequence, cast

import matplotlib.animation as animation
import matplotlib.pyplot as plt
import torch
import torch.nn as nn
from matplotlib.figure import Figure

from cnncourse.data import shift_images
from cnncourse.utils import eval_mode

__all__ = [
    "ShiftDemo",
    "animation_html",
    "capture_activations",
    "confusion_matrix",
    "plot_confusion_matrix",
    "plot_feature_maps",
    "plot_filters",
    "plot_misclassified",
    "plot_shift_strip",
    "shift_animation",
    "shift_demo",
]


def _grid(n: int, ncols: int) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return math.ceil(n / ncols), ncols


def _np(t: torch.Tensor):
    return t.detach().float().cpu().numpy()


def _as_batch(images: torch.Tensor) -> torch.Tensor:
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4:
        raise ValueError(f"expected images (N, C, H, W) or (C, H, W), got {tuple(images.shape)}")
    return images


def plot_filters(weight: torch.Tensor | nn.Module, ncols: int = 8, title: str | None = None) -> Figure:
    """Show convolution kernels ``(C_out, C_in, K_h, K_w)``, one panel per output map.

    With ``C_in > 1`` the panel shows the mean over input maps. Each panel has its own symmetric
    colour scale (blue negative, red positive), because it is the sign pattern that matters.

    Args:
        weight: a weight tensor or a module with a ``weight`` (e.g. ``model.c1``).
        ncols: panels per row.
        title: figure title.

    Reference: Zeiler and Fergus, ECCV 2014, Fig. 2 (first-layer filters).
    """
    w = cast(torch.Tensor, weight.weight) if isinstance(weight, nn.Module) else weight
    if w.dim() != 4:
        raise ValueError(f"expected a weight (C_out, C_in, K_h, K_w), got {tuple(w.shape)}")
    w = w.detach().float().cpu().mean(dim=1)
    rows, cols = _grid(w.shape[0], ncols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.3 * rows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < w.shape[0]:
            lim = float(w[i].abs().max()) or 1.0
            ax.imshow(_np(w[i]), cmap="bwr", vmin=-lim, vmax=lim)
            ax.set_title(str(i), fontsize=8)
    fig.suptitle(title or f"{w.shape[0]} learned {w.shape[1]}x{w.shape[2]} filters")
    fig.tight_layout()
    return fig


@torch.no_grad()
def capture_activations(model: nn.Module, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Run ``model(x)`` in eval mode and return the outputs of the named submodules (last call wins).

    Hooks are removed and the model's mode restored afterwards, even on error.

    Raises:
        ValueError: when a name is not a submodule of ``model``.
    """
    modules = dict(model.named_modules())
    missing = [n for n in layers if n not in modules]
    if missing:
        raise ValueError(f"unknown layers {missing}; expected names from model.named_modules(), e.g. "
                         f"{[n for n in modules if n][:8]}")  # fmt: skip
    out: dict[str, torch.Tensor] = {}
    handles = [modules[n].register_forward_hook(lambda m, i, o, n=n: out.__setitem__(n, o.detach().cpu()))
               for n in layers]  # fmt: skip
    try:
        with eval_mode(model):
            out["output"] = model(x).detach().cpu()
    finally:
        for h in handles:
            h.remove()
    return out


def plot_feature_maps(model: nn.Module, image: torch.Tensor, layers: Sequence[str], max_maps: int = 16) -> Figure:
    """The input and, one row per layer, the maps of each named layer for one image.

    Spatial outputs ``(C, H, W)`` show up to ``max_maps`` maps; flat outputs ``(D,)`` show as one strip.

    Args:
        model: the network.
        image: ``(C, H, W)`` or ``(1, C, H, W)``, already in the model's input format.
        layers: submodule names, e.g. ``["c1", "s2", "c3", "s4", "c5", "f6"]``.
        max_maps: most maps shown per layer.

    Reference: LeCun et al. 1998, Fig. 13 (LeNet-5 activations).
    """
    x = _as_batch(image)[:1]
    acts = capture_activations(model, x, layers)
    ncols = max_maps + 1
    fig, axes = plt.subplots(len(layers) + 1, ncols, figsize=(0.9 * ncols, 1.0 * (len(layers) + 1)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 0].imshow(_np(x[0, 0]), cmap="gray_r")
    axes[0, 0].set_title("input", fontsize=8, loc="left")
    pred = int(acts["output"].argmax(1))
    axes[0, 2].text(0, 0.5, f"prediction: {pred}", fontsize=11, va="center")
    for r, name in enumerate(layers, start=1):
        a = acts[name][0]
        axes[r, 0].text(0, 0.5, f"{name}\n{'x'.join(map(str, a.shape))}", fontsize=7, va="center")
        if a.dim() == 3:
            for c in range(min(max_maps, a.shape[0])):
                axes[r, c + 1].imshow(_np(a[c]), cmap="gray_r")
        else:
            strip = axes[r, 1:]
            big = fig.add_subplot(len(layers) + 1, 1, r + 1)
            big.set_position((strip[0].get_position().x0, strip[0].get_position().y0,
                              strip[-1].get_position().x1 - strip[0].get_position().x0,
                              strip[0].get_position().height))  # fmt: skip
            big.imshow(_np(a.reshape(1, -1)), cmap="gray_r", aspect="auto")
            big.axis("off")
    fig.suptitle("feature maps of one digit (dark = high)")
    return fig


@dataclass
class ShiftDemo:
    """Frames of the shift demo: inputs, chosen activations and class scores per shift."""

    shifts: list[int]
    inputs: torch.Tensor  # (F, H, W)
    maps: dict[str, torch.Tensor]  # layer -> (F, C, H, W) or (F, D)
    scores: torch.Tensor  # (F, classes)

    @property
    def predictions(self) -> list[int]:
        return self.scores.argmax(1).tolist()


@torch.no_grad()
def shift_demo(model: nn.Module, image: torch.Tensor, shifts: Sequence[int] = range(-6, 7, 2),
               layers: Sequence[str] = (), vertical: bool = False) -> ShiftDemo:  # fmt: skip
    """Slide one digit across the input and record the maps and the class scores at each shift.

    Args:
        model: a trained classifier.
        image: ``(C, H, W)`` or ``(1, C, H, W)`` in the model's input format; the top-left pixel is taken
            as background and fills the uncovered border.
        shifts: pixel offsets (right, or down with ``vertical``).
        layers: submodule names whose outputs are recorded.
        vertical: shift down instead of right.

    Reference: the LeNet-5 translation-invariance demo, http://yann.lecun.com/exdb/lenet/translation.html
    """
    x = _as_batch(image)[:1]
    bg = x[..., :1, :1]  # the uncovered border takes the background value, not zero
    frames = [shift_images(x - bg, 0 if vertical else s, s if vertical else 0) + bg for s in shifts]
    batch = torch.cat(frames)
    acts = capture_activations(model, batch, layers)
    return ShiftDemo(list(shifts), batch[:, 0].cpu(), {n: acts[n] for n in layers}, acts["output"])


def _channel(a: torch.Tensor, channel: int) -> torch.Tensor:
    return a[channel] if a.dim() == 3 else a.reshape(1, -1)


def plot_shift_strip(demo: ShiftDemo, channel: int = 0) -> Figure:
    """Static strip: one column per shift; rows show the input, map ``channel`` of each layer, the scores."""
    n_rows = 2 + len(demo.maps)
    n = len(demo.shifts)
    fig, axes = plt.subplots(n_rows, n, figsize=(1.3 * n, 1.2 * n_rows), squeeze=False)
    probs = demo.scores.softmax(1)
    for f, s in enumerate(demo.shifts):
        axes[0, f].imshow(_np(demo.inputs[f]), cmap="gray_r")
        axes[0, f].set_title(f"shift {s:+d}\npred {demo.predictions[f]}", fontsize=8)
        for r, (name, a) in enumerate(demo.maps.items(), start=1):
            axes[r, f].imshow(_np(_channel(a[f], channel)), cmap="gray_r", aspect="auto")
            if f == 0:
                axes[r, f].set_ylabel(name, fontsize=8)
        axes[-1, f].bar(range(probs.shape[1]), _np(probs[f]), color="tab:blue")
        axes[-1, f].set_ylim(0, 1)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[-1, 0].set_ylabel("softmax", fontsize=8)
    fig.suptitle("a digit sliding across the input: maps move with it, the prediction stays")
    fig.tight_layout()
    return fig


def shift_animation(demo: ShiftDemo, channel: int = 0, interval: int = 300) -> animation.FuncAnimation:
    """Animation of the shift demo: input, map ``channel`` of each recorded layer, and the class scores.

    Show it with ``IPython.display.HTML(animation_html(anim))``.
    """
    panels = 2 + len(demo.maps)
    fig, axes = plt.subplots(1, panels, figsize=(2.2 * panels, 2.4))
    probs = demo.scores.softmax(1)
    lo, hi = float(demo.inputs.min()), float(demo.inputs.max())
    images = [axes[0].imshow(_np(demo.inputs[0]), cmap="gray_r", vmin=lo, vmax=hi)]
    for ax, (name, a) in zip(axes[1:], demo.maps.items()):
        lo, hi = float(a.min()), float(a.max())
        images.append(ax.imshow(_np(_channel(a[0], channel)), cmap="gray_r", vmin=lo, vmax=hi, aspect="auto"))
        ax.set_title(f"{name}, map {channel}" if a.dim() == 4 else name, fontsize=9)
    bars = axes[-1].bar(range(probs.shape[1]), _np(probs[0]))
    axes[-1].set_ylim(0, 1)
    axes[-1].set_xticks(range(probs.shape[1]))
    axes[-1].set_title("softmax of the scores", fontsize=9)
    for ax in axes[:-1]:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()

    def update(f: int):
        axes[0].set_title(f"shift {demo.shifts[f]:+d}: predicted {demo.predictions[f]}", fontsize=9)
        images[0].set_data(_np(demo.inputs[f]))
        for img, a in zip(images[1:], demo.maps.values()):
            img.set_data(_np(_channel(a[f], channel)))
        for bar, p in zip(bars, probs[f]):
            bar.set_height(float(p))
        return [*images, *bars]

    anim = animation.FuncAnimation(fig, update, frames=len(demo.shifts), interval=interval, blit=False)
    plt.close(fig)  # the animation keeps the figure; closing stops a duplicate static render in notebooks
    return anim


def animation_html(anim: animation.Animation, alt: str | None = None) -> str:
    """HTML for an animation: an HTML5 ``<video>`` when ffmpeg is installed, else JavaScript frames.

    Both work offline in a static book page; ``to_jshtml`` needs only Pillow. Its player links
    Font Awesome 4 from a CDN for the button icons; that link is dropped, so the page makes no
    request to another host (the book theme ships Font Awesome, which draws the same icons).

    Args:
        anim: the animation to embed.
        alt: what the animation shows, for readers who cannot see it: the frame image's ``alt``
            (JavaScript player) or the video's ``aria-label``. ``None`` leaves it out.

    Raises:
        ValueError: if ``alt`` is given but blank.

    Reference: https://matplotlib.org/stable/api/_as_gen/matplotlib.animation.Animation.html
    """
    if alt is not None and not alt.strip():
        raise ValueError(f"expected alt to describe the animation (a non-blank string), got {alt!r}")
    if shutil.which("ffmpeg"):
        out = anim.to_html5_video()
        tag, attr = "<video", "aria-label"
    else:
        out = re.sub(
            r'<link rel="stylesheet"\s+href="https?://[^"]*font-awesome[^"]*">', "", anim.to_jshtml(default_mode="loop")
        )
        tag, attr = "<img", "alt"
    if alt is not None:
        out = out.replace(tag, f'{tag} {attr}="{html.escape(alt.strip(), quote=True)}"', 1)
    return out


def confusion_matrix(labels: torch.Tensor, preds: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Counts ``(K, K)``: row = true class, column = predicted class.

    Raises:
        ValueError: if ``labels`` and ``preds`` are not 1-D of the same length.
    """
    labels, preds = torch.as_tensor(labels).long().cpu(), torch.as_tensor(preds).long().cpu()
    if labels.dim() != 1 or labels.shape != preds.shape:
        raise ValueError(
            f"expected labels and preds of equal shape (N,), got {tuple(labels.shape)} and {tuple(preds.shape)}"
        )
    k = num_classes or int(max(labels.max(), preds.max())) + 1
    return torch.bincount(labels * k + preds, minlength=k * k).reshape(k, k)


def plot_confusion_matrix(labels: torch.Tensor, preds: torch.Tensor, classes: Sequence[str] | None = None) -> Figure:
    """Confusion matrix with counts in the cells; the diagonal is drawn on a separate (grey) scale so
    the errors off the diagonal stay visible."""
    k = len(classes) if classes is not None else None
    cm = confusion_matrix(labels, preds, k)
    k = cm.shape[0]
    names = list(classes) if classes is not None else [str(i) for i in range(k)]
    off = cm.clone().float()
    off.fill_diagonal_(float("nan"))
    fig, ax = plt.subplots(figsize=(0.55 * k + 2, 0.55 * k + 1.5))
    ax.imshow(_np(off), cmap="Reds")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7,
                    color="black" if i != j else "dimgray")  # fmt: skip
    ax.set_xticks(range(k), names, rotation=90 if max(map(len, names)) > 2 else 0)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = float(cm.diagonal().sum()) / max(int(cm.sum()), 1)
    ax.set_title(f"confusion matrix (accuracy {acc:.2%}, {int(cm.sum() - cm.diagonal().sum())} errors)")
    fig.tight_layout()
    return fig


def plot_misclassified(images: torch.Tensor, labels: torch.Tensor, preds: torch.Tensor, n: int = 24,
                       ncols: int = 12) -> Figure:  # fmt: skip
    """The first ``n`` images whose prediction differs from the label, titled ``true->predicted``."""
    images = _as_batch(images)
    labels, preds = torch.as_tensor(labels).cpu(), torch.as_tensor(preds).cpu()
    if not (len(images) == len(labels) == len(preds)):
        raise ValueError(f"expected equal lengths, got images {len(images)}, labels {len(labels)}, preds {len(preds)}")
    wrong = torch.nonzero(labels != preds).flatten()[:n]
    count = max(len(wrong), 1)
    rows, cols = _grid(count, ncols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.0 * cols, 1.2 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong.tolist()):
        ax.imshow(_np(images[i, 0]), cmap="gray_r")
        ax.set_title(f"{int(labels[i])}->{int(preds[i])}", fontsize=8, color="crimson")
    total = int((labels != preds).sum())
    fig.suptitle(f"{total} misclassified of {len(labels)} (true->predicted), first {len(wrong)} shown")
    fig.tight_layout()
    return fig
