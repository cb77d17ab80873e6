"""Transposed convolution written from scratch, mirroring ``torch.nn.functional.conv_transpose2d``.

A convolution maps a window of the input to one output pixel. A transposed convolution runs the
same wiring backwards: every input pixel *scatters* a copy of the kernel, scaled by its value, onto
the output, and overlapping copies add up. It is exactly the gradient of ``conv2d`` with respect
to its input, for the same weight, stride, padding and dilation, which is why decoders use it to
grow a small feature map back to image size.

Shapes: input ``(N, C_in, H, W)``, weight ``(C_in, C_out, K_h, K_w)`` (the transpose of
``conv2d``'s layout), output ``(N, C_out, H_out, W_out)`` with

    H_out = (H - 1) * stride - 2 * padding + dilation * (K_h - 1) + output_padding + 1

and the same for ``W_out``. ``output_padding`` (smaller than stride or dilation) picks one of
the several output sizes that a strided ``conv2d`` maps to the same ``H``.

:func:`cnncourse.functional.conv_transpose2d` re-exports the two functions defined here.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from cnncourse._oputils import IntOrPair, _check_non_negative, _check_positive, _check_rank4, _im2col, _pair

__all__ = ["conv_transpose2d", "conv_transpose2d_naive", "conv_transpose_output_size"]


def conv_transpose_output_size(
    size: int, kernel: int, stride: int = 1, padding: int = 0, output_padding: int = 0, dilation: int = 1
) -> int:
    """Length of a transposed-convolution output along one axis.

    ``out = (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1``

    Raises:
        ValueError: on a non-positive size, kernel, stride or dilation, a negative padding,
            ``output_padding`` not smaller than stride or dilation, or a non-positive result.

    Reference: https://pytorch.org/docs/stable/generated/torch.nn.ConvTranspose2d.html (shape section).
    """
    for name, value in (("size", size), ("kernel", kernel), ("stride", stride), ("dilation", dilation)):
        if value < 1:
            raise ValueError(f"{name} must be positive, got {value}")
    if padding < 0 or output_padding < 0:
        raise ValueError(f"padding and output_padding must be non-negative, got {padding} and {output_padding}")
    if output_padding >= max(stride, dilation):
        raise ValueError(
            f"output_padding must be smaller than stride or dilation, got output_padding={output_padding}"
            f" with stride={stride}, dilation={dilation}"
        )
    out = (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1
    if out < 1:
        raise ValueError(
            f"padding {padding} leaves no output: (size - 1) * stride - 2 * padding + dilation * "
            f"(kernel - 1) + output_padding + 1 = {out}; expected at least 1"
        )
    return out


def _transpose_args(input, weight, bias, stride, padding, output_padding, groups, dilation, op):
    """Validate the arguments; return normalised pairs and the output size ``(H_out, W_out)``."""
    _check_rank4(input, op, "input", "(N, C_in, H, W)")
    _check_rank4(weight, op, "weight", "(C_in, C_out, K_h, K_w)")
    if groups != 1:
        raise ValueError(f"{op} supports groups=1 only, got groups={groups}")
    stride, padding = _pair(stride, "stride"), _pair(padding, "padding")
    output_padding, dilation = _pair(output_padding, "output_padding"), _pair(dilation, "dilation")
    _check_positive(stride, "stride")
    _check_positive(dilation, "dilation")
    _check_non_negative(padding, "padding")
    _check_non_negative(output_padding, "output_padding")
    c_in, c_out = weight.shape[:2]
    if input.shape[1] != c_in:
        raise ValueError(
            f"{op} expected input with C_in={c_in} channels to match weight of shape (C_in, C_out, K_h, K_w)="
            f"{tuple(weight.shape)}, got input with {input.shape[1]} channels (shape {tuple(input.shape)})"
        )
    if bias is not None and (not isinstance(bias, Tensor) or tuple(bias.shape) != (c_out,)):
        got = tuple(bias.shape) if isinstance(bias, Tensor) else type(bias).__name__
        raise ValueError(f"{op} expected bias of shape (C_out,)=({c_out},), got {got}")
    out = tuple(
        conv_transpose_output_size(
            input.shape[2 + a], weight.shape[2 + a], stride[a], padding[a], output_padding[a], dilation[a]
        )
        for a in range(2)
    )
    return stride, padding, output_padding, dilation, out


def _canvas_size(in_size, kernel, stride, dilation):
    """Rows (or columns) that the scattered kernels cover before padding is cropped off."""
    return tuple((in_size[a] - 1) * stride[a] + dilation[a] * (kernel[a] - 1) + 1 for a in range(2))


def conv_transpose2d_naive(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    output_padding: IntOrPair = 0,
    groups: int = 1,
    dilation: IntOrPair = 1,
) -> Tensor:
    """Transposed convolution with explicit loops: each input pixel adds a scaled kernel onto the output.

    Pixel ``(i, j)`` of image ``n`` adds ``sum_c input[n, c, i, j] * weight[c]`` (a ``(C_out, K_h, K_w)``
    patch) at rows ``i * s_h + d_h * k`` and columns ``j * s_w + d_w * l`` of a canvas. ``padding``
    then crops that many rows and columns from each border, and ``output_padding`` adds zero rows
    and columns at the bottom and right. Autograd differentiates it.

    Args:
        input: ``(N, C_in, H, W)``.
        weight: ``(C_in, C_out, K_h, K_w)``.
        bias: ``(C_out,)`` or ``None``.
        stride, padding, output_padding, dilation: int or pair, as in ``F.conv_transpose2d``.
        groups: must be 1.

    Returns:
        ``(N, C_out, H_out, W_out)`` with ``H_out = (H - 1) s_h - 2 p_h + d_h (K_h - 1) + op_h + 1``.

    Reference: V. Dumoulin, F. Visin, "A guide to convolution arithmetic for deep learning",
    arXiv:1603.07285 (2016), section 4.
    """
    (s_h, s_w), (p_h, p_w), (o_h, o_w), (d_h, d_w), (h_out, w_out) = _transpose_args(
        input, weight, bias, stride, padding, output_padding, groups, dilation, "conv_transpose2d_naive"
    )
    n_images, _, h, w = input.shape
    k_h, k_w = weight.shape[2:]
    c_h, c_w = _canvas_size((h, w), (k_h, k_w), (s_h, s_w), (d_h, d_w))
    canvas = input.new_zeros(n_images, weight.shape[1], c_h + o_h, c_w + o_w)
    for n in range(n_images):
        for i in range(h):
            for j in range(w):
                patch = torch.einsum("c,cokl->okl", input[n, :, i, j], weight)  # (C_out, K_h, K_w)
                rows = slice(i * s_h, i * s_h + d_h * (k_h - 1) + 1, d_h)
                cols = slice(j * s_w, j * s_w + d_w * (k_w - 1) + 1, d_w)
                canvas[n, :, rows, cols] = canvas[n, :, rows, cols] + patch
    out = canvas[:, :, p_h : p_h + h_out, p_w : p_w + w_out]
    return out if bias is None else out + bias.view(1, -1, 1, 1)


class _ConvTransposeSaved(NamedTuple):
    """What ``_ConvTranspose2dFunction.forward`` keeps for the backward pass, besides the saved tensors."""

    canvas: tuple[int, int]  # the uncropped output, before padding is cut away
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    has_bias: bool


class _ConvTranspose2dFunction(torch.autograd.Function):
    """Transposed convolution as one matrix product then col2im, with a hand-written backward.

    Forward: ``cols = W^T X`` gives every input pixel's scaled kernel as a column; ``fold`` adds
    the overlapping columns onto a canvas, which is cropped by ``padding``. Backward runs the
    same wiring forward, as a convolution: the output gradient's windows (im2col) times ``W``
    give the input gradient, and the input times those windows give the weight gradient.
    """

    @staticmethod
    def forward(ctx, input, weight, bias, stride, padding, output_padding, dilation, out_size):
        """Forward pass.

        Inputs:
            input: ``(N, C_in, H, W)``; weight: ``(C_in, C_out, K_h, K_w)``; bias: ``(C_out,)`` or None;
            stride, padding, output_padding, dilation: pairs; out_size: ``(H_out, W_out)``.

        Returns:
            ``(N, C_out, H_out, W_out)``.

        Saves:
            ``input`` (needed for dW) and ``weight`` (needed for dX), plus a ``_ConvTransposeSaved``.
        """
        n, c_in, h, w = input.shape
        kernel = tuple(weight.shape[2:])
        canvas = _canvas_size((h, w), kernel, stride, dilation)
        w_mat = weight.reshape(c_in, -1)  # (C_in, C_out*K_h*K_w)
        cols = w_mat.t() @ input.reshape(n, c_in, h * w)  # (N, C_out*K_h*K_w, H*W): one kernel copy per pixel
        full = F.fold(cols, canvas, kernel, dilation=dilation, stride=stride)  # (N, C_out, canvas_h, canvas_w)
        full = F.pad(full, (0, output_padding[1], 0, output_padding[0]))  # zero rows/cols that nothing reached
        out = full[:, :, padding[0] : padding[0] + out_size[0], padding[1] : padding[1] + out_size[1]]
        if bias is not None:
            out = out + bias.view(1, -1, 1, 1)
        ctx.save_for_backward(input, weight)
        ctx.saved = _ConvTransposeSaved(canvas, stride, padding, dilation, bias is not None)
        return out.contiguous()

    @staticmethod
    def backward(ctx, grad_out):
        """Backward pass.

        Inputs:
            grad_out: upstream derivative dL/dY, ``(N, C_out, H_out, W_out)``.

        Returns:
            ``(dX, dW, db, None, None, None, None, None)``: dX ``(N, C_in, H, W)``, dW ``(C_in, C_out, K_h, K_w)``,
            db ``(C_out,)`` (each ``None`` when not needed), then one ``None`` per non-tensor argument.
        """
        input, weight = ctx.saved_tensors
        saved: _ConvTransposeSaved = ctx.saved
        canvas, stride, padding, dilation = saved.canvas, saved.stride, saved.padding, saved.dilation
        n, c_in, h, w = input.shape
        kernel = tuple(weight.shape[2:])
        # undo the crop: the gradient of the canvas is grad_out placed back at its offset, zero elsewhere
        g = grad_out.new_zeros(n, grad_out.shape[1], canvas[0] + grad_out.shape[2], canvas[1] + grad_out.shape[3])
        g[:, :, padding[0] : padding[0] + grad_out.shape[2], padding[1] : padding[1] + grad_out.shape[3]] = grad_out
        g = g[:, :, : canvas[0], : canvas[1]]
        g_cols = _im2col(g, kernel, stride, (0, 0), dilation)  # (N, C_out*K_h*K_w, H*W): what each pixel touched
        d_input = d_weight = d_bias = None
        if ctx.needs_input_grad[0]:
            d_input = (weight.reshape(c_in, -1) @ g_cols).view(n, c_in, h, w)  # a conv2d of grad_out with W
        if ctx.needs_input_grad[1]:
            x_rows = input.reshape(n, c_in, h * w)
            d_weight = torch.einsum("ncl,nkl->ck", x_rows, g_cols).reshape(weight.shape)  # sums images, pixels
        if saved.has_bias and ctx.needs_input_grad[2]:
            d_bias = grad_out.sum(dim=(0, 2, 3))
        return d_input, d_weight, d_bias, None, None, None, None, None


def conv_transpose2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    output_padding: IntOrPair = 0,
    groups: int = 1,
    dilation: IntOrPair = 1,
) -> Tensor:
    """Vectorised transposed convolution: one matrix product, then col2im (``fold``); hand-written backward.

    ``conv_transpose2d(y, W, stride=s, padding=p)`` equals the gradient of
    ``conv2d(x, W, stride=s, padding=p)`` with respect to ``x``, evaluated at the output gradient ``y``.
    Its own input gradient is therefore a ``conv2d`` of the output gradient with the same ``W``.

    Args:
        input: ``(N, C_in, H, W)``.
        weight: ``(C_in, C_out, K_h, K_w)``.
        bias: ``(C_out,)`` or ``None``.
        stride: int or pair, at least 1: the spacing of the scattered kernels on the output.
        padding: int or pair, at least 0: rows and columns cropped from each border.
        output_padding: int or pair, smaller than stride or dilation: extra rows and columns at
            the bottom and right, to choose among the sizes a strided ``conv2d`` folds together.
        groups: must be 1 (kept for ``F.conv_transpose2d``'s signature).
        dilation: int or pair, at least 1: spacing between kernel taps.

    Returns:
        ``(N, C_out, H_out, W_out)`` with ``H_out = (H - 1) s_h - 2 p_h + d_h (K_h - 1) + op_h + 1``.

    Raises:
        ValueError: wrong rank, channel or bias mismatch, ``groups != 1``, bad stride, padding,
            dilation or output padding, or an empty output.

    Reference: V. Dumoulin, F. Visin, arXiv:1603.07285 (2016);
    https://pytorch.org/docs/stable/generated/torch.nn.functional.conv_transpose2d.html
    """
    stride, padding, output_padding, dilation, out = _transpose_args(
        input, weight, bias, stride, padding, output_padding, groups, dilation, "conv_transpose2d"
    )
    return _ConvTranspose2dFunction.apply(input, weight, bias, stride, padding, output_padding, dilation, out)
