"""Residual networks (He et al., 2016): ImageNet ResNets and the 6n+2 CIFAR networks.

* ``BasicBlock``: two 3x3 convs plus a shortcut (ResNet-18/34 and the CIFAR nets).
* ``Bottleneck``: 1x1 reduce, 3x3, 1x1 expand (x4) plus a shortcut (ResNet-50/101/152).
* ``ZeroPadShortcut``: the paper's parameter-free option A shortcut.
* ``ResNet``: the ImageNet network with torchvision's attribute names.
* ``CifarResNet``: the 6n+2 network of Section 4.2 (16/32/64 channels), with
  ``residual=False`` giving the plain twin with the same layers and no shortcuts.

Shortcut options (Section 3.3): **A** uses identity shortcuts and, when the shape changes,
subsamples with stride and zero-pads the new channels (no parameters); **B** uses identity
where shapes match and a 1x1 conv + batch norm projection where they change. torchvision's
ImageNet ResNets use B; the paper's CIFAR networks use A, so ``cifar_resnet`` does too.

Reference: K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image Recognition",
CVPR 2016, Sections 3.3 and 4.2, Tables 1 and 6.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnncourse.models._common import check_input
from cnncourse.models._registry import register_model

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "CifarResNet",
    "ResNet",
    "ZeroPadShortcut",
    "cifar_resnet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
]


class ZeroPadShortcut(nn.Module):
    """Option A shortcut: subsample by ``stride``, zero-pad the extra channels.

    Input ``(N, C_in, H, W)``; output ``(N, C_out, ceil(H / S), ceil(W / S))`` with the
    input in the middle channels and zeros around it. No parameters.

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out >= C_in``.
        stride: subsampling step ``S``.

    Reference: He et al., CVPR 2016, Section 3.3 (option A) and Section 4.2.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"option A needs out_channels >= in_channels, got {out_channels} < {in_channels}")
        self.stride = stride
        self.pad_front = (out_channels - in_channels) // 2
        self.pad_back = out_channels - in_channels - self.pad_front

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]  # (N, C_in, ceil(H / S), ceil(W / S))
        return F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))  # (N, C_out, ., .)


def _check_shortcut(shortcut: str) -> None:
    if shortcut not in ("A", "B"):
        raise ValueError(f"shortcut must be 'A' (zero-padding) or 'B' (projection), got {shortcut!r}")


def _make_shortcut(in_channels: int, out_channels: int, stride: int, shortcut: str) -> Optional[nn.Module]:
    """The ``downsample`` module for a block, or ``None`` for the identity."""
    if stride == 1 and in_channels == out_channels:
        return None
    if shortcut == "A":
        return ZeroPadShortcut(in_channels, out_channels, stride)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs with batch norm, plus a shortcut: ``relu(F(x) + shortcut(x))``.

    Input ``(N, C_in, H, W)``; output ``(N, planes, H_out, W_out)`` with
    ``H_out = floor((H - 1) / stride) + 1`` (3x3 conv, padding 1). When ``stride != 1`` or
    ``C_in != planes`` the shortcut must change shape: option ``"B"`` (default) projects with
    a 1x1 conv (weight ``(planes, C_in, 1, 1)``, stride ``stride``) and batch norm, option
    ``"A"`` subsamples and zero-pads. ``downsample`` is ``None`` for the identity.

    Args:
        in_channels: ``C_in``.
        planes: output channels.
        stride: stride of the first conv (and of the shortcut).
        shortcut: ``"A"`` or ``"B"``, used only when the shape changes.
        residual: ``False`` drops the shortcut, giving the "plain" block of Section 4.

    Reference: He et al., CVPR 2016, Figure 2 and Section 3.3.
    """

    expansion: int = 1

    def __init__(
        self, in_channels: int, planes: int, stride: int = 1, shortcut: str = "B", residual: bool = True
    ) -> None:
        super().__init__()
        _check_shortcut(shortcut)
        self.residual = residual
        self.conv1 = nn.Conv2d(in_channels, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _make_shortcut(in_channels, planes, stride, shortcut) if residual else None
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))  # (N, planes, H_out, W_out)
        out = self.bn2(self.conv2(out))  # (N, planes, H_out, W_out)
        if self.residual:
            identity = x if self.downsample is None else self.downsample(x)  # (N, planes, H_out, W_out)
            out = out + identity  # (N, planes, H_out, W_out)
        return self.relu(out)  # (N, planes, H_out, W_out)


class Bottleneck(nn.Module):
    """1x1 reduce to ``planes``, 3x3 (stride ``stride``), 1x1 expand to ``4 * planes``.

    Input ``(N, C_in, H, W)``; output ``(N, 4 * planes, H_out, W_out)`` with
    ``H_out = floor((H - 1) / stride) + 1``. The shortcut is the identity when the shape is
    unchanged, otherwise option ``"B"`` (1x1 projection) or ``"A"`` (zero-padding).

    Args:
        in_channels: ``C_in``.
        planes: bottleneck width; the block outputs ``4 * planes`` channels.
        stride: stride of the 3x3 conv (and of the shortcut).
        shortcut: ``"A"`` or ``"B"``, used only when the shape changes.
        residual: ``False`` drops the shortcut.

    Note:
        The stride sits on the 3x3 conv ("ResNet v1.5", as in torchvision), not on the
        first 1x1 as in the paper; this costs a little speed and gains accuracy.

    Reference: He et al., CVPR 2016, Figure 5 (right) and Table 1.
    """

    expansion: int = 4

    def __init__(
        self, in_channels: int, planes: int, stride: int = 1, shortcut: str = "B", residual: bool = True
    ) -> None:
        super().__init__()
        _check_shortcut(shortcut)
        out_channels = planes * self.expansion
        self.residual = residual
        self.conv1 = nn.Conv2d(in_channels, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _make_shortcut(in_channels, out_channels, stride, shortcut) if residual else None
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))  # (N, planes, H, W)
        out = self.relu(self.bn2(self.conv2(out)))  # (N, planes, H_out, W_out)
        out = self.bn3(self.conv3(out))  # (N, 4 * planes, H_out, W_out)
        if self.residual:
            identity = x if self.downsample is None else self.downsample(x)  # (N, 4 * planes, H_out, W_out)
            out = out + identity  # (N, 4 * planes, H_out, W_out)
        return self.relu(out)  # (N, 4 * planes, H_out, W_out)


Block = Union[type[BasicBlock], type[Bottleneck]]


def _init_resnet(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ResNet(nn.Module):
    """ImageNet ResNet: 7x7 stem, max-pool, four stages (64/128/256/512 planes), pool, FC.

    Input ``(N, C_in, H, W)``; output logits ``(N, num_classes)``. At 224x224 the stages
    run at 56, 28, 14 and 7 pixels; stages 2-4 halve the size in their first block.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: number of blocks in each of the four stages.
        num_classes: number of output logits.
        in_channels: ``C_in``.

    Reference: He et al., CVPR 2016, Table 1; torchvision ``models/resnet.py``.
    """

    def __init__(self, block: Block, layers: list[int], num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"layers must list 4 stage depths, got {layers}")
        self.in_channels = in_channels
        self.input_size = (in_channels, 224, 224)
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self._channels = 64
        self.layer1 = self._make_layer(block, 64, layers[0], stride=1)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        _init_resnet(self)

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [block(self._channels, planes, stride)]
        self._channels = planes * block.expansion
        layers += [block(self._channels, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, (self.in_channels, None, None))
        x = self.relu(self.bn1(self.conv1(x)))  # (N, 64, 112, 112) at 224x224
        x = self.maxpool(x)  # (N, 64, 56, 56)
        x = self.layer1(x)  # (N, 64 * e, 56, 56), e = block.expansion
        x = self.layer2(x)  # (N, 128 * e, 28, 28)
        x = self.layer3(x)  # (N, 256 * e, 14, 14)
        x = self.layer4(x)  # (N, 512 * e, 7, 7)
        x = self.avgpool(x)  # (N, 512 * e, 1, 1)
        x = torch.flatten(x, 1)  # (N, 512 * e)
        return self.fc(x)  # (N, num_classes)


class CifarResNet(nn.Module):
    """The 6n+2-layer CIFAR network of He et al. Section 4.2, residual or plain.

    3x3 conv to 16 channels, then three stages of ``n`` ``BasicBlock``s with 16, 32 and 64
    channels (the first block of stages 2 and 3 has stride 2), global average pool and FC:
    ``1 + 2n + 2n + 2n + 1 = 6n + 2`` weighted layers. Works on 28x28 (maps 28, 14, 7) and
    32x32 (maps 32, 16, 8).

    Input ``(N, C_in, H, W)``; output logits ``(N, num_classes)``.

    Args:
        n: blocks per stage (3 -> ResNet-20, 9 -> ResNet-56).
        residual: ``False`` builds the plain twin: the same layers without shortcuts.
        in_channels: ``C_in``.
        num_classes: number of output logits.
        shortcut: ``"A"`` (the paper's choice here: parameter-free, so residual and plain
            nets have identical parameter counts) or ``"B"`` (1x1 projections).

    Reference: He et al., CVPR 2016, Section 4.2 and Table 6.
    """

    def __init__(
        self, n: int, residual: bool = True, in_channels: int = 1, num_classes: int = 10, shortcut: str = "A"
    ) -> None:
        super().__init__()
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.in_channels = in_channels
        self.input_size = (in_channels, 28, 28)
        self.conv1 = nn.Conv2d(in_channels, 16, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        stages = []
        channels = 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = [BasicBlock(channels, planes, stride, shortcut=shortcut, residual=residual)]
            blocks += [BasicBlock(planes, planes, 1, shortcut=shortcut, residual=residual) for _ in range(1, n)]
            stages.append(nn.Sequential(*blocks))
            channels = planes
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)
        _init_resnet(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, (self.in_channels, None, None))
        x = self.relu(self.bn1(self.conv1(x)))  # (N, 16, 28, 28) at 28x28
        x = self.layer1(x)  # (N, 16, 28, 28)
        x = self.layer2(x)  # (N, 32, 14, 14)
        x = self.layer3(x)  # (N, 64, 7, 7)
        x = self.avgpool(x)  # (N, 64, 1, 1)
        x = torch.flatten(x, 1)  # (N, 64)
        return self.fc(x)  # (N, num_classes)


@register_model
def resnet18(*, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-18: ``BasicBlock`` x [2, 2, 2, 2] (11,689,512 parameters).

    Reference: He et al., CVPR 2016, Table 1.
    """
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, **kwargs)


@register_model
def resnet34(*, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-34: ``BasicBlock`` x [3, 4, 6, 3] (21,797,672 parameters).

    Reference: He et al., CVPR 2016, Table 1.
    """
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, in_channels, **kwargs)


@register_model
def resnet50(*, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-50: ``Bottleneck`` x [3, 4, 6, 3] (25,557,032 parameters).

    Note:
        Stride on the 3x3 conv of the bottleneck (v1.5, torchvision), not the first 1x1.

    Reference: He et al., CVPR 2016, Table 1.
    """
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, **kwargs)


@register_model
def resnet101(*, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-101: ``Bottleneck`` x [3, 4, 23, 3] (44,549,160 parameters).

    Note:
        Stride on the 3x3 conv of the bottleneck (v1.5, torchvision), not the first 1x1.

    Reference: He et al., CVPR 2016, Table 1.
    """
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes, in_channels, **kwargs)


@register_model
def resnet152(*, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-152: ``Bottleneck`` x [3, 8, 36, 3] (60,192,808 parameters).

    Note:
        Stride on the 3x3 conv of the bottleneck (v1.5, torchvision), not the first 1x1.

    Reference: He et al., CVPR 2016, Table 1.
    """
    return ResNet(Bottleneck, [3, 8, 36, 3], num_classes, in_channels, **kwargs)


@register_model
def cifar_resnet(
    depth: int = 20, *, num_classes: int = 10, in_channels: int = 1, residual: bool = True, shortcut: str = "A"
) -> CifarResNet:
    """The 6n+2 CIFAR ResNet (or plain net) of depth ``depth``.

    With 3 input channels and 10 classes, depth 20 has 269,722 parameters and depth 56 has
    853,018 (Table 6: 0.27M and 0.85M).

    Args:
        depth: total weighted layers, ``6n + 2`` (20, 32, 44, 56, 110, ...).
        num_classes: number of output logits.
        in_channels: input channels.
        residual: ``False`` gives the plain net of Figure 6 (left).
        shortcut: ``"A"`` (zero-padding, the paper's CIFAR choice) or ``"B"``.

    Raises:
        ValueError: if ``depth`` is not ``6n + 2`` with ``n >= 1``.

    Reference: He et al., CVPR 2016, Section 4.2 and Table 6.
    """
    if depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(f"depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...), got {depth}")
    return CifarResNet((depth - 2) // 6, residual, in_channels, num_classes, shortcut)
