"""``nn.Module`` wrappers around the from-scratch ops in :mod:`cnncourse.functional`.

They are drop-ins for ``torch.nn.Conv2d``, ``torch.nn.MaxPool2d`` and ``torch.nn.AvgPool2d``:
``Conv2d`` has the same parameter names (``weight``, ``bias``), shapes and initialisation, so a
state dict saved from one loads into the other.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor

from cnncourse import functional as cf
from cnncourse.functional import IntOrPair, _pair

__all__ = ["AvgPool2d", "Conv2d", "ConvTranspose2d", "MaxPool2d"]


class _ConvNd(nn.Module):
    """What :class:`Conv2d` and :class:`ConvTranspose2d` share, as in torch's ``_ConvNd``.

    Checks and stores the hyper-parameters, creates ``weight`` and ``bias`` and initialises them
    as torch does. Only the weight's layout differs: ``(C_out, C_in, K_h, K_w)`` for a convolution,
    ``(C_in, C_out, K_h, K_w)`` when ``transposed``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair,
        stride: IntOrPair,
        padding: IntOrPair,
        dilation: IntOrPair,
        bias: bool,
        transposed: bool,
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(
                f"{type(self).__name__} expected positive in_channels and out_channels, "
                f"got {in_channels} and {out_channels}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size")
        if min(self.kernel_size) < 1:
            raise ValueError(f"kernel_size must be positive, got {self.kernel_size}")
        self.stride, self.padding = _pair(stride, "stride"), _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        channels = (in_channels, out_channels) if transposed else (out_channels, in_channels)
        self.weight = nn.Parameter(torch.empty(*channels, *self.kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-uniform weights and uniform biases, exactly as torch's convolutions do.

        Like torch, the bias bound uses the fan-in computed from the weight's layout,
        ``weight.shape[1] * K_h * K_w``: ``C_in`` for a convolution, ``C_out`` for a transposed one.
        """
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight.shape[1] * self.kernel_size[0] * self.kernel_size[1])
            nn.init.uniform_(self.bias, -bound, bound)


class Conv2d(_ConvNd):
    """2-D convolution (cross-correlation) built on :func:`cnncourse.functional.conv2d`.

    Shapes: input ``(N, C_in, H, W)``, weight ``(C_out, C_in, K_h, K_w)``, bias ``(C_out,)``,
    output ``(N, C_out, H_out, W_out)`` with
    ``H_out = floor((H + 2 * padding - dilation * (K_h - 1) - 1) / stride) + 1``.

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        kernel_size: int or ``(K_h, K_w)``.
        stride, padding, dilation: int or pair, as in :func:`cnncourse.functional.conv2d`.
        bias: learn a per-filter bias.

    Raises:
        ValueError: on non-positive channel counts or kernel size.

    Reference: https://pytorch.org/docs/stable/generated/torch.nn.Conv2d.html (same parameters
    and the same Kaiming-uniform initialisation).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair,
        stride: IntOrPair = 1,
        padding: IntOrPair = 0,
        dilation: IntOrPair = 1,
        bias: bool = True,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, bias, transposed=False)

    def forward(self, input: Tensor) -> Tensor:
        return cf.conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        return s + ("" if self.bias is not None else ", bias=False")


class ConvTranspose2d(_ConvNd):
    """2-D transposed convolution built on :func:`cnncourse.functional.conv_transpose2d`.

    Shapes: input ``(N, C_in, H, W)``, weight ``(C_in, C_out, K_h, K_w)``, bias ``(C_out,)``, output
    ``(N, C_out, H_out, W_out)`` with
    ``H_out = (H - 1) * stride - 2 * padding + dilation * (K_h - 1) + output_padding + 1``.

    Reference: https://pytorch.org/docs/stable/generated/torch.nn.ConvTranspose2d.html (same parameter
    names, shapes and initialisation, so state dicts load both ways).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair,
        stride: IntOrPair = 1,
        padding: IntOrPair = 0,
        output_padding: IntOrPair = 0,
        bias: bool = True,
        dilation: IntOrPair = 1,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, bias, transposed=True)
        self.output_padding = _pair(output_padding, "output_padding")

    def forward(self, input: Tensor) -> Tensor:
        return cf.conv_transpose2d(
            input, self.weight, self.bias, self.stride, self.padding, self.output_padding, 1, self.dilation
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, output_padding={self.output_padding}"
        )


class _Pool2d(nn.Module):
    def __init__(self, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0) -> None:
        super().__init__()
        self.kernel_size, self.padding = kernel_size, padding
        self.stride = stride if stride is not None else kernel_size

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    """Max pooling built on :func:`cnncourse.functional.max_pool2d`; no parameters.

    Shapes: input ``(N, C, H, W)``, output ``(N, C, H_out, W_out)`` with
    ``H_out = floor((H + 2 * padding - K_h) / stride) + 1``; ``stride`` defaults to ``kernel_size``.

    Reference: https://pytorch.org/docs/stable/generated/torch.nn.MaxPool2d.html
    """

    def forward(self, input: Tensor) -> Tensor:
        return cf.max_pool2d(input, self.kernel_size, self.stride, self.padding)


class AvgPool2d(_Pool2d):
    """Average pooling built on :func:`cnncourse.functional.avg_pool2d` (padding counts as zeros).

    Shapes: input ``(N, C, H, W)``, output ``(N, C, H_out, W_out)`` with
    ``H_out = floor((H + 2 * padding - K_h) / stride) + 1``; ``stride`` defaults to ``kernel_size``.

    Reference: https://pytorch.org/docs/stable/generated/torch.nn.AvgPool2d.html
    """

    def forward(self, input: Tensor) -> Tensor:
        return cf.avg_pool2d(input, self.kernel_size, self.stride, self.padding)
