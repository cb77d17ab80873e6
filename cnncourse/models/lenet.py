"""LeNet family: the 1998 LeNet-5, the textbook LeNet-5 and Caffe's 20-50-500 LeNet.

Reference: Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, "Gradient-based learning applied to
document recognition", Proc. IEEE 86(11):2278-2324, 1998, section II.B (architecture),
section II.C (loss), appendix A (squashing function and initialisation).

The 1998 network's own layers (RBF output, C3 connection table, trainable subsampling, ...) and its
loss are in :mod:`cnncourse.models.lenet_layers`; every name there is re-exported here.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, cast

import torch
import torch.nn as nn

from cnncourse.models._common import check_input
from cnncourse.models._registry import register_model
from cnncourse.models.lenet_layers import (
    C3_TABLE,
    RBF_BITMAPS,
    EuclideanRBF,
    PartialConv2d,
    ScaledTanh,
    Subsampling,
    lenet1998_loss,
    paper_scaling,
    rbf_codes,
)

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
