"""The 1998 paper's own building blocks, used by :class:`cnncourse.models.lenet.LeNet5`.

Its squashing function, trainable subsampling, the partially connected C3 layer and its connection
table, the Euclidean RBF output with its digit codes, the paper's loss, eq. (9), and its input scaling.
None of them is a model: :mod:`cnncourse.models.lenet` builds LeNet-5 from them and re-exports every
name, so ``from cnncourse.models.lenet import EuclideanRBF`` keeps working.

Reference: Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, "Gradient-based learning applied to
document recognition", Proc. IEEE 86(11):2278-2324, 1998, section II.B (architecture),
section II.C (loss), appendix A (squashing function and initialisation).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "C3_TABLE",
    "EuclideanRBF",
    "PartialConv2d",
    "RBF_BITMAPS",
    "ScaledTanh",
    "Subsampling",
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
