"""Diagrams: each function builds its figure, and the figure holds what the code computes.

Figures are read back through the ``gid`` of their artists (``cnncourse.diagrams._draw.artists``):
the numbers in the cells against ``torch.nn.functional``, the boxes of a strip against the layers
that ``analysis.summary`` finds in the model and the counts the papers give.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # tests only; never set MPLBACKEND for notebook kernels

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from cnncourse import diagrams  # noqa: E402
from cnncourse.analysis import count_parameters, receptive_field, summary  # noqa: E402
from cnncourse.diagrams._draw import artists, cell_texts, fmt  # noqa: E402
from cnncourse.models import get_model  # noqa: E402
from cnncourse.models.googlenet import Inception  # noqa: E402
from cnncourse.models.resnet import BasicBlock, Bottleneck  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _as_texts(t: torch.Tensor) -> dict[tuple[int, int], str]:
    t = t.reshape(-1, t.shape[-1]) if t.dim() > 1 else t.view(1, -1)
    return {(i, j): fmt(float(v)) for i, row in enumerate(t) for j, v in enumerate(row)}


def _texts(fig, prefix: str) -> list[str]:
    return [a.get_text() for a in artists(fig, prefix, "text")]


@pytest.mark.parametrize("seed", [None, 0, 1])
def test_cross_correlation_cells_equal_torch(seed: int | None) -> None:
    if seed is None:
        fig, x, w = diagrams.cross_correlation(), None, None
    else:
        g = torch.Generator().manual_seed(seed)
        x, w = torch.randint(-3, 4, (6, 5), generator=g), torch.randint(-2, 3, (3, 2), generator=g)
        fig = diagrams.cross_correlation(x, w, position=(2, 1))
    x_drawn = torch.tensor([[float(v) for _, v in sorted(r.items())] for r in _rows(cell_texts(fig, "in"))])
    w_drawn = torch.tensor([[float(v) for _, v in sorted(r.items())] for r in _rows(cell_texts(fig, "kernel"))])
    if x is not None:
        assert torch.equal(x_drawn, x.float()) and torch.equal(w_drawn, w.float())
    expected = F.conv2d(x_drawn[None, None], w_drawn[None, None])[0, 0]
    assert cell_texts(fig, "out") == _as_texts(expected)
    i, j = (1, 1) if seed is None else (2, 1)
    assert _texts(fig, "sum")[0].endswith(f"= {fmt(expected[i, j].item())}")
    with pytest.raises(ValueError, match="position"):
        diagrams.cross_correlation(position=(3, 0))


def _rows(cells: dict[tuple[int, int], str]) -> list[dict[int, str]]:
    rows: dict[int, dict[int, str]] = {}
    for (i, j), v in cells.items():
        rows.setdefault(i, {})[j] = v
    return [rows[i] for i in sorted(rows)]


@pytest.mark.parametrize("size,kernel,padding,strides", [(5, 3, 1, (1, 2)), (6, 3, 2, (3,)), (4, 2, 0, (1, 2))])
def test_padding_stride_grids(size: int, kernel: int, padding: int, strides: tuple[int, ...]) -> None:
    fig = diagrams.padding_stride(size, kernel, padding, strides)
    n = size + 2 * padding
    for s in strides:
        assert len(artists(fig, f"pad{s}:", "patch")) == n * n
        assert len(artists(fig, f"zero{s}", "text")) == n * n - size * size
        o = F.conv2d(torch.zeros(1, 1, size, size), torch.zeros(1, 1, kernel, kernel), stride=s, padding=padding)
        o = o.shape[-1]
        assert len(artists(fig, f"out{s}:", "patch")) == o * o
        assert any(t.endswith(f"stride {s}: {o}×{o}") for t in _texts(fig, "title"))


@pytest.mark.parametrize("c_in,c_out", [(3, 2), (1, 4), (2, 1)])
def test_multi_channel_counts(c_in: int, c_out: int) -> None:
    fig = diagrams.multi_channel(c_in, c_out, size=6, kernel=3)
    assert len(artists(fig, "in:", "patch")) == c_in
    assert len(artists(fig, "filter:", "patch")) == c_in * c_out
    assert len(artists(fig, "out:", "patch")) == c_out
    assert f"output\n{c_out}×4×4" in _texts(fig, "title")


@pytest.mark.parametrize("shape,kernel,stride", [((4, 4), 2, None), ((5, 5), 3, 2), ((6, 4), 2, 1)])
def test_pooling_cells_equal_torch(shape: tuple[int, int], kernel: int, stride: int | None) -> None:
    x = None if shape == (4, 4) else torch.randint(0, 9, shape, generator=torch.Generator().manual_seed(2)).float()
    fig = diagrams.pooling(x, kernel, stride)
    x_drawn = torch.tensor([[float(v) for _, v in sorted(r.items())] for r in _rows(cell_texts(fig, "in"))])
    if x is not None:
        assert torch.equal(x_drawn, x)
    s = stride or kernel
    assert cell_texts(fig, "max") == _as_texts(F.max_pool2d(x_drawn[None, None], kernel, s)[0, 0])
    assert cell_texts(fig, "avg") == _as_texts(F.avg_pool2d(x_drawn[None, None], kernel, s)[0, 0])


@pytest.mark.parametrize("layers", [
    None,
    [nn.Conv2d(1, 1, 5, stride=2), nn.Conv2d(1, 1, 3, padding=1), nn.MaxPool2d(3, 2)],
    [nn.Conv2d(1, 1, 3)] * 3,
])
def test_receptive_field_growth_matches_analysis(layers) -> None:
    width = 20
    fig = diagrams.receptive_field_growth(layers, width=width)
    stack = layers or [nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3), nn.MaxPool2d(2, 2), nn.Conv2d(1, 1, 3)]
    top = len(stack)
    # the filled input units span exactly the field that analysis.receptive_field computes
    inputs = sorted(int(a.get_gid().split(",")[1]) for a in artists(fig, "dep:0,", "patch"))
    field = receptive_field(nn.Sequential(*stack), (1, width, width)).size[0]
    assert len(inputs) == field and inputs == list(range(inputs[0], inputs[0] + field))
    assert len(artists(fig, f"dep:{top},", "patch")) == 1
    labels = _texts(fig, "rowlabel")
    for i in range(top):
        rf = receptive_field(nn.Sequential(*stack[: i + 1]), (1, width, width)).size[0]
        assert labels[i + 1].endswith(f"field {rf}")


def test_im2col_columns_and_product() -> None:
    fig = diagrams.im2col(size=4, kernel=2)
    x = torch.arange(1.0, 17).view(1, 1, 4, 4)
    cols = F.unfold(x, 2)[0]
    assert cell_texts(fig, "cols") == _as_texts(cols)
    w = torch.tensor([float(v) for _, v in sorted(cell_texts(fig, "w").items())]).view(1, 1, 2, 2)
    assert cell_texts(fig, "out") == _as_texts(F.conv2d(x, w).flatten())
    with pytest.raises(ValueError, match="kernel"):
        diagrams.im2col(size=2, kernel=3)


@pytest.mark.parametrize("block,convs,shortcut", [
    (None, 2, "identity"),
    (BasicBlock(64, 128, stride=2), 2, "projection:\n1×1 conv, 128, stride 2\n+ BN"),
    (BasicBlock(16, 32, stride=2, shortcut="A"), 2, "subsample +\nzero-pad channels"),
    (BasicBlock(16, 16, residual=False), 2, "no shortcut (plain)"),
])
def test_residual_block(block, convs: int, shortcut: str) -> None:
    fig = diagrams.residual_block(block)
    assert len(artists(fig, "box:conv:", "patch")) == convs
    assert _texts(fig, "shortcut-label") == [shortcut]
    assert bool(artists(fig, "shortcut", "patch") + [a for a in fig.axes[0].lines if a.get_gid() == "shortcut"]) \
        == (shortcut != "no shortcut (plain)")


def test_bottleneck_block_and_pair() -> None:
    fig = diagrams.bottleneck_block()
    assert [t for t in _texts(fig, "box:conv:")] == ["1×1 conv, 64, BN", "3×3 conv, 64, BN", "1×1 conv, 256, BN"]
    assert _texts(fig, "io") == ["x  (256 channels)", "output  (256 channels)"]
    fig = diagrams.bottleneck_block(Bottleneck(256, 128, stride=2))
    assert "3×3 conv, 128, stride 2, BN" in _texts(fig, "box:conv:")
    pair = diagrams.residual_blocks()
    assert len(artists(pair, "box:conv:", "patch")) == 2 + 3


@pytest.mark.parametrize("args,per_branch,out", [
    ((192, 64, 96, 128, 16, 32, 32), [1, 2, 2, 2], 256),
    ((480, 192, 96, 208, 16, 48, 64), [1, 2, 2, 2], 512),
])
def test_inception_block(args: tuple[int, ...], per_branch: list[int], out: int) -> None:
    fig = diagrams.inception_block(Inception(*args) if args[0] != 192 else None)
    assert [len(artists(fig, f"box:b{i}:", "patch")) for i in range(4)] == per_branch
    concat = _texts(fig, "box:concat")[0]
    assert concat.endswith(f"= {out}") and concat.count("+") == 3
    assert _texts(fig, "box:input") == [f"previous layer: {args[0]} channels"]


# (model name, input, expected boxes per kind). Paper counts: LeNet-5 C1, C3, C5 + S2, S4 + F6 and
# the RBF layer; AlexNet 5 conv + 3 max-pools (+ torchvision's adaptive pool) + 3 FC; VGG-16 13 conv +
# 5 pools (+ adaptive) + 3 FC; GoogLeNet 9 Inception blocks; ResNet-18 8 basic blocks.
STRIPS = [
    ("lenet5", (1, 32, 32), {"conv": 3, "pool": 2, "fc": 2}),
    ("alexnet", (3, 224, 224), {"conv": 5, "pool": 4, "fc": 3}),
    ("vgg16", (3, 224, 224), {"conv": 13, "pool": 6, "fc": 3}),
    ("googlenet", (3, 224, 224), {"conv": 3, "pool": 5, "fc": 1, "block": 9}),
    ("resnet18", (3, 224, 224), {"conv": 1, "pool": 2, "fc": 1, "block": 8}),
]


@pytest.mark.parametrize("name,size,kinds", STRIPS)
def test_architecture_strip_matches_summary(name: str, size: tuple[int, int, int], kinds: dict[str, int]) -> None:
    with torch.device("meta"):  # shapes and counts need no weights
        model = get_model(name)
    boxes = diagrams.strip_boxes(model, size)
    fig = diagrams.architecture_strip(model, size, title=name)
    drawn = {k: len(artists(fig, f"box:{k}", "patch")) for k in ("conv", "pool", "fc", "block", "other")}
    assert drawn == {"conv": 0, "pool": 0, "fc": 0, "block": 0, "other": 0} | kinds
    table = summary(model, size, show_elementwise=False)
    if "block" not in kinds:  # a chain: one box per layer that summary lists
        assert len(boxes) == len(table) == sum(kinds.values())
    # every summary row is in exactly one box, in order, and the parameters add up to the model's
    assert [n for b in boxes for n in b.layers] == [r.name for r in table.rows]
    assert sum(b.params for b in boxes) == count_parameters(model)
    assert _texts(fig, "total") == [f"total {count_parameters(model):,}"]
    shapes = {r.output_shape for r in table.rows}
    for i, b in enumerate(boxes):
        drawn_shape = [t.get_text() for t in fig.axes[0].texts if t.get_gid() == f"shape:{i}"]
        assert drawn_shape == ["×".join(map(str, b.output_shape))]
        if b.kind != "block":
            assert b.output_shape in shapes
    assert boxes[-1].output_shape == ((10,) if name == "lenet5" else (1000,))


def test_architecture_strip_by_name_and_errors() -> None:
    fig = diagrams.architecture_strip("lenet5")
    assert _texts(fig, "title") == ["LeNet-5 (LeCun et al. 1998)"]
    assert len(artists(fig, "box:", "patch")) == 7
    with pytest.raises(ValueError, match="must be one of"):
        diagrams.architecture_strip("lenet6")
    with pytest.raises(ValueError, match="input_size"):
        diagrams.architecture_strip(nn.Sequential(nn.Conv2d(1, 1, 3)))


def test_googlenet_strip_block_channels() -> None:
    with torch.device("meta"):
        model = get_model("googlenet")
    blocks = [b for b in diagrams.strip_boxes(model, (3, 224, 224)) if b.kind == "block"]
    # Szegedy et al. 2015, Table 1: output channels of 3a ... 5b
    assert [b.output_shape[0] for b in blocks] == [256, 480, 512, 512, 512, 528, 832, 832, 1024]
    assert blocks[0].text == "inception (3a), 256"


@pytest.mark.parametrize("steps", [1, 3, 6])
def test_rnn_unrolled(steps: int) -> None:
    fig = diagrams.rnn_unrolled(steps=steps)
    for kind in ("x", "h", "y"):
        ts = sorted(int(a.get_gid().split(":")[1]) for a in artists(fig, f"{kind}:", "patch"))
        assert ts == (list(range(steps + 1)) if kind == "h" else list(range(1, steps + 1)))
    assert len([a for a in fig.axes[0].texts if a.get_gid() == "rec"]) == steps


def test_rnn_unrolled_rejects_zero_steps() -> None:
    with pytest.raises(ValueError, match="steps"):
        diagrams.rnn_unrolled(steps=0)


def test_book_diagram_cells_have_caption_alt_and_one_reference() -> None:
    """Every diagram cell in the chapters is a numbered figure with alt text, referenced once in the prose."""
    book = Path(__file__).resolve().parents[1] / "book"
    cell = re.compile(r"```\{code-cell\} ipython3\n---\n(.*?)\n---\n(.*?)```", re.S)
    found = 0
    for page in sorted(book.glob("*.md")):
        text = page.read_text()
        for meta, source in cell.findall(text):
            if "diagrams." not in source:
                continue
            found += 1
            name = re.search(r"^\s+name:\s*(\S+)\s*$", meta, re.M)
            assert name, f"{page.name}: a diagram cell without a figure name"
            assert re.search(r"^\s+caption:\s*\S", meta, re.M), f"{page.name}: {name[1]} has no caption"
            assert re.search(r"^\s+alt:\s*\S", meta, re.M), f"{page.name}: {name[1]} has no alt text"
            assert "remove-input" in meta, f"{page.name}: {name[1]} shows its code"
            refs = text.count("{numref}`" + name[1] + "`")
            assert refs == 1, f"{page.name}: {name[1]} is referenced {refs} times, expected once"
    assert found >= 13  # chapters 2-8: 13 diagrams
