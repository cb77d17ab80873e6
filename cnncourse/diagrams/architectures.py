"""Architecture strips: one box per layer (or per block), read from ``cnncourse.analysis.summary``.

``strip_boxes`` turns the summary of a model object into boxes; ``architecture_strip`` draws them,
with each box's output shape and parameter count, so a strip cannot disagree with the code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn as nn
from matplotlib.figure import Figure

from cnncourse.analysis import LayerRow, summary
from cnncourse.diagrams._draw import BLUE, GREEN, GREY, ORANGE, PURPLE, box, fit, label, new_figure
from cnncourse.models import get_model

__all__ = ["STRIP_MODELS", "StripBox", "architecture_strip", "strip_boxes"]

# name -> (builder name, builder kwargs, input (C, H, W), title)
STRIP_MODELS: dict[str, tuple[str, dict, tuple[int, int, int], str]] = {
    "lenet5": ("lenet5", {}, (1, 32, 32), "LeNet-5 (LeCun et al. 1998)"),
    "alexnet": ("alexnet", {}, (3, 224, 224), "AlexNet (torchvision layout)"),
    "vgg16": ("vgg16", {}, (3, 224, 224), "VGG-16"),
    "googlenet": ("googlenet", {}, (3, 224, 224), "GoogLeNet"),
    "resnet18": ("resnet18", {}, (3, 224, 224), "ResNet-18"),
}
_COLOURS = {"conv": BLUE, "pool": ORANGE, "fc": GREEN, "block": PURPLE, "other": GREY}
_POOLS = ("Pool", "Subsampling")


@dataclass
class StripBox:
    """One box of a strip: a layer, or a block of layers, of the model."""

    name: str
    kind: str  # "conv", "pool", "fc", "block" or "other"
    text: str
    output_shape: tuple[int, ...]
    params: int
    layers: list[str] = field(default_factory=list)  # the summary rows it stands for


def _group_key(model: nn.Module, name: str) -> str:
    """The shortest prefix of ``name`` naming a module that is not a plain ``nn.Sequential``."""
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        if not isinstance(model.get_submodule(prefix), nn.Sequential):
            return prefix
    return name


def _k(v) -> int:
    return v[0] if isinstance(v, (tuple, list)) else v


def _describe(module: nn.Module, rows: list[LayerRow]) -> tuple[str, str]:
    """``(kind, text)`` of one group of summary rows belonging to ``module``."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if hasattr(module, "branch1"):  # an Inception block: four branches
        tag = rows[0].name.split(".")[0].removeprefix("inception")
        return "block", f"inception ({tag}), {sum(_k(r.output_shape) for r in rows if _is_branch_end(r))}"
    if hasattr(module, "downsample"):  # a residual block
        s = _k(convs[0].stride) if convs else 1
        return "block", f"residual, {rows[-1].output_shape[0]}" + (f", stride {s}" if s != 1 else "")
    t = rows[0].type
    if t in ("Conv2d", "PartialConv2d"):
        m = module if not convs else convs[0]
        k, s = _k(m.kernel_size), _k(m.stride)
        extra = ", BN" if any(r.type == "BatchNorm2d" for r in rows) else ""
        name = "partial conv" if t == "PartialConv2d" else "conv"  # LeNet-5's C3 and its connection table
        return "conv", f"{k}×{k} {name}, {rows[0].output_shape[0]}" + (f", /{s}" if s != 1 else "") + extra
    if t.startswith("Adaptive"):
        side = rows[0].output_shape[-1]
        return "pool", "global avg pool" if side == 1 else f"adaptive avg pool → {side}×{side}"
    if any(p in t for p in _POOLS):
        k, s = _k(module.kernel_size), _k(module.stride or module.kernel_size)
        kind = "subsampling" if t == "Subsampling" else ("max pool" if "Max" in t else "avg pool")
        return "pool", f"{k}×{k} {kind}" + (f", /{s}" if s != 1 else "")
    if t == "Linear":
        return "fc", f"fully connected, {rows[0].output_shape[0]}"
    if t == "EuclideanRBF":
        return "fc", f"RBF output, {rows[0].output_shape[0]}"
    return "other", t


def _is_branch_end(row: LayerRow) -> bool:
    # the last conv of each Inception branch: branch1.conv, branch2.1.conv, branch3.1.conv, branch4.1.conv
    return row.type == "Conv2d" and (row.name.endswith("branch1.conv") or row.name.endswith(".1.conv"))


def strip_boxes(model: nn.Module, input_size: Sequence[int]) -> list[StripBox]:
    """The boxes of ``model``'s strip, in forward order, from ``summary(model, input_size)``.

    Rows of element-wise layers (activations, dropout) are dropped; the rows of one block
    (a torchvision-style ``BasicConv2d``, an Inception block, a residual block) become one box; a
    group with no convolution, pooling or linear layer (a lone batch norm) joins the box before it.
    """
    table = summary(model, input_size, show_elementwise=False)
    groups: dict[str, list[LayerRow]] = {}
    for r in table.rows:
        groups.setdefault(_group_key(model, r.name), []).append(r)
    boxes: list[StripBox] = []
    for key, rows in groups.items():
        kind, text = _describe(model.get_submodule(key), rows)
        params = sum(r.params for r in rows)
        if kind == "other" and boxes:
            prev = boxes[-1]
            prev.layers += [r.name for r in rows]
            prev.params += params
            for norm, tag in (("BatchNorm2d", "BN"), ("LocalResponseNorm", "LRN")):
                if any(norm in r.type for r in rows) and not prev.text.endswith(tag):
                    prev.text += f", {tag}"
            continue
        boxes.append(
            StripBox(
                key,
                kind,
                text,
                rows[-1].output_shape if kind != "block" else _block_out(rows),
                params,
                [r.name for r in rows],
            )
        )
    return boxes


def _block_out(rows: list[LayerRow]) -> tuple[int, ...]:
    ends = [r for r in rows if _is_branch_end(r)]
    if len(ends) == 4:  # Inception: the concatenation of the four branch outputs
        return (sum(r.output_shape[0] for r in ends), *ends[0].output_shape[1:])
    main = [r for r in rows if ".downsample." not in r.name]
    return main[-1].output_shape


def _compact(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.1f} M"
    if n >= 10_000:
        return f"{n / 1e3:.0f} k"
    return f"{n:,}"


def architecture_strip(
    model: nn.Module | str = "vgg16", input_size: Sequence[int] | None = None, title: str | None = None
) -> Figure:
    """Draw a model as a column of boxes: one per layer or block, with output shape and parameters.

    Args:
        model: a module, or one of ``STRIP_MODELS`` (``"lenet5"``, ``"alexnet"``, ``"vgg16"``,
            ``"googlenet"``, ``"resnet18"``), built with the library's builders on the ``meta``
            device (the strip needs shapes and parameter counts, not weights).
        input_size: ``(C, H, W)``; required for a module, looked up for a name.
        title: heading; default the model's name.

    Returns:
        A figure with one patch ``box:{kind}`` per ``strip_boxes`` entry, kinds conv, pool, fc, block.

    Raises:
        ValueError: an unknown name, or a module without ``input_size``.
    """
    if isinstance(model, str):
        if model not in STRIP_MODELS:
            raise ValueError(f"model must be one of {sorted(STRIP_MODELS)} or an nn.Module, got {model!r}")
        builder, kwargs, size, name = STRIP_MODELS[model]
        with torch.device("meta"):  # shapes and counts only: no memory, no initialisation
            model = get_model(builder, **kwargs)
        input_size, title = input_size or size, title or name
    if input_size is None:
        raise ValueError("input_size (C, H, W) is required when model is a module")
    title = title or type(model).__name__
    boxes = strip_boxes(model, input_size)
    total = sum(b.params for b in boxes)
    row = 0.62
    fig, ax = new_figure(6.2, 1.0 + 0.36 * (len(boxes) + 3))
    label(ax, 2.3, 1.25, title, fontsize=12, weight="bold", gid="title")
    label(ax, 0, 0.55, "layer", fontsize=10, color="#555555", gid="header")
    label(ax, 5.8, 0.55, "output", fontsize=10, color="#555555", gid="header")
    label(ax, 8.6, 0.55, "parameters", fontsize=10, color="#555555", ha="right", gid="header")
    label(ax, 0, 0, "input", fontsize=10, gid="input")
    label(ax, 5.8, 0, "×".join(map(str, input_size)), fontsize=10, gid="input")
    for i, b in enumerate(boxes):
        y = -(i + 1) * row
        box(ax, 0, y, 4.4, row - 0.12, b.text, colour=_COLOURS[b.kind], gid=f"box:{b.kind}", fontsize=10)
        label(ax, 5.8, y, "×".join(map(str, b.output_shape)), fontsize=10, gid=f"shape:{i}")
        label(ax, 8.6, y, _compact(b.params) if b.params else "–", fontsize=10, ha="right", gid=f"params:{i}")
    y = -(len(boxes) + 1) * row
    label(ax, 8.6, y, f"total {total:,}", fontsize=10, ha="right", weight="bold", gid="total")
    fit(ax, margin=0.15)
    return fig
