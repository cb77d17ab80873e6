"""AlexNet (Krizhevsky, Sutskever and Hinton, 2012) at ImageNet size and as a 28x28 twin.

Two classes live here:

* ``AlexNet``: the ImageNet network with torchvision's layer layout and attribute names
  (``features``, ``avgpool``, ``classifier``), so a torchvision ``state_dict()`` loads into it
  with ``strict=True``.
* ``AlexNetSmall``: the same five-conv, three-pool, three-FC shape scaled down for 28x28
  grey images, with switches for the paper's experiments (ReLU against tanh, dropout, local
  response normalisation, and the two-GPU split as grouped convolutions).

Reference: A. Krizhevsky, I. Sutskever, G. E. Hinton, "ImageNet Classification with Deep
Convolutional Neural Networks", NeurIPS 2012; A. Krizhevsky, "One weird trick for
parallelizing convolutional neural networks", arXiv:1404.5997, 2014.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from cnncourse.models._common import check_input
from cnncourse.models._registry import register_model

__all__ = ["AlexNet", "AlexNetSmall", "PaperLocalResponseNorm", "alexnet", "alexnet_small"]


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "tanh":
        return nn.Tanh()
    raise ValueError(f"activation must be 'relu' or 'tanh', got {name!r}")


class PaperLocalResponseNorm(nn.LocalResponseNorm):
    """Local response normalisation as Krizhevsky et al. (2012, Section 3.3) define it.

    ``b[c] = a[c] / (k + alpha * sum_{c'} a[c']^2) ** beta``, the sum running over the ``size``
    channels centred on ``c`` (clipped at the first and last channel), **not** divided by ``size``.
    ``torch.nn.LocalResponseNorm`` divides ``alpha`` by ``size``; this subclass hands it
    ``alpha * size``, so ``alpha`` here is the paper's alpha. Input and output ``(N, C, H, W)``.

    Args:
        size: channels in the window (the paper's ``n = 5``).
        alpha: the paper's ``alpha`` (1e-4).
        beta: exponent (0.75).
        k: additive constant (2).

    Reference: Krizhevsky et al., NeurIPS 2012, Section 3.3;
    https://pytorch.org/docs/stable/generated/torch.nn.LocalResponseNorm.html (``alpha / n``).
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0) -> None:
        super().__init__(size=size, alpha=alpha * size, beta=beta, k=k)
        self.paper_alpha = alpha

    def extra_repr(self) -> str:
        torch_alpha = f"torch alpha={self.alpha:g}"
        return f"size={self.size}, alpha={self.paper_alpha} (paper; {torch_alpha}), beta={self.beta}, k={self.k}"


class AlexNet(nn.Module):
    """AlexNet for ImageNet, laid out exactly as ``torchvision.models.AlexNet``.

    Input ``(N, C_in, H, W)`` with ``H, W >= 63``; output logits ``(N, num_classes)``.
    At 224x224 the feature maps are 55 -> 27 -> 27 -> 13 -> 13 -> 13 -> 13 -> 6
    (conv ``H_out = floor((H + 2P - K) / S) + 1``, pools 3x3 stride 2, overlapping).
    ``avgpool`` is an adaptive pool to 6x6, so smaller inputs also work.

    Args:
        num_classes: number of output logits.
        in_channels: input channels ``C_in``.
        dropout: dropout probability before the first two fully connected layers.
        lrn: apply the paper's local response normalisation (``PaperLocalResponseNorm``) after
            the ReLUs of conv1 and conv2. ``features[1]`` and ``features[4]`` then become
            ``nn.Sequential(ReLU, LRN)``; LRN has no parameters, so the ``state_dict`` keys stay
            torchvision's.

    Note:
        The channel counts are 64-192-384-256-256, from the single-GPU "one weird trick"
        variant that torchvision implements, not the 2012 paper's 96-256-384-384-256 (split
        48/128/192/192/128 across two GPUs). By default there is no local response normalisation, the
        first conv has padding 2 (the paper's 224 input with an 11x11 stride-4 conv does not
        give its stated 55x55 output; 227 or padding 2 does), and the model has 61,100,840
        parameters against the paper's "60 million".

    Reference: Krizhevsky et al., NeurIPS 2012, Section 3.5 and Figure 2; torchvision
    ``models/alexnet.py``.
    """

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5, lrn: bool = False) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.input_size = (in_channels, 224, 224)

        def relu_norm() -> nn.Module:
            # one slot of the Sequential either way, so later indices (and state_dict keys) keep torchvision's
            return nn.Sequential(nn.ReLU(inplace=True), PaperLocalResponseNorm()) if lrn else nn.ReLU(inplace=True)

        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2),
            relu_norm(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            relu_norm(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, (self.in_channels, None, None))
        x = self.features(x)  # (N, 256, 6, 6) at 224x224
        x = self.avgpool(x)  # (N, 256, 6, 6)
        x = torch.flatten(x, 1)  # (N, 9216)
        return self.classifier(x)  # (N, num_classes)


class AlexNetSmall(nn.Module):
    """AlexNet's layer pattern shrunk for 28x28 inputs (MNIST, Fashion-MNIST).

    Five convolutions (5x5, 5x5, 3x3, 3x3, 3x3 with 32-64-96-96-64 channels), three
    overlapping 3x3 stride-2 max-pools, and three fully connected layers with dropout, as in
    the paper. On 28x28 the maps are 28 -> 13 -> 13 -> 6 -> 6 -> 2, so the classifier sees
    ``64 * 2 * 2 = 256`` features; ``avgpool`` is adaptive (2x2) so 32x32 inputs work too.

    Input ``(N, C_in, H, W)`` with ``H, W >= 23``; output logits ``(N, num_classes)``.

    Args:
        in_channels: input channels ``C_in``.
        num_classes: number of output logits.
        activation: ``"relu"`` or ``"tanh"``, used after every conv and hidden FC layer
            (the paper's Figure 1 compares the two).
        dropout: dropout probability in the classifier; 0 turns dropout off.
        groups: 1 for a single "GPU"; 2 reproduces the paper's two-GPU split, where conv2,
            conv4 and conv5 only see the half of the channels computed on their own GPU
            (grouped convolutions, ``groups=2``), while conv3 and the FC layers see all.
        lrn: add the paper's local response normalisation after conv1 and conv2
            (``PaperLocalResponseNorm``: ``size=5, alpha=1e-4, beta=0.75, k=2``, sum not divided by size).
        hidden: width of the two hidden fully connected layers.

    Reference: Krizhevsky et al., NeurIPS 2012, Sections 3.1 (ReLU), 3.2 (two GPUs),
    3.3 (LRN), 3.4 (overlapping pooling), 4.2 (dropout).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        activation: str = "relu",
        dropout: float = 0.5,
        groups: int = 1,
        lrn: bool = False,
        hidden: int = 512,
    ) -> None:
        super().__init__()
        if groups not in (1, 2):
            raise ValueError(f"groups must be 1 or 2, got {groups}")
        self.in_channels = in_channels
        self.input_size = (in_channels, 28, 28)
        _activation(activation)  # validate the name before building anything

        def norm() -> list[nn.Module]:
            return [PaperLocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)] if lrn else []

        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=5, padding=2),
            _activation(activation),
            *norm(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(32, 64, kernel_size=5, padding=2, groups=groups),
            _activation(activation),
            *norm(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 96, kernel_size=3, padding=1),
            _activation(activation),
            nn.Conv2d(96, 96, kernel_size=3, padding=1, groups=groups),
            _activation(activation),
            nn.Conv2d(96, 64, kernel_size=3, padding=1, groups=groups),
            _activation(activation),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(64 * 2 * 2, hidden),
            _activation(activation),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden),
            _activation(activation),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, (self.in_channels, None, None))
        x = self.features(x)  # (N, 64, 2, 2) at 28x28
        x = self.avgpool(x)  # (N, 64, 2, 2)
        x = torch.flatten(x, 1)  # (N, 256)
        return self.classifier(x)  # (N, num_classes)


@register_model
def alexnet(
    *, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5, lrn: bool = False, **kwargs: Any
) -> AlexNet:
    """Build the ImageNet AlexNet (61,100,840 parameters at 1000 classes, 3 channels).

    Args:
        num_classes: number of output logits.
        in_channels: input channels.
        dropout: classifier dropout probability.
        lrn: add the paper's local response normalisation after conv1 and conv2.
        **kwargs: passed on to ``AlexNet``.

    Returns:
        An ``AlexNet`` whose ``state_dict`` keys equal ``torchvision.models.alexnet()``'s.

    Note:
        Channel counts follow the "one weird trick" variant (64-192-384-256-256), not the
        paper's 96-256-384-384-256; see ``AlexNet``.

    Reference: Krizhevsky et al., NeurIPS 2012; Krizhevsky, arXiv:1404.5997.
    """
    return AlexNet(num_classes=num_classes, in_channels=in_channels, dropout=dropout, lrn=lrn, **kwargs)


@register_model
def alexnet_small(
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    activation: str = "relu",
    dropout: float = 0.5,
    groups: int = 1,
    lrn: bool = False,
    **kwargs: Any,
) -> AlexNetSmall:
    """Build the 28x28 AlexNet twin; see ``AlexNetSmall`` for the arguments.

    Returns:
        An ``AlexNetSmall`` mapping ``(N, in_channels, 28, 28)`` to ``(N, num_classes)``.

    Reference: Krizhevsky et al., NeurIPS 2012.
    """
    return AlexNetSmall(
        in_channels=in_channels,
        num_classes=num_classes,
        activation=activation,
        dropout=dropout,
        groups=groups,
        lrn=lrn,
        **kwargs,
    )
