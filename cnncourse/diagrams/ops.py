"""Diagrams of the operations: a sliding window, padding and stride, channels, pooling, im2col, receptive fields.

Every number drawn in a cell is computed by the library (``cnncourse.functional``, ``analysis``) or
by ``torch.nn.functional``, never typed in, so a picture cannot disagree with the code it illustrates.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from cnncourse import functional as cf
from cnncourse.analysis import receptive_field
from cnncourse.diagrams._draw import (
    BLUE,
    GREEN,
    GREY,
    LIGHT,
    ORANGE,
    PURPLE,
    SKY,
    VERMILION,
    arrow,
    fit,
    fmt,
    grid,
    label,
    new_figure,
    outline,
)

__all__ = ["cross_correlation", "im2col", "multi_channel", "padding_stride", "pooling", "receptive_field_growth"]

_WINDOW_COLOURS = (BLUE, VERMILION, GREEN, PURPLE)


def _example_input(h: int, w: int, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 4, (h, w), generator=g).float()


def cross_correlation(
    x: torch.Tensor | None = None, weight: torch.Tensor | None = None, position: tuple[int, int] = (1, 1)
) -> Figure:
    """One step of 2-D cross-correlation: input, kernel, output, with the window at ``position``.

    Args:
        x: input ``(H, W)``; default a 5x5 grid of small integers.
        weight: kernel ``(K_h, K_w)``; default a 3x3 kernel of -1, 0 and 1.
        position: output cell ``(i, j)`` whose window is highlighted and whose sum is written out.

    Returns:
        A figure with grids ``in``, ``kernel`` and ``out``; ``out`` holds ``cnncourse.functional.conv2d(x, weight)``.
    """
    x = _example_input(5, 5) if x is None else x.float()
    weight = torch.tensor([[1.0, 0, -1], [1, 0, -1], [0, 1, 0]]) if weight is None else weight.float()
    if x.dim() != 2 or weight.dim() != 2:
        raise ValueError(f"expected x (H, W) and weight (K_h, K_w), got {tuple(x.shape)} and {tuple(weight.shape)}")
    out = cf.conv2d(x[None, None], weight[None, None])[0, 0]
    (h, w), (kh, kw), (oh, ow) = x.shape, weight.shape, out.shape
    i, j = position
    if not (0 <= i < oh and 0 <= j < ow):
        raise ValueError(f"position must index the {oh}x{ow} output, got {position}")
    window = {(i + u, j + v): LIGHT[BLUE] for u in range(kh) for v in range(kw)}
    fig, ax = new_figure(7.2, 3.6)
    xk, xo = w + 1.5, w + kw + 3
    grid(ax, x.numpy(), 0, 0, gid="in", colours=window)
    outline(ax, j, -i - kh, kw, kh, BLUE, gid="window")
    grid(
        ax,
        weight.numpy(),
        xk,
        -(h - kh) / 2,
        gid="kernel",
        colours={c: LIGHT[ORANGE] for c in [(u, v) for u in range(kh) for v in range(kw)]},
    )
    grid(ax, out.numpy(), xo, -(h - oh) / 2, gid="out", colours={(i, j): LIGHT[GREEN]})
    outline(ax, xo + j, -(h - oh) / 2 - i - 1, 1, 1, GREEN, gid="out-cell")
    label(ax, w + 0.75, -h / 2, "⋆", fontsize=20)
    label(ax, xk + kw + 0.75, -h / 2, "=", fontsize=20)
    titles = ((w / 2, f"input {h}×{w}"), (xk + kw / 2, f"kernel {kh}×{kw}"), (xo + ow / 2, f"output {oh}×{ow}"))
    for x_mid, name in titles:
        label(ax, x_mid, 0.45, name, gid="title")

    def factor(v: float) -> str:
        return f"({fmt(v)})" if v < 0 else fmt(v)

    terms = [f"{factor(x[i + u, j + v].item())}·{factor(weight[u, v].item())}" for u in range(kh) for v in range(kw)]
    half = (len(terms) + 1) // 2
    text = " + ".join(terms[:half]) + " +\n" + " + ".join(terms[half:]) + f" = {fmt(out[i, j].item())}"
    label(ax, (xo + ow) / 2, -h - 1.0, text, gid="sum")
    fit(ax)
    return fig


def padding_stride(size: int = 5, kernel: int = 3, padding: int = 1, strides: Sequence[int] = (1, 2)) -> Figure:
    """A ``size x size`` input with ``padding`` zeros around it and the first windows for each stride.

    Each row of the figure is one stride: the padded input with the first two windows (along a row)
    outlined, and the output grid, whose size comes from running ``F.conv2d`` on the padded shape.

    Returns:
        A figure with, per stride ``s``, grids ``pad{s}`` (padded input) and ``out{s}`` (output).
    """
    if size < 1 or kernel < 1 or padding < 0 or any(s < 1 for s in strides):
        raise ValueError(
            f"expected size, kernel, strides >= 1 and padding >= 0, got {size}, {kernel}, {strides}, {padding}"
        )
    n = size + 2 * padding
    fig, ax = new_figure(6.4, 3.4 * len(strides))
    top = 0.0
    for s in strides:
        o = int(
            F.conv2d(torch.zeros(1, 1, size, size), torch.zeros(1, 1, kernel, kernel), stride=s, padding=padding).shape[
                -1
            ]
        )
        pad_cells = {
            (i, j): LIGHT[GREY]
            for i in range(n)
            for j in range(n)
            if min(i, j) < padding or max(i, j) >= padding + size
        }
        grid(ax, None, 0, top, shape=(n, n), gid=f"pad{s}", colours=pad_cells)
        for i, j in pad_cells:
            label(ax, j + 0.5, top - i - 0.5, "0", gid=f"zero{s}", color="#777777")
        for w_idx, colour in enumerate((BLUE, VERMILION)):
            if w_idx * s + kernel <= n:
                off = 0.06 * w_idx
                outline(
                    ax,
                    w_idx * s + off,
                    top - kernel + off,
                    kernel - 2 * off,
                    kernel - 2 * off,
                    colour,
                    gid=f"win{s}",
                    ls="-" if w_idx == 0 else "--",
                )
        xo = n + 2
        first = {(0, 0): LIGHT[BLUE]}
        if o > 1:
            first[(0, 1)] = LIGHT[VERMILION]
        grid(ax, None, xo, top - (n - o) / 2, shape=(o, o), gid=f"out{s}", colours=first)
        arrow(ax, (n + 0.3, top - n / 2), (xo - 0.3, top - n / 2))
        label(ax, n / 2, top + 0.5, f"{size}×{size} input, padding {padding} (grey zeros)", gid="title")
        label(ax, xo + o / 2, top + 0.5, f"stride {s}: {o}×{o}", gid="title")
        top -= n + 1.6
    fit(ax)
    return fig


def multi_channel(c_in: int = 3, c_out: int = 2, size: int = 5, kernel: int = 3) -> Figure:
    """``C_in`` input channels, ``C_out`` filters of shape ``(C_in, K, K)``, ``C_out`` output maps.

    Every filter spans all input channels; each filter gives one output map (sum over channels plus
    a bias). The output size comes from ``cnncourse.functional.conv2d`` on the given shapes.

    Returns:
        A figure with patches ``in:c``, ``filter:k,c`` and ``out:k``.
    """
    if min(c_in, c_out, size, kernel) < 1:
        raise ValueError(f"expected positive c_in, c_out, size, kernel, got {c_in}, {c_out}, {size}, {kernel}")
    y = cf.conv2d(torch.zeros(1, c_in, size, size), torch.zeros(c_out, c_in, kernel, kernel))
    o = y.shape[-1]
    colours = [VERMILION, GREEN, BLUE, ORANGE, PURPLE, SKY]
    fig, ax = new_figure(7.2, 1.2 + 2.0 * max(c_out, 2))
    d = 0.45  # offset between stacked channel planes
    s_in, s_k, s_out = 2.4, 1.3, 1.8  # drawn side lengths

    def plane(x: float, yy: float, side: float, colour: str, gid: str) -> None:
        ax.add_patch(
            Rectangle((x, yy), side, side, facecolor=LIGHT.get(colour, colour), edgecolor=colour, lw=1.5, gid=gid)
        )

    step = s_k + 0.6 * d * (c_in - 1) + 0.9  # vertical room per filter: its stack and its label
    mid = -1.3 - step * (c_out - 1) / 2 - s_k / 2
    for c in reversed(range(c_in)):
        plane(c * d, mid - s_in / 2 + c * d, s_in, colours[c % 6], f"in:{c}")
    label(ax, (s_in + (c_in - 1) * d) / 2, mid - s_in / 2 - 0.6, f"input {c_in}×{size}×{size}", gid="title")
    xk, xo = 5.2, 9.0
    for k in range(c_out):
        yk = -1.3 - k * step - s_k
        for c in reversed(range(c_in)):
            plane(xk + c * d * 0.6, yk + c * d * 0.6, s_k, colours[c % 6], f"filter:{k},{c}")
        label(ax, xk + s_k / 2, yk - 0.35, f"filter W[{k}]", gid="title", fontsize=10)
        plane(xo, yk + s_k / 2 - s_out / 2, s_out, GREY, f"out:{k}")
        label(ax, xo + s_out / 2, yk + s_k / 2, f"map {k}\n{o}×{o}", gid="title", fontsize=10)
        arrow(ax, (xk + s_k + (c_in - 1) * d * 0.6 + 0.15, yk + s_k / 2), (xo - 0.15, yk + s_k / 2), text="Σ + b")
        arrow(ax, (s_in + (c_in - 1) * d + 0.15, mid), (xk - 0.15, yk + s_k / 2), colour="#777777", lw=1)
    label(ax, xk + 1.0, -0.5, f"{c_out} filters\n{c_in}×{kernel}×{kernel} each", gid="title")
    label(ax, xo + s_out / 2, -0.5, f"output\n{c_out}×{o}×{o}", gid="title")
    fit(ax)
    return fig


def pooling(x: torch.Tensor | None = None, kernel: int = 2, stride: int | None = None) -> Figure:
    """Max and average pooling of one small grid, with the windows coloured and the results written in.

    Args:
        x: input ``(H, W)``; default a 4x4 grid of small integers.
        kernel: window side.
        stride: step; defaults to ``kernel`` (non-overlapping windows).

    Returns:
        A figure with grids ``in``, ``max`` (``cnncourse.functional.max_pool2d``) and ``avg``
        (``cnncourse.functional.avg_pool2d``).
    """
    x = torch.tensor([[1.0, 3, 2, 0], [4, 2, 1, 1], [0, 1, 5, 6], [2, 2, 7, 1]]) if x is None else x.float()
    if x.dim() != 2:
        raise ValueError(f"expected x (H, W), got {tuple(x.shape)}")
    stride = stride or kernel
    mx = cf.max_pool2d(x[None, None], kernel, stride)[0, 0]
    av = cf.avg_pool2d(x[None, None], kernel, stride)[0, 0]
    (h, w), (oh, ow) = x.shape, mx.shape
    palette = [LIGHT[c] for c in (BLUE, ORANGE, GREEN, PURPLE, SKY, VERMILION)]
    out_col = {(i, j): palette[(i * ow + j) % 6] for i in range(oh) for j in range(ow)}
    in_col = {}
    for (i, j), c in out_col.items():  # later windows overwrite the overlap of earlier ones
        in_col.update({(i * stride + u, j * stride + v): c for u in range(kernel) for v in range(kernel)})
    fig, ax = new_figure(6.6, 3.2)
    grid(ax, x.numpy(), 0, 0, gid="in", colours=in_col)
    xo = w + 2.2
    grid(ax, mx.numpy(), xo, 0, gid="max", colours=out_col)
    grid(ax, av.numpy(), xo, -oh - 1.2, gid="avg", colours=out_col)
    label(ax, w / 2, 0.45, f"input {h}×{w}", gid="title")
    label(ax, xo + ow / 2, 0.45, f"max {kernel}×{kernel}, stride {stride}", gid="title")
    label(ax, xo + ow / 2, -oh - 0.75, f"average {kernel}×{kernel}, stride {stride}", gid="title")
    arrow(ax, (w + 0.2, -h / 4), (xo - 0.2, -oh / 2))
    arrow(ax, (w + 0.2, -3 * h / 4), (xo - 0.2, -oh - 1.2 - oh / 2))
    fit(ax)
    return fig


def receptive_field_growth(
    layers: Sequence[nn.Module] | None = None, width: int = 16, unit: int | None = None
) -> Figure:
    """One row of units per layer, along one image axis; the units a single top unit depends on are filled.

    The filled units are found by walking the layers backwards (unit ``u`` of a layer with kernel
    ``K``, stride ``S``, padding ``P`` reads units ``uS - P ... uS - P + K - 1`` below); the size
    printed beside each row is ``cnncourse.analysis.receptive_field`` of the stack up to that layer.

    Args:
        layers: square-kernel ``nn.Conv2d`` / pooling modules; default conv 3x3, conv 3x3,
            max-pool 2x2 stride 2, conv 3x3.
        width: number of input units drawn.
        unit: index of the top unit to follow; default the middle one.

    Returns:
        A figure with patches ``unit:l,u`` (``l = 0`` is the input), filled ones with gid ``dep:l,u``.
    """
    layers = (
        list(layers)
        if layers is not None
        else [nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3), nn.MaxPool2d(2, 2), nn.Conv2d(1, 1, 3)]
    )
    geo = []
    for m in layers:
        k, s, p = (getattr(m, a) for a in ("kernel_size", "stride", "padding"))
        geo.append(tuple(v[0] if isinstance(v, tuple) else v for v in (k, s or k, p)))
    sizes = [width]
    for k, s, p in geo:
        sizes.append(cf.conv_output_size(sizes[-1], k, s, p))
    fields = [receptive_field(nn.Sequential(*layers[: i + 1]), (1, width, width)).size[0] for i in range(len(layers))]
    top = len(layers)
    unit = sizes[-1] // 2 if unit is None else unit
    deps = {top: {unit}}
    for level in range(top, 0, -1):
        k, s, p = geo[level - 1]
        deps[level - 1] = {u * s - p + t for u in deps[level] for t in range(k)} & set(range(sizes[level - 1]))
    fig, ax = new_figure(7.2, 0.9 * (top + 1) + 0.8)
    names = ["input"] + [_layer_name(m) for m in layers]
    for level in range(top + 1):
        n = sizes[level]
        x0 = (width - n) / 2
        yy = level * 1.6
        for u in range(n):
            filled = u in deps[level]
            colour = (LIGHT[ORANGE] if level == top else LIGHT[BLUE]) if filled else "white"
            ax.add_patch(
                Rectangle(
                    (x0 + u + 0.1, yy),
                    0.8,
                    0.8,
                    facecolor=colour,
                    edgecolor=ORANGE if (filled and level == top) else "#333333",
                    lw=1.8 if filled else 0.8,
                    gid=f"dep:{level},{u}" if filled else f"unit:{level},{u}",
                )
            )
        text = names[level] if level == 0 else f"{names[level]}\nfield {fields[level - 1]}"
        label(ax, -0.6, yy + 0.4, text, ha="right", fontsize=10, gid="rowlabel")
        if level:
            lo, hi = min(deps[level - 1]), max(deps[level - 1])
            x_lo = (width - sizes[level - 1]) / 2 + lo
            x_hi = (width - sizes[level - 1]) / 2 + hi + 1
            ux = (width - n) / 2
            for xd in (x_lo + 0.1, x_hi - 0.1):
                ax.plot(
                    [ux + min(deps[level]) + 0.5 if xd < width / 2 else ux + max(deps[level]) + 0.5, xd],
                    [yy, yy - 0.8],
                    color=GREY,
                    lw=0.8,
                    zorder=0,
                )
    fit(ax, margin=0.2)
    ax.set_xlim(-4.2, width + 0.3)
    return fig


def _layer_name(m: nn.Module) -> str:
    k = m.kernel_size[0] if isinstance(m.kernel_size, tuple) else m.kernel_size
    s = m.stride[0] if isinstance(m.stride, tuple) else m.stride
    kind = "conv" if isinstance(m, nn.Conv2d) else ("max pool" if isinstance(m, nn.MaxPool2d) else type(m).__name__)
    return f"{kind} {k}×{k}" + (f", stride {s}" if s != 1 else "")


def im2col(size: int = 4, kernel: int = 2) -> Figure:
    """im2col: every ``K x K`` window of the input becomes one column; the convolution is one row times a matrix.

    The column matrix is ``F.unfold`` of the input, the product is checked by the tests against
    ``cnncourse.functional.conv2d``.

    Returns:
        A figure with grids ``in`` (``size x size``), ``cols`` (``K^2 x L``), ``w`` (``1 x K^2``) and ``out``
        (``1 x L``), ``L = (size - K + 1)^2``.
    """
    if not 1 <= kernel <= size:
        raise ValueError(f"expected 1 <= kernel <= size, got kernel={kernel}, size={size}")
    x = torch.arange(1.0, size * size + 1).view(1, 1, size, size)
    taps = ([1.0, 2, 0, -1] + [0.0] * max(0, kernel * kernel - 4))[: kernel * kernel]
    weight = torch.tensor(taps).view(1, 1, kernel, kernel)
    cols = F.unfold(x, kernel)[0]  # (K*K, L)
    out = (weight.view(1, -1) @ cols)[0]  # (L,)
    o = size - kernel + 1
    fig, ax = new_figure(7.2, 4.6)
    shown = [(0, BLUE), (1, VERMILION)]  # the first two windows, coloured in the input and the matrix
    in_col: dict[tuple[int, int], str] = {}
    for idx, c in reversed(shown):
        r, q = divmod(idx, o)
        in_col.update({(r + u, q + v): LIGHT[c] for u in range(kernel) for v in range(kernel)})
    grid(ax, x[0, 0].numpy(), 0, 0, gid="in", colours=in_col, size=0.8)
    for idx, c in shown:
        r, q = divmod(idx, o)
        outline(
            ax,
            q * 0.8 + 0.04 * idx,
            -(r + kernel) * 0.8 + 0.04 * idx,
            kernel * 0.8 - 0.08 * idx,
            kernel * 0.8 - 0.08 * idx,
            c,
            gid="window",
            ls="-" if idx == 0 else "--",
        )
    xc = size * 0.8 + 2.2
    col_col = {(u, idx): LIGHT[c] for idx, c in shown for u in range(kernel * kernel)}
    grid(ax, cols.numpy(), xc, 0, gid="cols", colours=col_col, size=0.8, fontsize=10.5)
    arrow(ax, (size * 0.8 + 0.2, -kernel * kernel * 0.4), (xc - 0.2, -kernel * kernel * 0.4), text="unfold", above=0.1)
    label(ax, size * 0.4, 0.4, f"input {size}×{size}", gid="title")
    label(
        ax, xc + cols.shape[1] * 0.4, 0.4, f"columns: {kernel * kernel} × {cols.shape[1]}, one per window", gid="title"
    )
    yb = -max(kernel * kernel, size) * 0.8 - 1.2
    grid(
        ax,
        weight.view(1, -1).numpy(),
        0,
        yb,
        gid="w",
        size=0.8,
        colours={(0, i): LIGHT[ORANGE] for i in range(kernel * kernel)},
    )
    label(ax, kernel * kernel * 0.4, yb + 0.4, f"kernel as a row, 1 × {kernel * kernel}", fontsize=10, gid="title")
    grid(ax, out.view(1, -1).numpy(), xc, yb, gid="out", colours={(0, idx): LIGHT[c] for idx, c in shown}, size=0.8)
    arrow(ax, (kernel * kernel * 0.8 + 0.2, yb - 0.4), (xc - 0.2, yb - 0.4), text="× columns", above=0.1)
    label(ax, xc + cols.shape[1] * 0.4, yb + 0.4, f"output 1 × {cols.shape[1]}, reshaped to {o}×{o}", gid="title")
    fit(ax)
    return fig
