"""VGG (Simonyan and Zisserman, 2015): stacks of 3x3 convolutions, from one config table.

A config is a list whose entries are either an int (a 3x3 convolution, padding 1, with that
many output channels, followed by ReLU, and batch norm before the ReLU in the ``_bn``
variants) or ``"M"`` (2x2 max-pool, stride 2). ``make_vgg_features`` turns a config into the
``features`` stack; ``VGG`` adds the adaptive average pool and the three-layer classifier.

Full-size builders (``vgg11`` ... ``vgg19_bn``) use torchvision's attribute names, so a
torchvision ``state_dict()`` loads with ``strict=True``. ``vgg_small`` is a narrow twin for
28x28 images.

Reference: K. Simonyan, A. Zisserman, "Very Deep Convolutional Networks for Large-Scale
Image Recognition", ICLR 2015, Table 1.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
import torch.nn as nn

from cnncourse.models._common import check_input
from cnncourse.models._registry import register_model

__all__ = [
    "VGG",
    "cfgs",
    "make_vgg_features",
    "small_cfgs",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
    "vgg_small",
]

CfgEntry = Union[int, str]

# Columns A, B, D and E of the paper's Table 1 (11, 13, 16 and 19 weight layers).
# A-LRN and C (which has 1x1 convolutions) are left out, as in torchvision.
cfgs: dict[str, list[CfgEntry]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}

# Narrow twins for 28x28: three pools (28 -> 14 -> 7 -> 3), a quarter of the widths.
small_cfgs: dict[str, list[CfgEntry]] = {
    "A": [32, "M", 64, "M", 128, 128, "M"],
    "B": [32, 32, "M", 64, 64, "M", 128, 128, "M"],
    "D": [32, 32, "M", 64, 64, "M", 128, 128, 128, "M"],
}


def make_vgg_features(cfg: Sequence[CfgEntry], in_channels: int = 3, batch_norm: bool = False) -> nn.Sequential:
    """Turn a VGG config into the convolutional ``features`` stack.

    Each int ``C_out`` adds ``Conv2d(C_in, C_out, 3, padding=1)`` (weight
    ``(C_out, C_in, 3, 3)``; ``H_out = H``), optionally ``BatchNorm2d(C_out)``, then ReLU.
    Each ``"M"`` adds ``MaxPool2d(2, 2)`` (``H_out = floor(H / 2)``). Input
    ``(N, in_channels, H, W)``; output ``(N, C_last, H / 2^m, W / 2^m)`` for ``m`` pools.

    Args:
        cfg: list of positive ints and ``"M"``, with at least one int.
        in_channels: channels of the input image.
        batch_norm: insert batch norm between each conv and its ReLU.

    Returns:
        An ``nn.Sequential`` whose indices match torchvision's ``features``.

    Raises:
        ValueError: for an entry that is neither a positive int nor ``"M"``, or a config
            without convolutions.

    Reference: Simonyan and Zisserman, ICLR 2015, Section 2.1 and Table 1.
    """
    if not any(isinstance(v, int) for v in cfg):
        raise ValueError(f"cfg must contain at least one convolution (an int), got {list(cfg)}")
    layers: list[nn.Module] = []
    channels = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        elif isinstance(v, int) and not isinstance(v, bool) and v > 0:
            layers.append(nn.Conv2d(channels, v, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            channels = v
        else:
            raise ValueError(f"cfg entries must be positive ints or 'M', got {v!r}")
    return nn.Sequential(*layers)


def _last_conv_channels(features: nn.Module) -> int:
    convs = [m for m in features.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("features must contain at least one nn.Conv2d")
    return convs[-1].out_channels


class VGG(nn.Module):
    """A VGG network: ``features``, adaptive average pool, and a three-layer classifier.

    Input ``(N, C_in, H, W)``; output logits ``(N, num_classes)``. The classifier is
    ``Linear(C_last * P * P, hidden) -> ReLU -> Dropout -> Linear(hidden, hidden) -> ReLU ->
    Dropout -> Linear(hidden, num_classes)`` with ``P = pool_size``.

    Args:
        features: the convolutional stack, usually from ``make_vgg_features``.
        num_classes: number of output logits.
        dropout: dropout probability in the classifier.
        pool_size: side ``P`` of the adaptive average pool (7 for ImageNet: 224 / 2^5).
        hidden: width of the hidden fully connected layers (4096 in the paper).
        init_weights: torchvision's initialisation (He-normal convs, N(0, 0.01) linears).
        input_size: the nominal input ``(C, H, W)``; default ``(in_channels, 224, 224)``.

    Note:
        The adaptive average pool comes from torchvision, not the paper (which evaluates
        densely by turning the FC layers into convolutions). At 224x224 it is the identity.

    Reference: Simonyan and Zisserman, ICLR 2015, Section 2.1; torchvision ``models/vgg.py``.
    """

    def __init__(
        self,
        features: nn.Module,
        num_classes: int = 1000,
        dropout: float = 0.5,
        pool_size: int = 7,
        hidden: int = 4096,
        init_weights: bool = True,
        input_size: Optional[tuple[int, int, int]] = None,
    ) -> None:
        super().__init__()
        first_conv = next((m for m in features.modules() if isinstance(m, nn.Conv2d)), None)
        self.in_channels = first_conv.in_channels if first_conv is not None else 0
        self.input_size = input_size or (self.in_channels, 224, 224)
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((pool_size, pool_size))
        self.classifier = nn.Sequential(
            nn.Linear(_last_conv_channels(features) * pool_size * pool_size, hidden),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, num_classes),
        )
        if init_weights:
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
                elif isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0, 0.01)
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, (self.in_channels, None, None))
        x = self.features(x)  # (N, 512, 7, 7) at 224x224
        x = self.avgpool(x)  # (N, 512, P, P)
        x = torch.flatten(x, 1)  # (N, 512 * P * P)
        return self.classifier(x)  # (N, num_classes)


def _vgg(cfg: str, batch_norm: bool, num_classes: int, in_channels: int, **kwargs: Any) -> VGG:
    return VGG(make_vgg_features(cfgs[cfg], in_channels, batch_norm), num_classes=num_classes, **kwargs)


@register_model
def vgg11(*, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> VGG:
    """VGG-11, config A of Table 1 (132,863,336 parameters).

    Reference: Simonyan and Zisserman, ICLR 2015, Table 1 column A.
    """
    return _vgg("A", False, num_classes, in_channels, **kwargs)


@register_model
def vgg11_bn(*, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> VGG:
    """VGG-11 with batch norm after each conv (132,868,840 parameters).

    Note:
        Batch norm postdates the paper (Ioffe and Szegedy, 2015); torchvision adds it.

    Reference: Simonyan and Zisserman, ICLR 2015, Table 1 column A.
    """
    return _vgg("A", True, num_classes, in_channels, **kwargs)


@register_model
def vgg13(*, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> VGG:
    """VGG-13, config B of Table 1 (133,047,848 parameters).

    Reference: Simonyan and Zisserman, ICLR 2015, Table 1 column B.
    """
    return _vgg("B", False, num_classes, in_channels, **kwargs)


@register_model
def vgg13_bn(*, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> VGG:
    """VGG-13 with batch norm after each conv (133,053,736 parameters).

    Reference: Simonyan and Zisserman, ICLR 2015, Table 1 column B.
    """
    return _vgg("B", True, num_classes, in_channels, **kwargs)


@register_model
def vgg16(*, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> VGG:
    """VGG-16, config D of Table 1 (138,357,544 parameters).

    Reference: Simonyan and Zisserman, ICLR 2015, Table 1 column D.
    """
    return _vgg("D", False, num_classes, in_channels, **kwargs)


@register_model
def vgg16_bn(*, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> VGG:
    """VGG-16 with batch norm after each conv (138,365,992 parameters).

    Reference: Simonyan and Zisserman, ICLR 2015, Table 1 column D.
    """
    return _vgg("D", True, num_classes, in_channels, **kwargs)


@register_model
def vgg19(*, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> VGG:
    """VGG-19, config E of Table 1 (143,667,240 parameters).

    Reference: Simonyan and Zisserman, ICLR 2015, Table 1 column E.
    """
    return _vgg("E", False, num_classes, in_channels, **kwargs)


@register_model
def vgg19_bn(*, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> VGG:
    """VGG-19 with batch norm after each conv (143,678,248 parameters).

    Reference: Simonyan and Zisserman, ICLR 2015, Table 1 column E.
    """
    return _vgg("E", True, num_classes, in_channels, **kwargs)


@register_model
def vgg_small(
    cfg: Union[str, Sequence[CfgEntry]] = "A",
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    batch_norm: bool = False,
    dropout: float = 0.5,
    hidden: int = 256,
    **kwargs: Any,
) -> VGG:
    """A narrow VGG for 28x28 images.

    With the default config ``"A"`` (``[32, "M", 64, "M", 128, 128, "M"]``) the maps are
    28 -> 14 -> 7 -> 3, and the classifier sees ``128 * 3 * 3 = 1152`` features.

    Args:
        cfg: a key of ``small_cfgs`` (``"A"``, ``"B"``, ``"D"``) or an explicit config list.
        num_classes: number of output logits.
        in_channels: input channels.
        batch_norm: batch norm after every conv.
        dropout: classifier dropout probability.
        hidden: width of the two hidden fully connected layers.
        **kwargs: passed on to ``VGG`` (``init_weights``).

    Returns:
        A ``VGG`` with a 3x3 adaptive average pool.

    Raises:
        ValueError: for an unknown config name or a malformed config list.

    Reference: Simonyan and Zisserman, ICLR 2015, Table 1 (scaled down).
    """
    if isinstance(cfg, str):
        if cfg not in small_cfgs:
            raise ValueError(f"cfg must be one of {sorted(small_cfgs)} or a list, got {cfg!r}")
        cfg = small_cfgs[cfg]
    features = make_vgg_features(cfg, in_channels=in_channels, batch_norm=batch_norm)
    return VGG(
        features,
        num_classes=num_classes,
        dropout=dropout,
        pool_size=3,
        hidden=hidden,
        input_size=(in_channels, 28, 28),
        **kwargs,
    )
