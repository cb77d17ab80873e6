"""LeNet family: the 1998 LeNet-5, the textbook LeNet-5 and Caffe's 20-50-500 LeNet.

Reference: Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, "Gradient-based learning applied to
document recognition", Proc. IEEE 86(11):2278-2324, 1998, section II.B (architecture),
section II.C (loss), appendix A (squashing function and initialisation).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Sequence, cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnncourse.models._common import check_input
from cnncourse.models._registry import register_model

__all__ = [
    "C3_TABLE",
    "EuclideanRBF",
    "LeNet5",
    "LeNet5Textbook",
    "LeNetCaffe",
    "PartialConv2d",
    "RBF_BITMAPS",
    "ScaledTanh",
    "Subsampling",
    "lenet5",
    "lenet_caffe",
    "lenet1998_loss",
    "paper_scaling",
    "rbf_codes",
]

# Table I of the paper: C3 map j reads the S2 maps listed in C3_TABLE[j].
C3_TABLE: tuple[tuple[int, ...], ...] = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)  # fmt: skip

# Our own stylised 7-wide x 12-high digit bitmaps ('#' = +1, '.' = -1), drawn for this course in the
# spirit of the paper's Fig. 3; the paper's exact bitmaps are not published as data.
RBF_BITMAPS: dict[int, tuple[str, ...]] = {
    0: ("..###..", ".#...#.", "#.....#", "#.....#", "#.....#", "#.....#",
        "#.....#", "#.....#", "#.....#", "#.....#", ".#...#.", "..###.."),
    1: ("...#...", "..##...", ".#.#...", "...#...", "...#...", "...#...",
        "...#...", "...#...", "...#...", "...#...", "...#...", ".#####."),
    2: (".#####.", "#.....#", "......#", "......#", ".....#.", "....#..",
        "...#...", "..#....", ".#.....", "#......", "#......", "#######"),
    3: (".#####.", "#.....#", "......#", "......#", "......#", "..####.",
        "......#", "......#", "......#", "......#", "#.....#", ".#####."),
    4: (".....#.", "....##.", "...#.#.", "..#..#.", ".#...#.", "#....#.",
        "#######", ".....#.", ".....#.", ".....#.", ".....#.", ".....#."),
    5: ("#######", "#......", "#......", "#......", "######.", "......#",
        "......#", "......#", "......#", "......#", "#.....#", ".#####."),
    6: ("..####.", ".#.....", "#......", "#......", "######.", "#.....#",
        "#.....#", "#.....#", "#.....#", "#.....#", "#.....#", ".#####."),
    7: ("#######", "......#", "......#", ".....#.", ".....#.", "....#..",
        "....#..", "...#...", "...#...", "..#....", "..#....", "..#...."),
    8: (".#####.", "#.....#", "#.....#", "#.....#", ".#...#.", "..###..",
        ".#...#.", "#.....#", "#.....#", "#.....#", "#.....#", ".#####."),
    9: (".#####.", "#.....#", "#.....#", "#.....#", "#.....#", "#.....#",
        ".######", "......#", "......#", "......#", ".....#.", ".####.."),
}  # fmt: skip


def rbf_codes() -> torch.Tensor:
    """The fixed +-1 RBF codes of the 10 digits, built from ``RBF_BITMAPS``.

    Each 7x12 bitmap is read row by row (top to bottom, left to right); ``'#'`` becomes +1 and
    ``'.'`` becomes -1. The construction is deterministic and has no random part.

    Returns:
        Float tensor of shape ``(10, 84)``.

    Reference: LeCun et al. 1998, section II.B and Fig. 3 (7x12 bitmaps as RBF parameters).
    """
    rows = []
    for digit in range(10):
        bitmap = RBF_BITMAPS[digit]
        if len(bitmap) != 12 or any(len(r) != 7 for r in bitmap):
            raise ValueError(f"bitmap of digit {digit} must be 12 rows of 7 characters")
        rows.append([1.0 if ch == "#" else -1.0 for r in bitmap for ch in r])
    return torch.tensor(rows)


class ScaledTanh(nn.Module):
    """The squashing function ``f(a) = 1.7159 * tanh(2/3 * a)``, chosen so that ``f(+-1) = +-1``.

    Shapes: input any shape, output the same shape.

    Reference: LeCun et al. 1998, appendix A.
    """

    amplitude = 1.7159
    slope = 2.0 / 3.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.amplitude * torch.tanh(self.slope * x)


class Subsampling(nn.Module):
    """Trainable subsampling (S2, S4): per map, the 2x2 sum times one coefficient plus one bias.

    Input ``(N, C, H, W)``, output ``(N, C, H_out, W_out)`` with ``H_out = floor(H / K)``,
    ``W_out = floor(W / K)`` (non-overlapping K x K windows). The squashing is a separate module.

    Reference: LeCun et al. 1998, section II.B (layer S2).
    """

    def __init__(self, channels: int, kernel_size: int = 2) -> None:
        super().__init__()
        self.channels = channels
        self.kernel_size = kernel_size
        self.stride = kernel_size
        self.padding = 0
        self.weight = nn.Parameter(torch.full((channels,), 0.25))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"expected input (N, {self.channels}, H, W), got {tuple(x.shape)}")
        k = self.kernel_size
        window_sum = F.avg_pool2d(x, k) * (k * k)
        return window_sum * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)

    def connections(self, output_shape: Sequence[int]) -> int:
        """Paper-style connections per example: each output reads K*K inputs plus the bias."""
        return math.prod(output_shape) * (self.kernel_size**2 + 1)

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}"


class PartialConv2d(nn.Module):
    """A convolution in which output map ``j`` reads only the input maps ``table[j]`` (C3).

    Only the connected kernels are parameters: ``weight`` has shape ``(L, K, K)``, one K x K kernel per
    (output map, input map) link, L = sum of ``len(table[j])``. The forward pass scatters them into a
    dense ``(C_out, C_in, K, K)`` weight (zeros elsewhere) and runs one ``conv2d``, so unconnected
    kernels get no parameters and no gradient.

    Input ``(N, C_in, H, W)``, output ``(N, C_out, H - K + 1, W - K + 1)`` (stride 1, no padding).

    Reference: LeCun et al. 1998, section II.B and Table I.
    """

    def __init__(self, in_channels: int, table: Sequence[Sequence[int]], kernel_size: int = 5) -> None:
        super().__init__()
        out_idx, in_idx = [], []
        for j, inputs in enumerate(table):
            if not inputs or len(set(inputs)) != len(inputs) or not all(0 <= i < in_channels for i in inputs):
                raise ValueError(f"table[{j}] must list distinct maps in 0..{in_channels - 1}, got {inputs}")
            out_idx += [j] * len(inputs)
            in_idx += list(inputs)
        self.in_channels = in_channels
        self.out_channels = len(table)
        self.kernel_size = kernel_size
        self.stride = 1
        self.padding = 0
        self.table = tuple(tuple(t) for t in table)
        self.out_index: torch.Tensor
        self.in_index: torch.Tensor
        self.register_buffer("out_index", torch.tensor(out_idx), persistent=False)
        self.register_buffer("in_index", torch.tensor(in_idx), persistent=False)
        self.weight = nn.Parameter(torch.zeros(len(out_idx), kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(self.out_channels))

    def dense_weight(self) -> torch.Tensor:
        """The equivalent dense weight ``(C_out, C_in, K, K)``, zero for unconnected maps."""
        k = self.kernel_size
        dense = self.weight.new_zeros(self.out_channels, self.in_channels, k, k)
        return dense.index_put((self.out_index, self.in_index), self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return F.conv2d(x, self.dense_weight(), self.bias)

    def connections(self, output_shape: Sequence[int]) -> int:
        """Paper-style connections per example: every output position uses every kernel once."""
        spatial = math.prod(output_shape[1:])
        return spatial * (self.weight.numel() + self.bias.numel())

    def macs(self, output_shape: Sequence[int]) -> int:
        """Multiply-adds per example: each output position uses each stored kernel once (unlinked maps cost 0)."""
        return math.prod(output_shape[1:]) * self.weight.numel()

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, links={len(self.weight)}"


class EuclideanRBF(nn.Module):
    """Euclidean RBF output units with fixed codes; returns the *negative* penalties.

    Penalty of class i: ``y_i = sum_j (x_j - w_ij)^2`` (small is good). The module returns
    ``-y`` so that the largest output wins and ``F.cross_entropy`` can take it as logits.
    Input ``(N, D)``, codes ``(M, D)`` (a buffer, not trained), output ``(N, M)``.

    Reference: LeCun et al. 1998, section II.B (output layer), eq. (7).
    """

    def __init__(self, codes: torch.Tensor) -> None:
        super().__init__()
        if codes.dim() != 2:
            raise ValueError(f"codes must be (M, D), got {tuple(codes.shape)}")
        self.codes: torch.Tensor
        self.register_buffer("codes", codes.clone().float())

    @property
    def in_features(self) -> int:
        """Input size ``D``, as ``nn.Linear`` names it (so tools can treat this layer as a classifier head)."""
        return self.codes.shape[1]

    @property
    def out_features(self) -> int:
        """Number of classes ``M``, as ``nn.Linear`` names it."""
        return self.codes.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.codes.shape[1]:
            raise ValueError(f"expected input (N, {self.codes.shape[1]}), got {tuple(x.shape)}")
        return -((x.unsqueeze(1) - self.codes.unsqueeze(0)) ** 2).sum(dim=2)

    def connections(self, output_shape: Sequence[int]) -> int:
        """Each output unit reads every input once: M * D."""
        return self.codes.numel()


def lenet1998_loss(scores: torch.Tensor, target: torch.Tensor, j: float = 1.0) -> torch.Tensor:
    """The paper's MAP criterion, eq. (9), on the negative penalties ``scores = -y``.

    ``E = mean_p( y_{D_p} + log(exp(-j) + sum_i exp(-y_i)) )``. As ``j -> infinity`` this becomes
    exactly the cross-entropy of ``softmax(-y)``; a finite ``j`` adds a "rubbish class" that stops
    the loss from rewarding ever larger wrong-class penalties once they exceed ``j``.

    Args:
        scores: ``(N, M)`` model output (negative RBF penalties).
        target: ``(N,)`` class indices.
        j: the positive constant of eq. (9).

    Reference: LeCun et al. 1998, section II.C, eq. (9).
    """
    if scores.dim() != 2 or target.shape != scores.shape[:1]:
        raise ValueError(f"expected scores (N, M) and target (N,), got {tuple(scores.shape)} and {tuple(target.shape)}")
    rubbish = scores.new_full((scores.shape[0], 1), -float(j))
    log_norm = torch.logsumexp(torch.cat([rubbish, scores], dim=1), dim=1)
    return (log_norm - scores.gather(1, target[:, None]).squeeze(1)).mean()


def paper_scaling(mean: float, std: float, size: int = 32):
    """A batch transform from normalised 28x28 digits to the paper's input format.

    Undoes ``(x - mean) / std``, maps background 0 to -0.1 and ink 1 to 1.175 (mean about 0, variance
    about 1 over MNIST), and centres the digit in a ``size`` x ``size`` field of background.
    Input ``(N, C, H, W)``, output ``(N, C, size, size)``.

    Reference: LeCun et al. 1998, section II.A (input normalisation) and II.B (32x32 field).
    """

    def transform(x: torch.Tensor) -> torch.Tensor:
        dh, dw = size - x.shape[-2], size - x.shape[-1]
        if x.dim() != 4 or dh < 0 or dw < 0:
            raise ValueError(f"expected a batch (N, C, H, W) with H, W <= {size}, got {tuple(x.shape)}")
        scaled = -0.1 + 1.275 * (x * std + mean)
        return F.pad(scaled, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), value=-0.1)

    return transform


class LeNet5(nn.Module):
    """The LeNet-5 of LeCun et al. (1998): C1-S2-C3-S4-C5-F6 and a fixed Euclidean RBF output.

    Input ``(N, C_in, 32, 32)``; output ``(N, 10)`` negative RBF penalties (use as logits).
    Trainable parameters: 60,000 (with ``in_channels=1``).

    Note:
        Deviations from the paper, all deliberate:

        * The RBF codes come from our own 7x12 bitmaps (``RBF_BITMAPS``); the paper's figure
          shows its bitmaps but does not publish them as data.
        * ``forward`` returns ``-penalty`` rather than the penalty, so that the largest output wins and
          ``F.cross_entropy`` works. Cross-entropy equals the paper's eq. (9) with ``j -> infinity``, but
          it trains this network slowly (the fixed codes make the logits ``2 x . w_i`` large and
          unscalable); ``lenet1998_loss`` (eq. (9), finite ``j``) also pulls F6 towards the correct code
          and trains much faster. Pass it to ``fit`` as ``loss_fn``.
        * The paper trains with stochastic diagonal Levenberg-Marquardt; we use ordinary optimisers.
        * The squashing ``ScaledTanh`` follows every layer up to F6, as in the paper.
        * Weights start uniform in ``+-2.4 / fan_in`` (appendix A); subsampling coefficients start at
          ``0.25`` (an average) and biases at 0, a choice the paper does not specify.

    Reference: LeCun et al. 1998, section II.B.
    """

    # What the network expects besides its weights (read by ``cnncourse.train.input_pipeline``, so the
    # CLI and other callers need no LeNet-specific code): the paper's input scaling and eq. (9).
    input_transform = staticmethod(paper_scaling)
    loss_fn = staticmethod(lenet1998_loss)

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.input_size = (in_channels, 32, 32)
        self.c1 = nn.Conv2d(in_channels, 6, kernel_size=5)
        self.s2 = Subsampling(6)
        self.c3 = PartialConv2d(6, C3_TABLE, kernel_size=5)
        self.s4 = Subsampling(16)
        self.c5 = nn.Conv2d(16, 120, kernel_size=5)
        self.f6 = nn.Linear(120, 84)
        self.output = EuclideanRBF(rbf_codes())
        self.act = ScaledTanh()
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        # Appendix A: uniform in (-2.4/F, 2.4/F), F = fan-in, keeps sums in the squashing's linear range.
        layers: tuple[tuple[nn.Conv2d | nn.Linear, int], ...] = (
            (self.c1, self.c1.weight[0].numel()),
            (self.c5, 16 * 25),
            (self.f6, 120),
        )
        for layer, fan_in in layers:
            nn.init.uniform_(layer.weight, -2.4 / fan_in, 2.4 / fan_in)
            nn.init.uniform_(cast(torch.Tensor, layer.bias), -2.4 / fan_in, 2.4 / fan_in)
        fan_in_per_map = torch.tensor([len(t) * 25 for t in C3_TABLE], dtype=torch.float32)
        bound = (2.4 / fan_in_per_map)[self.c3.out_index].view(-1, 1, 1)
        self.c3.weight.copy_((torch.rand_like(self.c3.weight) * 2 - 1) * bound)
        self.c3.bias.copy_((torch.rand(16) * 2 - 1) * 2.4 / fan_in_per_map)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.input_size)
        x = self.act(self.c1(x))  # (N, 6, 28, 28)
        x = self.act(self.s2(x))  # (N, 6, 14, 14)
        x = self.act(self.c3(x))  # (N, 16, 10, 10)
        x = self.act(self.s4(x))  # (N, 16, 5, 5)
        x = self.act(self.c5(x))  # (N, 120, 1, 1)
        x = self.act(self.f6(torch.flatten(x, 1)))  # (N, 84)
        return self.output(x)  # (N, 10)


_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}
_POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


class LeNet5Textbook(nn.Module):
    """The LeNet-5 taught today: dense C3, 400-120-84-classes, ReLU/max-pool or tanh/avg-pool.

    Input ``(N, C_in, 28, 28)`` (``input_size=28``: conv1 has padding 2, so C1 is still 28x28) or
    ``(N, C_in, 32, 32)`` (``input_size=32``, no padding, as in the paper). Output ``(N, num_classes)``
    logits; the softmax lives in the loss. 61,706 parameters for one input channel and 10 classes.

    Note:
        Differences from the 1998 network: every C3 map sees every S2 map; pooling has no trainable
        coefficient; the output is an ordinary linear layer read through a softmax, not RBF units.

    Reference: LeCun et al. 1998, section II.B, in its common simplified form.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        activation: str = "relu",
        pool: str = "max",
        input_size: int = 28,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        if pool not in _POOLS:
            raise ValueError(f"pool must be one of {sorted(_POOLS)}, got {pool!r}")
        if input_size not in (28, 32):
            raise ValueError(f"input_size must be 28 or 32, got {input_size!r}")
        act, pooling = _ACTIVATIONS[activation], _POOLS[pool]
        self.input_size = (in_channels, input_size, input_size)
        self.features = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(in_channels, 6, kernel_size=5, padding=2 if input_size == 28 else 0),
            act1=act(), pool1=pooling(2),
            conv2=nn.Conv2d(6, 16, kernel_size=5), act2=act(), pool2=pooling(2),
        ))  # fmt: skip
        self.classifier = nn.Sequential(OrderedDict(
            fc1=nn.Linear(16 * 5 * 5, 120), act3=act(),
            fc2=nn.Linear(120, 84), act4=act(),
            fc3=nn.Linear(84, num_classes),
        ))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.input_size)
        x = self.features(x)  # (N, 16, 5, 5)
        return self.classifier(torch.flatten(x, 1))  # (N, num_classes)


class LeNetCaffe(nn.Module):
    """Caffe's MNIST LeNet: conv 20@5x5, max-pool, conv 50@5x5, max-pool, FC 500, ReLU, FC classes.

    Input ``(N, C_in, 28, 28)``, output ``(N, num_classes)`` logits. 431,080 parameters for one input
    channel and 10 classes.

    Note:
        As in Caffe's ``lenet_train_test.prototxt``, there is no non-linearity after the convolutions;
        the only ReLU is after the 500-unit layer.

    Reference: Caffe "Training LeNet on MNIST" example (BVLC, examples/mnist/lenet.prototxt).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.input_size = (in_channels, 28, 28)
        self.features = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(in_channels, 20, kernel_size=5), pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(20, 50, kernel_size=5), pool2=nn.MaxPool2d(2),
        ))  # fmt: skip
        self.classifier = nn.Sequential(OrderedDict(
            fc1=nn.Linear(50 * 4 * 4, 500), relu=nn.ReLU(), fc2=nn.Linear(500, num_classes),
        ))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.input_size)
        x = self.features(x)  # (N, 50, 4, 4)
        return self.classifier(torch.flatten(x, 1))  # (N, num_classes)


@register_model
def lenet5(
    variant: str = "1998",
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    activation: str | None = None,
    pool: str | None = None,
    input_size: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build LeNet-5: ``variant="1998"`` (the paper's) or ``"textbook"`` (today's simplified form).

    Args:
        variant: ``"1998"`` or ``"textbook"``.
        num_classes: textbook only (the 1998 RBF codes exist for the 10 digits).
        in_channels: input channels.
        activation: textbook only, ``"relu"`` (default) or ``"tanh"``.
        pool: textbook only, ``"max"`` (default) or ``"avg"``.
        input_size: 32 for the 1998 network; 28 (default, conv1 padding 2) or 32 for the textbook one.
        **kwargs: passed on to ``LeNet5`` or ``LeNet5Textbook``.

    Reference: LeCun et al. 1998, section II.B.
    """
    if variant == "1998":
        if activation is not None or pool is not None:
            raise ValueError("activation and pool are fixed in the 1998 LeNet-5 (scaled tanh, trainable subsampling)")
        if num_classes != 10:
            raise ValueError(f"the 1998 LeNet-5 has RBF codes for 10 digits, got num_classes={num_classes}")
        if input_size not in (None, 32):
            raise ValueError(f"the 1998 LeNet-5 takes 32x32 inputs, got input_size={input_size}")
        return LeNet5(in_channels=in_channels, **kwargs)
    if variant == "textbook":
        return LeNet5Textbook(num_classes, in_channels, activation or "relu", pool or "max", input_size or 28, **kwargs)
    raise ValueError(f"variant must be '1998' or 'textbook', got {variant!r}")


@register_model
def lenet_caffe(*, num_classes: int = 10, in_channels: int = 1, **kwargs: Any) -> nn.Module:
    """Build Caffe's 20-50-500 LeNet for 28x28 inputs.

    Reference: Caffe MNIST example (BVLC, examples/mnist/lenet.prototxt).
    """
    return LeNetCaffe(num_classes, in_channels, **kwargs)
