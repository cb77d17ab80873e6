"""Block diagrams read from the library's modules: residual, bottleneck, Inception, and an unrolled RNN.

The boxes are the module's own layers (kernel sizes, channels, strides read from its attributes),
so a diagram of ``BasicBlock(64, 128, stride=2)`` shows the projection shortcut that block really has.
"""

from __future__ import annotations

import torch.nn as nn
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from cnncourse.diagrams._draw import (
    BLUE,
    GREEN,
    GREY,
    ORANGE,
    VERMILION,
    arrow,
    box,
    fit,
    label,
    new_figure,
)
from cnncourse.models.googlenet import Inception
from cnncourse.models.resnet import BasicBlock, Bottleneck

__all__ = ["bottleneck_block", "inception_block", "residual_block", "residual_blocks", "rnn_unrolled"]


def _conv_text(conv: nn.Conv2d) -> str:
    k, s = conv.kernel_size[0], conv.stride[0]
    return f"{k}×{k} conv, {conv.out_channels}" + (f", stride {s}" if s != 1 else "")


def _shortcut_text(block: nn.Module) -> str:
    down = getattr(block, "downsample", None)
    if not getattr(block, "residual", True):
        return "no shortcut (plain)"
    if down is None:
        return "identity"
    convs = [m for m in down.modules() if isinstance(m, nn.Conv2d)]
    if convs:
        return f"projection:\n{_conv_text(convs[0])}\n+ BN"
    return "subsample +\nzero-pad channels"


def _draw_residual(ax: Axes, block: nn.Module, title: str, x0: float = 0.0) -> None:
    """Draw ``block`` top to bottom with its centre line at ``x = x0``."""
    convs = [(n, m) for n, m in block.named_children() if isinstance(m, nn.Conv2d)]
    c_in, c_out = convs[0][1].in_channels, convs[-1][1].out_channels
    w, h, step = 3.6, 0.75, 1.45
    label(ax, x0, 0.9, title, fontsize=12, gid="title", weight="bold")
    label(ax, x0, 0, f"x  ({c_in} channels)", gid="io")
    y = 0.0
    for i, (name, conv) in enumerate(convs):
        y_box = y - step
        arrow(ax, (x0, y - 0.3), (x0, y_box + h / 2 + 0.05))
        norm = getattr(block, "bn" + name.removeprefix("conv"), None)
        text = _conv_text(conv) + (", BN" if isinstance(norm, nn.BatchNorm2d) else "")
        box(ax, x0, y_box, w, h, text, colour=BLUE, gid=f"box:conv:{name}")
        y = y_box - h / 2 + 0.3
        if i < len(convs) - 1:
            label(ax, x0 + 0.15, y - 0.55, "ReLU", ha="left", fontsize=10, color="#555555", gid="relu")
    y_add = y - step + 0.2
    arrow(ax, (x0, y - 0.3), (x0, y_add + 0.3))
    ax.add_patch(Circle((x0, y_add), 0.3, facecolor="white", edgecolor="#333333", lw=1.5, gid="add"))
    label(ax, x0, y_add, "+", fontsize=16, gid="add")
    shortcut = _shortcut_text(block)
    if shortcut != "no shortcut (plain)":
        xs = x0 + w / 2 + 0.5
        ax.plot([x0 + 1.95, xs, xs], [0, 0, y_add], color=ORANGE, lw=2, gid="shortcut")
        arrow(ax, (xs, y_add), (x0 + 0.32, y_add), colour=ORANGE, lw=2, gid="shortcut")
    label(ax, x0 + w / 2 + 0.7, y_add / 2, shortcut, ha="left", fontsize=10, color=VERMILION, gid="shortcut-label")
    arrow(ax, (x0, y_add - 0.3), (x0, y_add - 1.0))
    label(ax, x0 + 0.15, y_add - 0.65, "ReLU", ha="left", fontsize=10, color="#555555", gid="relu")
    label(ax, x0, y_add - 1.35, f"output  ({c_out} channels)", gid="io")


def residual_block(block: BasicBlock | None = None) -> Figure:
    """The two-conv residual block of ResNet-18/34: ``relu(F(x) + shortcut(x))``.

    Args:
        block: a ``BasicBlock``; default ``BasicBlock(64, 64)`` (identity shortcut).

    Returns:
        A figure with one ``box:conv:*`` patch per convolution of the block and the shortcut's label.
    """
    fig, ax = new_figure(4.8, 6.0)
    _draw_residual(ax, block if block is not None else BasicBlock(64, 64), "residual block")
    fit(ax)
    return fig


def bottleneck_block(block: Bottleneck | None = None) -> Figure:
    """The bottleneck block of ResNet-50/101/152: 1×1 reduce, 3×3, 1×1 expand, plus the shortcut.

    Args:
        block: a ``Bottleneck``; default ``Bottleneck(256, 64)`` (256 -> 64 -> 64 -> 256, identity).

    Returns:
        A figure with one ``box:conv:*`` patch per convolution of the block and the shortcut's label.
    """
    fig, ax = new_figure(4.8, 7.4)
    _draw_residual(ax, block if block is not None else Bottleneck(256, 64), "bottleneck block")
    fit(ax)
    return fig


def residual_blocks(basic: BasicBlock | None = None, bottleneck: Bottleneck | None = None) -> Figure:
    """``residual_block`` and ``bottleneck_block`` side by side, on one scale; arguments as there."""
    fig, ax = new_figure(8.4, 6.8)
    _draw_residual(ax, basic if basic is not None else BasicBlock(64, 64), "basic block (ResNet-18/34)")
    _draw_residual(ax, bottleneck if bottleneck is not None else Bottleneck(256, 64), "bottleneck (ResNet-50+)", 7.0)
    fit(ax)
    ax.set_xlim(ax.get_xlim()[0], 7.0 + 4.6)
    return fig


def inception_block(block: Inception | None = None, name: str = "inception (3a)") -> Figure:
    """An Inception block: four parallel branches on the same input, concatenated along channels.

    Args:
        block: an ``Inception``; default GoogLeNet's first block, ``Inception(192, 64, 96, 128, 16, 32, 32)``.
        name: title of the drawing.

    Returns:
        A figure with one ``box:b{i}:{j}`` patch per layer ``j`` of branch ``i`` and the concatenation box.
    """
    block = block if block is not None else Inception(192, 64, 96, 128, 16, 32, 32)
    branches = [block.branch1, block.branch2, block.branch3, block.branch4]
    c_in = next(m for m in block.branch1.modules() if isinstance(m, nn.Conv2d)).in_channels
    fig, ax = new_figure(7.4, 4.8)
    col, w, h = 2.45, 2.2, 0.8
    xs = [(i - 1.5) * col for i in range(4)]
    box(ax, 0, 0, 6.0, h, f"previous layer: {c_in} channels", colour=GREY, gid="box:input")
    label(ax, 0, 0.85, name, fontsize=12, weight="bold", gid="title")
    outs = []
    colours = {nn.Conv2d: BLUE, nn.MaxPool2d: ORANGE}
    for i, (x, br) in enumerate(zip(xs, branches)):
        layers = [m for m in br.modules() if isinstance(m, (nn.Conv2d, nn.MaxPool2d))]
        y = 0.0
        for j, m in enumerate(layers):
            y_next = -1.5 - 1.25 * j
            arrow(ax, (x * 0.45 if j == 0 else x, y - h / 2 - 0.02), (x, y_next + h / 2 + 0.05))
            if isinstance(m, nn.Conv2d):
                text = f"{m.kernel_size[0]}×{m.kernel_size[1]} conv\n{m.out_channels}"
                if m.kernel_size[0] == 1 and j < len(layers) - 1:
                    text += " (reduce)"
            else:
                text = f"{m.kernel_size}×{m.kernel_size} max pool\nstride {m.stride}"
            box(ax, x, y_next, w, h, text, colour=colours[type(m)], gid=f"box:b{i}:{j}", fontsize=10)
            y = y_next
        outs.append((x, y, layers[-1].out_channels if isinstance(layers[-1], nn.Conv2d) else None))
    y_cat = -1.5 - 1.25 * 2 - 0.9
    parts = " + ".join(str(c) for _, _, c in outs)
    box(
        ax,
        0,
        y_cat,
        8.2,
        h,
        f"concatenate channels: {parts} = {block.out_channels}",
        colour=GREEN,
        gid="box:concat",
        fontsize=11,
    )
    for x, y, _ in outs:
        arrow(ax, (x, y - h / 2 - 0.02), (x * 0.9, y_cat + h / 2 + 0.05))
    fit(ax)
    return fig


def rnn_unrolled(steps: int = 3) -> Figure:
    """A recurrent network folded (one cell with a loop) and unfolded in time over ``steps`` steps.

    The same weights ``W_ih``, ``W_hh``, ``W_hy`` (torch.nn.RNN's names) are used at every step:
    ``h_t = tanh(W_hh h_{t-1} + W_ih x_t + b_h)`` and ``y_t = W_hy h_t + b_y``.

    Args:
        steps: number of time steps drawn, at least 1.

    Returns:
        A figure with patches ``x:t``, ``h:t``, ``y:t`` for ``t = 1..steps``, the ``h:0`` initial
        state, and ``steps`` recurrent arrows (gid ``rec``).
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    fig, ax = new_figure(min(2.2 + 1.45 * steps, 9.0), 3.6)
    w, h = 0.95, 0.6
    # folded
    box(ax, 0, 0, w, h, "$x_t$", colour=GREY, gid="fold:x")
    box(ax, 0, 1.6, w, h, "$h_t$", colour=BLUE, gid="fold:h")
    box(ax, 0, 3.2, w, h, "$y_t$", colour=GREEN, gid="fold:y")
    arrow(ax, (0, h / 2), (0, 1.6 - h / 2))
    arrow(ax, (0, 1.6 + h / 2), (0, 3.2 - h / 2))
    ax.annotate(
        "",
        xy=(w / 2, 1.45),
        xytext=(w / 2, 1.75),
        gid="fold:loop",
        arrowprops=dict(
            arrowstyle="-|>",
            color=VERMILION,
            lw=1.6,
            mutation_scale=14,
            shrinkA=0,
            shrinkB=0,
            connectionstyle="arc,angleA=0,angleB=0,armA=30,armB=30,rad=8",
        ),
    )
    label(ax, w / 2 + 0.45, 2.15, "$W_{hh}$", color=VERMILION, fontsize=11, gid="fold:label")
    label(ax, 1.95, 1.6, "=", fontsize=20, gid="equals")
    x0, dx = 3.1, 1.5
    box(ax, x0, 1.6, w, h, "$h_0$", colour=GREY, gid="h:0")
    for t in range(1, steps + 1):
        x = x0 + t * dx
        box(ax, x, 0, w, h, f"$x_{{{t}}}$", colour=GREY, gid=f"x:{t}")
        box(ax, x, 1.6, w, h, f"$h_{{{t}}}$", colour=BLUE, gid=f"h:{t}")
        box(ax, x, 3.2, w, h, f"$y_{{{t}}}$", colour=GREEN, gid=f"y:{t}")
        arrow(ax, (x, h / 2), (x, 1.6 - h / 2), text="$W_{ih}$" if t == 1 else None, fontsize=11)
        arrow(ax, (x, 1.6 + h / 2), (x, 3.2 - h / 2), text="$W_{hy}$" if t == 1 else None, fontsize=11)
        arrow(ax, (x - dx + w / 2, 1.6), (x - w / 2, 1.6), colour=VERMILION, gid="rec")
    label(ax, x0 + dx / 2, 2.0, "$W_{hh}$", color=VERMILION, fontsize=11, gid="rec-label")
    label(ax, x0 + (steps + 1) * dx / 2, -0.85, "same weights at every step", fontsize=10, color="#555555", gid="note")
    fit(ax)
    return fig
