"""Convolution and pooling written from scratch, mirroring ``torch.nn.functional``.

Every op comes twice: a ``*_naive`` version with explicit Python loops, written to be read,
and a vectorised version (im2col: the windows unfolded into columns, then one matrix product or one reduction)
whose backward pass is written by hand in a ``torch.autograd.Function``. Autograd never derives
the vectorised backwards; it only chains them.

Shapes use fixed letters: input ``(N, C_in, H, W)``, weight ``(C_out, C_in, K_h, K_w)``,
output ``(N, C_out, H_out, W_out)`` with

    H_out = floor((H + 2 * padding - dilation * (K_h - 1) - 1) / stride) + 1

and the same for ``W_out``. Pooling keeps the channels: output ``(N, C, H_out, W_out)``.
Pooling lives in :mod:`cnncourse.functional_pool` and the transposed convolution
(``conv_transpose2d``) in :mod:`cnncourse.functional_transpose`; both are re-exported here, so
``cnncourse.functional`` offers every op.
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
    conv_output_size,
)
from cnncourse.functional_pool import avg_pool2d, avg_pool2d_naive, max_pool2d, max_pool2d_naive
from cnncourse.functional_transpose import conv_transpose2d, conv_transpose2d_naive, conv_transpose_output_size

__all__ = [
    "avg_pool2d",
    "avg_pool2d_naive",
    "conv2d",
    "conv2d_naive",
    "conv_output_size",
    "conv_transpose2d",
    "conv_transpose2d_naive",
    "conv_transpose_output_size",
    "max_pool2d",
    "max_pool2d_naive",
]


def _conv_args(input, weight, bias, stride, padding, dilation, op):
    """Validate conv2d arguments and return the normalised pairs and output size."""
    _check_rank4(input, op, "input", "(N, C_in, H, W)")
    _check_rank4(weight, op, "weight", "(C_out, C_in, K_h, K_w)")
    stride, padding, dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    _check_positive(stride, "stride")
    _check_non_negative(padding, "padding")
    _check_positive(dilation, "dilation")
    c_out, c_in, k_h, k_w = weight.shape
    if input.shape[1] != c_in:
        raise ValueError(
            f"{op} expected input with C_in={c_in} channels to match weight of shape (C_out, C_in, K_h, K_w)="
            f"{tuple(weight.shape)}, got input with {input.shape[1]} channels (shape {tuple(input.shape)})"
        )
    if bias is not None and (not isinstance(bias, Tensor) or tuple(bias.shape) != (c_out,)):
        got = tuple(bias.shape) if isinstance(bias, Tensor) else type(bias).__name__
        raise ValueError(f"{op} expected bias of shape (C_out,)=({c_out},), got {got}")
    out = _output_size(input, (k_h, k_w), stride, padding, dilation, op)
    return stride, padding, dilation, out


def conv2d_naive(
    input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: IntOrPair = 1, padding: IntOrPair = 0
) -> Tensor:
    """2-D cross-correlation with explicit loops over images, filters and output pixels.

    Each output value is the sum of an elementwise product between one filter and the window
    of the (zero-padded) input under it, plus that filter's bias. Autograd differentiates it.

    Args:
        input: ``(N, C_in, H, W)``.
        weight: ``(C_out, C_in, K_h, K_w)``.
        bias: ``(C_out,)`` or ``None``.
        stride: int or ``(s_h, s_w)``, at least 1.
        padding: int or ``(p_h, p_w)`` zeros on each side, at least 0.

    Returns:
        ``(N, C_out, H_out, W_out)`` with ``H_out = floor((H + 2 p_h - K_h) / s_h) + 1``.

    Reference: https://pytorch.org/docs/stable/generated/torch.nn.functional.conv2d.html
    """
    (s_h, s_w), (p_h, p_w), _, (h_out, w_out) = _conv_args(input, weight, bias, stride, padding, 1, "conv2d_naive")
    n_images, c_out, k_h, k_w = input.shape[0], weight.shape[0], weight.shape[2], weight.shape[3]
    x = F.pad(input, (p_w, p_w, p_h, p_h))
    rows = []
    for n in range(n_images):
        for k in range(c_out):
            for i in range(h_out):
                for j in range(w_out):
                    window = x[n, :, i * s_h : i * s_h + k_h, j * s_w : j * s_w + k_w]  # (C_in, K_h, K_w)
                    value = (window * weight[k]).sum()
                    rows.append(value + bias[k] if bias is not None else value)
    return torch.stack(rows).reshape(n_images, c_out, h_out, w_out)


class _ConvSaved(NamedTuple):
    """What ``_Conv2dFunction.forward`` keeps for the backward pass, besides the saved tensors."""

    input_shape: tuple[int, ...]  # (N, C_in, H, W)
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    has_bias: bool


COLUMN_BYTES = 30 * 2**20
"""Largest column matrix, in bytes, that :func:`conv2d` builds at once: as many images as fit.

Just below glibc's largest ``mmap`` threshold (32 MiB), so after the first call the allocator
hands the same memory back instead of fresh pages: a column matrix for the whole batch (75 MB for
128 images of 64x16x16 under a 3x3 kernel) would page-fault on every 4 KiB page of every call.
As large as that allows because every chunk costs a few more ops, and with several threads each
op ends by waiting for all of them.
"""


def _batch_chunks(n_images: int, bytes_per_image: int, budget: int | None = None) -> list[slice]:
    """Consecutive slices of the batch, each as many images as fit in ``budget`` bytes (at least one).

    ``budget`` defaults to :data:`COLUMN_BYTES`.
    """
    step = max(1, (COLUMN_BYTES if budget is None else budget) // max(1, bytes_per_image))
    return [slice(start, min(start + step, n_images)) for start in range(0, n_images, step)]


def _pad(x: Tensor, padding: tuple[int, int]) -> Tensor:
    """Zeros around the last two axes, ``(p_h, p_w)`` on each side (negative crops); ``x`` itself for none."""
    return F.pad(x, (padding[1], padding[1], padding[0], padding[0])) if any(padding) else x


class _Conv2dFunction(torch.autograd.Function):
    """im2col convolution with a hand-written backward, a chunk of images at a time.

    The windows of ``B`` images are unfolded into columns, ``cols`` of shape ``(B, C_in*K_h*K_w, L)``
    with ``L = H_out*W_out`` (``F.unfold``'s layout), so each chunk's forward pass is one batched
    matrix product ``W_mat @ cols`` that lands directly in its slice of the ``(N, C_out, L)`` output.
    All chunks reuse one buffer of at most :data:`COLUMN_BYTES`. When the whole batch fits in it,
    the columns are kept for dW; otherwise the backward pass unfolds each chunk again.
    """

    @staticmethod
    def forward(ctx, input, weight, bias, stride, padding, dilation, out_size):
        """Forward pass.

        Inputs:
            input: ``(N, C_in, H, W)``; weight: ``(C_out, C_in, K_h, K_w)``; bias: ``(C_out,)`` or None;
            stride, padding, dilation: pairs; out_size: ``(H_out, W_out)``.

        Returns:
            ``(N, C_out, H_out, W_out)``.

        Saves:
            ``input``, ``weight`` and, when one chunk held the whole batch, ``cols``; plus a
            ``_ConvSaved`` with the shapes and hyper-parameters.
        """
        n, w_mat = input.shape[0], weight.reshape(weight.shape[0], -1)  # (C_out, C_in*K_h*K_w)
        out = input.new_empty(n, weight.shape[0], out_size[0] * out_size[1])  # (N, C_out, L)
        chunks = _batch_chunks(n, w_mat.shape[1] * out.shape[2] * input.element_size())
        buffer = input.new_empty(chunks[0].stop, w_mat.shape[1], out.shape[2])
        padded = _pad(input, padding)  # once for the batch: padding each chunk would cost more ops
        for chunk in chunks:
            cols = _im2col(padded[chunk], weight.shape[2:], stride, (0, 0), dilation, out=buffer)  # (B, ., L)
            # bmm with the weight broadcast over the chunk; torch.matmul would first copy cols into rows
            torch.bmm(w_mat.expand(cols.shape[0], -1, -1), cols, out=out[chunk])
        if bias is not None:
            out += bias.view(1, -1, 1)
        ctx.save_for_backward(input, weight, cols if len(chunks) == 1 else None)
        ctx.saved = _ConvSaved(tuple(input.shape), stride, padding, dilation, bias is not None)
        return out.view(n, weight.shape[0], *out_size)

    @staticmethod
    def backward(ctx, grad_out):
        """Backward pass, chunk by chunk like the forward pass.

        Inputs:
            grad_out: upstream derivative dL/dY, ``(N, C_out, H_out, W_out)``.

        Returns:
            ``(dX, dW, db, None, None, None, None)``: dX ``(N, C_in, H, W)``, dW ``(C_out, C_in, K_h, K_w)``,
            db ``(C_out,)`` (each ``None`` when not needed), then one ``None`` per non-tensor argument.

        * ``dW = sum over n of dY_n cols_n^T``: every output pixel adds its window times its gradient.
        * ``db = sum of dY over N, H_out, W_out``.
        * dX: each input pixel collects ``w * dy`` from every window that covered it. With stride 1 that
          is a *full* correlation of ``dY`` with the kernel flipped in both axes and ``C_in``/``C_out``
          swapped, which reuses the forward path; otherwise (and when ``C_out > C_in``, where the
          columns of ``dY`` would be the bigger copy) ``W^T dY`` gives per-window gradients that ``fold``
          (col2im) sums back onto the pixels.
        """
        input, weight, kept_cols = ctx.saved_tensors
        saved: _ConvSaved = ctx.saved
        c_out, c_in, k_h, k_w = weight.shape
        n, h, w = input.shape[0], input.shape[2], input.shape[3]
        g = grad_out.reshape(n, c_out, -1)  # (N, C_out, L)
        need_dx, need_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        d_input = input.new_empty(input.shape) if need_dx else None
        d_w_mat = weight.new_zeros(c_out, c_in * k_h * k_w) if need_dw else None
        by_correlation = saved.stride == (1, 1) and c_out <= c_in
        if by_correlation:
            flipped = weight.flip(2, 3).transpose(0, 1).reshape(c_in, -1)  # (C_in, C_out*K_h*K_w)
            (d_h, d_w), (p_h, p_w) = saved.dilation, saved.padding
            full = (d_h * (k_h - 1) - p_h, d_w * (k_w - 1) - p_w)  # negative: crop instead of pad
            g_full = _pad(grad_out, full) if need_dx else None
        # one buffer for a chunk of cols, of per-window gradients, or of the columns of dY
        per_image = max(c_in * g.shape[2], c_out * h * w if by_correlation else 0) * k_h * k_w
        chunks = _batch_chunks(n, per_image * input.element_size())
        buffer = input.new_empty(chunks[0].stop, per_image)
        padded = _pad(input, saved.padding) if need_dw and kept_cols is None else None
        for chunk in chunks:
            g_chunk, b = g[chunk], g[chunk].shape[0]
            if need_dw:
                if kept_cols is not None:
                    cols = kept_cols[chunk]
                else:
                    cols = _im2col(padded[chunk], (k_h, k_w), saved.stride, (0, 0), saved.dilation, out=buffer)
                # bmm then sum: addbmm_ would run one small product per image
                d_w_mat += torch.bmm(g_chunk, cols.transpose(1, 2)).sum(0)
            if need_dx and by_correlation:
                d_cols = _im2col(g_full[chunk], (k_h, k_w), (1, 1), (0, 0), saved.dilation, out=buffer)
                torch.bmm(flipped.expand(b, -1, -1), d_cols, out=d_input[chunk].view(b, c_in, h * w))
            elif need_dx:
                d_cols = buffer[:b].view(b, c_in * k_h * k_w, -1)  # (B, C_in*K_h*K_w, L)
                torch.bmm(weight.reshape(c_out, -1).t().expand(b, -1, -1), g_chunk, out=d_cols)
                d_input[chunk] = F.fold(
                    d_cols, (h, w), (k_h, k_w), dilation=saved.dilation, padding=saved.padding, stride=saved.stride
                )
        d_weight = d_w_mat.view(weight.shape) if need_dw else None
        d_bias = g.sum(dim=(0, 2)) if saved.has_bias and ctx.needs_input_grad[2] else None
        return d_input, d_weight, d_bias, None, None, None, None


def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
) -> Tensor:
    """Vectorised 2-D cross-correlation: unfold the windows into columns (im2col), then one matrix product.

    The backward pass is hand-written: dX is a full correlation of ``dY`` with the flipped kernel
    (or ``fold(W^T dY)``), ``dW = sum_n dY_n X_cols_n^T`` and ``db = sum of dY over N, H_out, W_out``.

    Args:
        input: ``(N, C_in, H, W)``.
        weight: ``(C_out, C_in, K_h, K_w)``.
        bias: ``(C_out,)`` or ``None``.
        stride: int or ``(s_h, s_w)``, at least 1.
        padding: int or ``(p_h, p_w)`` zeros on each side, at least 0.
        dilation: int or ``(d_h, d_w)`` spacing between kernel taps, at least 1.

    Returns:
        ``(N, C_out, H_out, W_out)`` with ``H_out = floor((H + 2 p_h - d_h (K_h - 1) - 1) / s_h) + 1``.

    Raises:
        ValueError: wrong rank, channel or bias mismatch, kernel larger than the padded input,
            non-positive stride or dilation, negative padding.

    Reference: K. Chellapilla, S. Puri, P. Simard, "High performance convolutional neural networks
    for document processing", 2006 (im2col); https://pytorch.org/docs/stable/generated/torch.nn.functional.conv2d.html
    """
    stride, padding, dilation, out = _conv_args(input, weight, bias, stride, padding, dilation, "conv2d")
    return _Conv2dFunction.apply(input, weight, bias, stride, padding, dilation, out)
