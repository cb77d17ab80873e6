"""GoogLeNet / Inception v1 (Szegedy et al., 2015), its blocks, and a 28x28 twin.

* ``BasicConv2d``: conv (no bias) -> batch norm -> ReLU, torchvision's unit.
* ``Inception``: four parallel branches concatenated along channels.
* ``InceptionFactorized``: the Inception-v3 block that replaces an n x n conv by
  1 x n followed by n x 1.
* ``InceptionAux``: the auxiliary classifier attached after inception4a and 4d.
* ``GoogLeNet``: the ImageNet network with torchvision's attribute names.
* ``GoogLeNetSmall``: a stem plus four ``Inception`` blocks for 28x28 inputs.

Reference: C. Szegedy et al., "Going Deeper with Convolutions", CVPR 2015 (Table 1,
Figure 2b); C. Szegedy et al., "Rethinking the Inception Architecture for Computer Vision",
CVPR 2016 (Section 3.2, Figure 6).
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnncourse.models._common import check_input
from cnncourse.models._registry import register_model

__all__ = [
    "BasicConv2d",
    "GoogLeNet",
    "GoogLeNetOutputs",
    "GoogLeNetSmall",
    "Inception",
    "InceptionAux",
    "InceptionFactorized",
    "googlenet",
    "googlenet_small",
]


class GoogLeNetOutputs(NamedTuple):
    """Main and auxiliary logits, each ``(N, num_classes)``."""

    logits: torch.Tensor
    aux_logits2: torch.Tensor
    aux_logits1: torch.Tensor


class BasicConv2d(nn.Module):
    """Conv2d without bias, BatchNorm2d (eps 0.001), ReLU.

    Input ``(N, C_in, H, W)``, weight ``(C_out, C_in, K_h, K_w)``, output
    ``(N, C_out, H_out, W_out)`` with ``H_out = floor((H + 2 P - K_h) / S) + 1``.

    Note:
        The 2015 paper has no batch norm; torchvision's GoogLeNet adds it to every conv.

    Reference: torchvision ``models/googlenet.py``.
    """

    def __init__(self, in_channels: int, out_channels: int, **conv_kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **conv_kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)  # (N, C_out, H_out, W_out)


class Inception(nn.Module):
    """The Inception v1 block: four branches, concatenated along channels.

    1. ``branch1``: 1x1 conv to ``ch1x1``.
    2. ``branch2``: 1x1 reduction to ``ch3x3red``, then 3x3 to ``ch3x3``.
    3. ``branch3``: 1x1 reduction to ``ch5x5red``, then 5x5 to ``ch5x5``.
    4. ``branch4``: 3x3 max-pool (stride 1), then 1x1 projection to ``pool_proj``.

    Input ``(N, C_in, H, W)``; output ``(N, ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W)``:
    every branch keeps ``H, W`` (padding ``K // 2``, stride 1), so they can be concatenated.

    Args:
        in_channels: ``C_in``.
        ch1x1: output channels of the 1x1 branch.
        ch3x3red: channels of the 1x1 reduction before the 3x3 conv.
        ch3x3: output channels of the 3x3 branch.
        ch5x5red: channels of the 1x1 reduction before the 5x5 conv.
        ch5x5: output channels of the 5x5 branch.
        pool_proj: output channels of the 1x1 after the pool.
        kernel_5x5: kernel of the third branch; 5 as in the paper, 3 to match torchvision.

    Raises:
        ValueError: if ``kernel_5x5`` is not a positive odd int.

    Reference: Szegedy et al., CVPR 2015, Figure 2(b) and Table 1.
    """

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        kernel_5x5: int = 5,
    ) -> None:
        super().__init__()
        if kernel_5x5 < 1 or kernel_5x5 % 2 == 0:
            raise ValueError(f"kernel_5x5 must be a positive odd int, got {kernel_5x5}")
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            BasicConv2d(in_channels, ch3x3red, kernel_size=1),
            BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1),
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(in_channels, ch5x5red, kernel_size=1),
            BasicConv2d(ch5x5red, ch5x5, kernel_size=kernel_5x5, padding=kernel_5x5 // 2),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            BasicConv2d(in_channels, pool_proj, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1(x)  # (N, ch1x1, H, W)
        b2 = self.branch2(x)  # (N, ch3x3, H, W)
        b3 = self.branch3(x)  # (N, ch5x5, H, W)
        b4 = self.branch4(x)  # (N, pool_proj, H, W)
        return torch.cat([b1, b2, b3, b4], 1)  # (N, ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W)


class InceptionFactorized(nn.Module):
    """Inception-v3 block with n x n convolutions factorised into 1 x n then n x 1.

    1. ``branch1``: 1x1 conv to ``ch1x1``.
    2. ``branch2``: 1x1 to ``ch_red``, 1 x n to ``ch_red``, n x 1 to ``ch_nxn``
       (one factorised n x n).
    3. ``branch3``: 1x1 to ``ch_dbl_red``, then 1 x n, n x 1, 1 x n, n x 1, the last to
       ``ch_dbl`` (two stacked factorised n x n).
    4. ``branch4``: 3x3 average pool (stride 1), then 1x1 to ``pool_proj``.

    Input ``(N, C_in, H, W)``; output ``(N, ch1x1 + ch_nxn + ch_dbl + pool_proj, H, W)``.
    A 1 x n weight is ``(C_out, C_in, 1, n)`` with padding ``(0, n // 2)``, so ``H, W`` stay;
    one 1 x n plus one n x 1 costs ``2 n C^2`` weights against ``n^2 C^2`` for n x n.

    Args:
        in_channels: ``C_in``.
        ch1x1: output channels of the 1x1 branch.
        ch_red: channels inside the single factorised branch.
        ch_nxn: output channels of the single factorised branch.
        ch_dbl_red: channels inside the double factorised branch.
        ch_dbl: output channels of the double factorised branch.
        pool_proj: output channels of the pool branch.
        n: the factorised kernel size (7 in Inception-v3's 17x17 grid); odd.

    Raises:
        ValueError: if ``n`` is not an odd int of at least 3.

    Reference: Szegedy et al., CVPR 2016, Section 3.2 and Figure 6; torchvision
    ``InceptionC`` in ``models/inception.py``.
    """

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch_red: int,
        ch_nxn: int,
        ch_dbl_red: int,
        ch_dbl: int,
        pool_proj: int,
        n: int = 7,
    ) -> None:
        super().__init__()
        if n < 3 or n % 2 == 0:
            raise ValueError(f"n must be an odd int >= 3, got {n}")
        self.out_channels = ch1x1 + ch_nxn + ch_dbl + pool_proj
        row = {"kernel_size": (1, n), "padding": (0, n // 2)}
        col = {"kernel_size": (n, 1), "padding": (n // 2, 0)}
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            BasicConv2d(in_channels, ch_red, kernel_size=1),
            BasicConv2d(ch_red, ch_red, **row),
            BasicConv2d(ch_red, ch_nxn, **col),
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(in_channels, ch_dbl_red, kernel_size=1),
            BasicConv2d(ch_dbl_red, ch_dbl_red, **col),
            BasicConv2d(ch_dbl_red, ch_dbl_red, **row),
            BasicConv2d(ch_dbl_red, ch_dbl_red, **col),
            BasicConv2d(ch_dbl_red, ch_dbl, **row),
        )
        self.branch4 = nn.Sequential(
            nn.AvgPool2d(kernel_size=3, stride=1, padding=1),
            BasicConv2d(in_channels, pool_proj, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1(x)  # (N, ch1x1, H, W)
        b2 = self.branch2(x)  # (N, ch_nxn, H, W)
        b3 = self.branch3(x)  # (N, ch_dbl, H, W)
        b4 = self.branch4(x)  # (N, pool_proj, H, W)
        return torch.cat([b1, b2, b3, b4], 1)  # (N, ch1x1 + ch_nxn + ch_dbl + pool_proj, H, W)


class InceptionAux(nn.Module):
    """Auxiliary classifier: 4x4 average pool, 1x1 conv to 128, FC 1024, dropout, FC.

    Input ``(N, C_in, H, W)``; output ``(N, num_classes)``.

    Note:
        The paper pools 5x5 with stride 3 (14x14 -> 4x4); torchvision uses an adaptive
        pool to 4x4, which is what this does.

    Reference: Szegedy et al., CVPR 2015, Section 5.
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.7) -> None:
        super().__init__()
        self.conv = BasicConv2d(in_channels, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(x, (4, 4))  # (N, C_in, 4, 4)
        x = self.conv(x)  # (N, 128, 4, 4)
        x = torch.flatten(x, 1)  # (N, 2048)
        x = F.relu(self.fc1(x), inplace=True)  # (N, 1024)
        x = self.dropout(x)  # (N, 1024)
        return self.fc2(x)  # (N, num_classes)


class GoogLeNet(nn.Module):
    """GoogLeNet (Inception v1) for ImageNet, with torchvision's attribute names.

    Input ``(N, C_in, H, W)`` with ``H, W >= 15``. Without auxiliary heads the output is
    logits ``(N, num_classes)``; with ``aux_logits=True`` it is always a
    ``GoogLeNetOutputs(logits, aux_logits2, aux_logits1)``, in training and in eval mode
    alike (torchvision returns the tuple only in training).

    Args:
        num_classes: number of output logits.
        aux_logits: build the two auxiliary classifiers.
        in_channels: ``C_in``.
        dropout: dropout before ``fc``.
        dropout_aux: dropout inside the auxiliary classifiers.
        init_weights: torchvision's truncated-normal (std 0.01) initialisation.
        kernel_5x5: kernel of every Inception block's third branch; 3 matches torchvision,
            5 is the paper's.

    Note:
        By default the "5x5" branch uses a 3x3 kernel, as torchvision does (a known
        discrepancy, pytorch/vision issue 906), so the parameter count is torchvision's
        6,624,904; ``kernel_5x5=5`` gives the paper's blocks and 7,005,832 parameters.
        Batch norm in every conv is also torchvision's, not the paper's.

    Reference: Szegedy et al., CVPR 2015, Table 1; torchvision ``models/googlenet.py``.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        aux_logits: bool = False,
        in_channels: int = 3,
        dropout: float = 0.2,
        dropout_aux: float = 0.7,
        init_weights: bool = True,
        kernel_5x5: int = 3,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.input_size = (in_channels, 224, 224)
        self.aux_logits = aux_logits
        k = kernel_5x5
        self.conv1 = BasicConv2d(in_channels, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        # Table 1 rows: in, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32, kernel_5x5=k)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64, kernel_5x5=k)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64, kernel_5x5=k)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64, kernel_5x5=k)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64, kernel_5x5=k)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64, kernel_5x5=k)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128, kernel_5x5=k)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128, kernel_5x5=k)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128, kernel_5x5=k)
        self.aux1: Optional[InceptionAux] = InceptionAux(512, num_classes, dropout_aux) if aux_logits else None
        self.aux2: Optional[InceptionAux] = InceptionAux(528, num_classes, dropout_aux) if aux_logits else None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(1024, num_classes)
        if init_weights:
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, GoogLeNetOutputs]:
        check_input(x, (self.in_channels, None, None))
        x = self.conv1(x)  # (N, 64, 112, 112) at 224x224
        x = self.maxpool1(x)  # (N, 64, 56, 56)
        x = self.conv2(x)  # (N, 64, 56, 56)
        x = self.conv3(x)  # (N, 192, 56, 56)
        x = self.maxpool2(x)  # (N, 192, 28, 28)
        x = self.inception3a(x)  # (N, 256, 28, 28)
        x = self.inception3b(x)  # (N, 480, 28, 28)
        x = self.maxpool3(x)  # (N, 480, 14, 14)
        x = self.inception4a(x)  # (N, 512, 14, 14)
        aux1 = self.aux1(x) if self.aux1 is not None else None  # (N, num_classes)
        x = self.inception4b(x)  # (N, 512, 14, 14)
        x = self.inception4c(x)  # (N, 512, 14, 14)
        x = self.inception4d(x)  # (N, 528, 14, 14)
        aux2 = self.aux2(x) if self.aux2 is not None else None  # (N, num_classes)
        x = self.inception4e(x)  # (N, 832, 14, 14)
        x = self.maxpool4(x)  # (N, 832, 7, 7)
        x = self.inception5a(x)  # (N, 832, 7, 7)
        x = self.inception5b(x)  # (N, 1024, 7, 7)
        x = self.avgpool(x)  # (N, 1024, 1, 1)
        x = torch.flatten(x, 1)  # (N, 1024)
        x = self.fc(self.dropout(x))  # (N, num_classes)
        if aux1 is not None and aux2 is not None:
            return GoogLeNetOutputs(x, aux2, aux1)
        return x


class GoogLeNetSmall(nn.Module):
    """A GoogLeNet-shaped network for 28x28 inputs, built from the paper's ``Inception``.

    Stem (3x3 conv to 32, max-pool, 3x3 conv to 48), two Inception blocks at 14x14 (64 and
    112 channels out), a max-pool, two at 7x7 (160 each), global average pool, dropout, FC. Every block uses a true 5x5
    third branch (``kernel_5x5=5``), as in the paper.

    Input ``(N, C_in, H, W)`` with ``H, W >= 3``; output logits ``(N, num_classes)``.

    Args:
        in_channels: ``C_in``.
        num_classes: number of output logits.
        dropout: dropout probability before ``fc``.

    Reference: Szegedy et al., CVPR 2015 (scaled down).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, dropout: float = 0.2) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.input_size = (in_channels, 28, 28)
        self.conv1 = BasicConv2d(in_channels, 32, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = BasicConv2d(32, 48, kernel_size=3, padding=1)
        # in, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj (as in Table 1)
        self.inception3a = Inception(48, 16, 24, 32, 4, 8, 8)
        self.inception3b = Inception(64, 32, 32, 48, 8, 16, 16)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, padding=1)
        self.inception4a = Inception(112, 48, 32, 64, 8, 24, 24)
        self.inception4b = Inception(160, 48, 48, 64, 12, 24, 24)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(160, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, (self.in_channels, None, None))
        x = self.conv1(x)  # (N, 32, 28, 28)
        x = self.maxpool1(x)  # (N, 32, 14, 14)
        x = self.conv2(x)  # (N, 48, 14, 14)
        x = self.inception3a(x)  # (N, 64, 14, 14)
        x = self.inception3b(x)  # (N, 112, 14, 14)
        x = self.maxpool3(x)  # (N, 112, 7, 7)
        x = self.inception4a(x)  # (N, 160, 7, 7)
        x = self.inception4b(x)  # (N, 160, 7, 7)
        x = self.avgpool(x)  # (N, 160, 1, 1)
        x = torch.flatten(x, 1)  # (N, 160)
        return self.fc(self.dropout(x))  # (N, num_classes)


@register_model
def googlenet(*, num_classes: int = 1000, in_channels: int = 3, aux_logits: bool = False, **kwargs) -> GoogLeNet:
    """Build GoogLeNet for ImageNet (6,624,904 parameters without auxiliary heads).

    Args:
        num_classes: number of output logits.
        aux_logits: add the two auxiliary classifiers (then ``forward`` returns
            ``GoogLeNetOutputs``).
        in_channels: input channels.
        **kwargs: passed on to ``GoogLeNet`` (``dropout``, ``kernel_5x5``, ...).

    Returns:
        A ``GoogLeNet`` whose ``state_dict`` matches
        ``torchvision.models.googlenet(weights=None, aux_logits=aux_logits)``.

    Note:
        The "5x5" branch is 3x3, as in torchvision; see ``GoogLeNet``.

    Reference: Szegedy et al., CVPR 2015.
    """
    return GoogLeNet(num_classes=num_classes, aux_logits=aux_logits, in_channels=in_channels, **kwargs)


@register_model
def googlenet_small(*, num_classes: int = 10, in_channels: int = 1, dropout: float = 0.2, **kwargs) -> GoogLeNetSmall:
    """Build the 28x28 GoogLeNet twin; see ``GoogLeNetSmall``.

    Reference: Szegedy et al., CVPR 2015.
    """
    return GoogLeNetSmall(in_channels=in_channels, num_classes=num_classes, dropout=dropout, **kwargs)
