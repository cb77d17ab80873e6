"""Max and average pooling written from scratch, mirroring ``torch.nn.functional``.

As in :mod:`cnncourse.functional`, each op comes twice: a ``*_naive`` version with explicit loops,
and a vectorised one (every channel plane's windows unfolded into columns, then one reduction)
whose backward pass is hand-written in a ``torch.autograd.Function``.

Shapes: input ``(N, C, H, W)``, output ``(N, C, H_out, W_out)`` with

    H_out = floor((H + 2 * padding - K_h) / stride) + 1

and the same for ``W_out``. :mod:`cnncourse.functional` re-exports the four public functions.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from cnncourse._oputils import (
    IntOrPair,
    _check_non_negative,
    _check_positive,
    _check_rank4,
    _im2col,
    _output_size,
    _pair,
)

__all__ = ["avg_pool2d", "avg_pool2d_naive", "max_pool2d", "max_pool2d_naive"]


def _pool_args(input, kernel_size, stride, padding, op):
    """Validate pooling arguments and return normalised pairs and the output size."""
    _check_rank4(input, op, "input", "(N, C, H, W)")
    kernel = _pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else _pair(stride, "stride")
    padding = _pair(padding, "padding")
    _check_positive(kernel, "kernel_size")
    _check_positive(stride, "stride")
    _check_non_negative(padding, "padding")
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"{op} expected padding at most half the kernel size {kernel}, got padding {padding}")
    out = _output_size(input, kernel, stride, padding, (1, 1), op)
    return kernel, stride, padding, out


def _pool_naive(input, kernel_size, stride, padding, op, reduce, fill):
    (k_h, k_w), (s_h, s_w), (p_h, p_w), (h_out, w_out) = _pool_args(input, kernel_size, stride, padding, op)
    x = F.pad(input, (p_w, p_w, p_h, p_h), value=fill)
    values = []
    for n in range(input.shape[0]):
        for c in range(input.shape[1]):
            for i in range(h_out):
                for j in range(w_out):
                    values.append(reduce(x[n, c, i * s_h : i * s_h + k_h, j * s_w : j * s_w + k_w]))
    return torch.stack(values).reshape(input.shape[0], input.shape[1], h_out, w_out)


def max_pool2d_naive(
    input: Tensor, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0
) -> Tensor:
    """Max pooling with explicit loops: each output is the largest value in its window.

    Padding is implicit ``-inf``, so a padded position never wins.

    Args:
        input: ``(N, C, H, W)``.
        kernel_size: int or ``(K_h, K_w)``.
        stride: int or pair; defaults to ``kernel_size``.
        padding: int or pair, at most half the kernel size.

    Returns:
        ``(N, C, H_out, W_out)`` with ``H_out = floor((H + 2 p_h - K_h) / s_h) + 1``.

    Reference: https://pytorch.org/docs/stable/generated/torch.nn.functional.max_pool2d.html
    """
    return _pool_naive(input, kernel_size, stride, padding, "max_pool2d_naive", torch.max, float("-inf"))


def avg_pool2d_naive(
    input: Tensor, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0
) -> Tensor:
    """Average pooling with explicit loops; padded zeros count in the mean (``count_include_pad=True``).

    Args:
        input: ``(N, C, H, W)``.
        kernel_size: int or ``(K_h, K_w)``.
        stride: int or pair; defaults to ``kernel_size``.
        padding: int or pair, at most half the kernel size.

    Returns:
        ``(N, C, H_out, W_out)`` with ``H_out = floor((H + 2 p_h - K_h) / s_h) + 1``.

    Reference: https://pytorch.org/docs/stable/generated/torch.nn.functional.avg_pool2d.html
    """
    return _pool_naive(input, kernel_size, stride, padding, "avg_pool2d_naive", torch.mean, 0.0)


def _unfold_planes(x: Tensor, kernel, stride, padding, fill: float) -> Tensor:
    """Windows of every channel plane as columns: ``(N*C, K_h*K_w, L)``."""
    n, c, h, w = x.shape
    return _im2col(x.reshape(n * c, 1, h, w), kernel, stride, padding, (1, 1), fill)


def _fold_planes(cols: Tensor, shape, kernel, stride, padding) -> Tensor:
    """Inverse of ``_unfold_planes`` for gradients: sum columns back, then drop the padding."""
    n, c, h, w = shape
    padded = F.fold(cols, (h + 2 * padding[0], w + 2 * padding[1]), kernel, stride=stride)
    return padded[:, :, padding[0] : padding[0] + h, padding[1] : padding[1] + w].reshape(n, c, h, w)


class _PoolSaved(NamedTuple):
    """What a pooling forward keeps for its backward pass."""

    input_shape: tuple[int, ...]  # (N, C, H, W)
    cols_shape: tuple[int, ...]  # (N*C, K_h*K_w, L)
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]


class _MaxPool2dFunction(torch.autograd.Function):
    """Max pooling whose backward routes each output gradient to its window's argmax."""

    @staticmethod
    def forward(ctx, input, kernel, stride, padding, out_size):
        """Inputs: input ``(N, C, H, W)``; kernel, stride, padding: pairs; out_size ``(H_out, W_out)``.

        Returns ``(N, C, H_out, W_out)``; saves each window's ``argmax`` ``(N*C, L)`` and a ``_PoolSaved``.
        """
        cols = _unfold_planes(input, kernel, stride, padding, float("-inf"))  # (N*C, K_h*K_w, L)
        values, argmax = cols.max(dim=1)  # (N*C, L)
        ctx.save_for_backward(argmax)
        ctx.saved = _PoolSaved(tuple(input.shape), tuple(cols.shape), kernel, stride, padding)
        return values.view(input.shape[0], input.shape[1], *out_size)

    @staticmethod
    def backward(ctx, grad_out):
        """Inputs: grad_out dL/dY ``(N, C, H_out, W_out)``.

        Returns ``(dX, None, None, None, None)`` with dX ``(N, C, H, W)``: each output's gradient goes
        to the position of its window's maximum (the only input that changed the output); windows
        that overlap add up in ``fold``.
        """
        (argmax,) = ctx.saved_tensors
        saved: _PoolSaved = ctx.saved
        n_planes, _, n_windows = saved.cols_shape
        d_cols = grad_out.new_zeros(saved.cols_shape)
        d_cols.scatter_(1, argmax.unsqueeze(1), grad_out.reshape(n_planes, 1, n_windows))
        d_input = _fold_planes(d_cols, saved.input_shape, saved.kernel, saved.stride, saved.padding)
        return d_input, None, None, None, None


class _AvgPool2dFunction(torch.autograd.Function):
    """Average pooling whose backward spreads each output gradient evenly over its window."""

    @staticmethod
    def forward(ctx, input, kernel, stride, padding, out_size):
        """Inputs: input ``(N, C, H, W)``; kernel, stride, padding: pairs; out_size ``(H_out, W_out)``.

        Returns ``(N, C, H_out, W_out)``; saves only a ``_PoolSaved`` (the mean needs no input values).
        """
        cols = _unfold_planes(input, kernel, stride, padding, 0.0)  # (N*C, K_h*K_w, L)
        ctx.saved = _PoolSaved(tuple(input.shape), tuple(cols.shape), kernel, stride, padding)
        return cols.mean(dim=1).view(input.shape[0], input.shape[1], *out_size)

    @staticmethod
    def backward(ctx, grad_out):
        """Inputs: grad_out dL/dY ``(N, C, H_out, W_out)``.

        Returns ``(dX, None, None, None, None)`` with dX ``(N, C, H, W)``: each output's gradient is
        shared equally, ``1 / (K_h*K_w)``, by the pixels of its window (padding included); overlaps
        add up in ``fold``.
        """
        saved: _PoolSaved = ctx.saved
        n_planes, window, n_windows = saved.cols_shape
        share = grad_out.reshape(n_planes, 1, n_windows) / window
        d_cols = share.expand(saved.cols_shape).contiguous()
        d_input = _fold_planes(d_cols, saved.input_shape, saved.kernel, saved.stride, saved.padding)
        return d_input, None, None, None, None


def max_pool2d(
    input: Tensor, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0
) -> Tensor:
    """Vectorised max pooling with a hand-written backward (gradient goes to the argmax).

    When a window holds several equal maxima, the gradient goes to the first one in row-major
    order; ``torch`` may pick a different one.

    Args:
        input: ``(N, C, H, W)``.
        kernel_size: int or ``(K_h, K_w)``.
        stride: int or pair; defaults to ``kernel_size``.
        padding: int or pair of implicit ``-inf`` on each side, at most half the kernel size.

    Returns:
        ``(N, C, H_out, W_out)`` with ``H_out = floor((H + 2 p_h - K_h) / s_h) + 1``.

    Raises:
        ValueError: wrong rank, non-positive kernel or stride, negative or too large padding,
            kernel larger than the padded input.

    Reference: https://pytorch.org/docs/stable/generated/torch.nn.functional.max_pool2d.html
    """
    kernel, stride, padding, out = _pool_args(input, kernel_size, stride, padding, "max_pool2d")
    return _MaxPool2dFunction.apply(input, kernel, stride, padding, out)


def avg_pool2d(
    input: Tensor, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0
) -> Tensor:
    """Vectorised average pooling with a hand-written backward; padded zeros count in the mean.

    Matches ``F.avg_pool2d`` with its defaults ``ceil_mode=False, count_include_pad=True``.

    Args:
        input: ``(N, C, H, W)``.
        kernel_size: int or ``(K_h, K_w)``.
        stride: int or pair; defaults to ``kernel_size``.
        padding: int or pair of zeros on each side, at most half the kernel size.

    Returns:
        ``(N, C, H_out, W_out)`` with ``H_out = floor((H + 2 p_h - K_h) / s_h) + 1``.

    Raises:
        ValueError: as for :func:`max_pool2d`.

    Reference: https://pytorch.org/docs/stable/generated/torch.nn.functional.avg_pool2d.html
    """
    kernel, stride, padding, out = _pool_args(input, kernel_size, stride, padding, "avg_pool2d")
    return _AvgPool2dFunction.apply(input, kernel, stride, padding, out)
