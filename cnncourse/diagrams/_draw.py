"""Drawing primitives shared by the diagrams: cells, grids, boxes and arrows on one axes.

Every artist that a test may want to find gets a ``gid`` (``"in:0,1"``, ``"box:conv"``, ...), so
tests read a figure back through ``artists(fig, prefix)`` instead of trusting pixel positions.
Coordinates are in cell units with y pointing up; grids are drawn row 0 at the top.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Rectangle
from matplotlib.text import Text

# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
BLUE, ORANGE, GREEN, YELLOW, SKY, VERMILION, PURPLE, GREY = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#F0E442",
    "#56B4E9",
    "#D55E00",
    "#CC79A7",
    "#999999",
)
LIGHT = {
    BLUE: "#cce3f0",
    ORANGE: "#fae6bf",
    GREEN: "#bfe7dc",
    SKY: "#d5ecf9",
    VERMILION: "#f4d6bf",
    PURPLE: "#f2dde9",
    GREY: "#e6e6e6",
    YELLOW: "#fbf8cf",
}
FONT = 12
CELL_FONT = 14  # numbers in unit cells: the part of a diagram that must stay readable on a phone


def new_figure(width: float, height: float) -> tuple[Figure, Axes]:
    """A figure with one axes that has no frame and equal x/y scales."""
    # 150 dpi: the notebook's PNG stays sharp when a phone scales a wide diagram down to its screen
    fig, ax = plt.subplots(figsize=(width, height), dpi=150)
    ax.set_axis_off()
    ax.set_aspect("equal")
    return fig, ax


def fit(ax: Axes, margin: float = 0.3) -> None:
    """Set the axes limits to the drawn patches and texts, plus a margin."""
    xs, ys = [], []
    for p in ax.patches:
        x0, y0, x1, y1 = p.get_extents().transformed(ax.transData.inverted()).extents
        xs += [x0, x1]
        ys += [y0, y1]
    for t in ax.texts:
        if t.get_text():
            xs.append(t.get_position()[0])
            ys.append(t.get_position()[1])
    ax.set_xlim(min(xs) - margin, max(xs) + margin)
    ax.set_ylim(min(ys) - margin, max(ys) + margin)


def fmt(v: float) -> str:
    """A number as an integer when it is one, else with up to two decimals."""
    return str(int(round(v))) if abs(v - round(v)) < 1e-9 else f"{v:.2f}".rstrip("0")


def grid(
    ax: Axes,
    values: np.ndarray | Sequence[Sequence[float]] | None,
    x0: float,
    y0: float,
    *,
    shape: tuple[int, int] | None = None,
    gid: str = "cell",
    face: str = "white",
    colours: dict[tuple[int, int], str] | None = None,
    size: float = 1.0,
    fontsize: float | None = None,
) -> None:
    """Draw a grid of cells, top-left corner at ``(x0, y0)``; cell ``(i, j)`` gets gid ``f"{gid}:{i},{j}"``.

    ``values`` (rows x cols) are written in the cells; with ``values=None`` pass ``shape``.
    ``colours`` maps some cells to a face colour.
    """
    arr = None if values is None else np.asarray(values, dtype=float)
    fontsize = fontsize or CELL_FONT * size
    if arr is not None:
        rows, cols = arr.shape
    elif shape is not None:
        rows, cols = shape
    else:
        raise ValueError("grid() needs values or shape, got neither")
    for i in range(rows):
        for j in range(cols):
            x, y = x0 + j * size, y0 - (i + 1) * size
            c = (colours or {}).get((i, j), face)
            ax.add_patch(Rectangle((x, y), size, size, facecolor=c, edgecolor="#333333", lw=1, gid=f"{gid}:{i},{j}"))
            if arr is not None:
                text = fmt(arr[i, j])
                shrink = min(1.0, 3.2 / len(text))  # "1.25" must still fit in its cell
                ax.text(
                    x + size / 2,
                    y + size / 2,
                    text,
                    ha="center",
                    va="center",
                    fontsize=fontsize * shrink,
                    gid=f"{gid}:{i},{j}",
                )


def outline(
    ax: Axes, x: float, y: float, w: float, h: float, colour: str, gid: str, lw: float = 3, ls: str = "-"
) -> None:
    """An unfilled rectangle, lower-left corner ``(x, y)``."""
    ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=colour, lw=lw, ls=ls, gid=gid, zorder=5))


def box(
    ax: Axes,
    x: float,
    y: float,
    w: float,
    h: float,
    text: str,
    *,
    colour: str = BLUE,
    gid: str = "box",
    fontsize: float = FONT,
    textcolour: str = "black",
) -> None:
    """A rounded, filled box centred on ``(x, y)`` with ``text`` in the middle."""
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0,rounding_size=0.12",
            facecolor=LIGHT.get(colour, colour),
            edgecolor=colour,
            lw=1.6,
            gid=gid,
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, color=textcolour, gid=gid)


def arrow(
    ax: Axes,
    start: tuple[float, float],
    end: tuple[float, float],
    *,
    gid: str = "arrow",
    colour: str = "#333333",
    rad: float = 0.0,
    lw: float = 1.5,
    text: str | None = None,
    fontsize: float = FONT - 1,
    above: float = 0.0,
) -> None:
    """An arrow from ``start`` to ``end`` (curved by ``rad``), labelled at its middle or ``above`` it."""
    ax.annotate(
        "",
        xy=end,
        xytext=start,
        gid=gid,
        arrowprops=dict(
            arrowstyle="-|>",
            color=colour,
            lw=lw,
            shrinkA=0,
            shrinkB=0,
            mutation_scale=14,
            connectionstyle=f"arc3,rad={rad}",
        ),
    )
    if text:
        mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
        ax.text(
            mx,
            my + above,
            text,
            ha="center",
            va="bottom" if above else "center",
            fontsize=fontsize,
            gid=f"{gid}-label",
            bbox=None if above else dict(facecolor="white", edgecolor="none", pad=1),
        )


def label(ax: Axes, x: float, y: float, text: str, *, fontsize: float = FONT, gid: str = "label", **kw) -> None:
    """Plain text centred on ``(x, y)``."""
    ax.text(x, y, text, ha=kw.pop("ha", "center"), va=kw.pop("va", "center"), fontsize=fontsize, gid=gid, **kw)


def artists(fig: Figure, prefix: str, kind: str = "any") -> list[Artist]:
    """Every patch (``kind="patch"``), text (``"text"``) or either whose gid starts with ``prefix``."""
    found: list[Artist] = []
    for ax in fig.axes:
        pools: dict[str, list[Artist]] = {
            "patch": list(ax.patches),
            "text": list(ax.texts),
            "any": [*ax.patches, *ax.texts],
        }
        pool = pools[kind]
        found += [a for a in pool if (a.get_gid() or "").startswith(prefix)]
    return found


def cell_texts(fig: Figure, gid: str) -> dict[tuple[int, int], str]:
    """The numbers written in the grid ``gid``, as ``{(i, j): text}``."""
    out = {}
    for t in artists(fig, gid + ":", "text"):
        assert isinstance(t, Text)
        i, j = (t.get_gid() or "").split(":", 1)[1].split(",")
        out[int(i), int(j)] = t.get_text()
    return out
