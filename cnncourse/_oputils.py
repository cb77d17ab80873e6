"""Argument checks, output sizes and the strided window view shared by the from-scratch ops.

Kept apart from :mod:`cnncourse.functional` so that it, :mod:`cnncourse.functional_pool` and
:mod:`cnncourse.functional_transpose` import them without a cycle.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

IntOrPair = int | tuple[int, int]


def _pair(value: IntOrPair, name: str) -> tuple[int, int]:
    """Turn an int or a pair of ints into a pair, rejecting anything else."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        return (value, value)
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return (value[0], value[1])
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")


def _check_positive(pair: tuple[int, int], name: str) -> None:
    if min(pair) < 1:
        raise ValueError(f"{name} must be positive, got {pair}")


def _check_non_negative(pair: tuple[int, int], name: str) -> None:
    if min(pair) < 0:
        raise ValueError(f"{name} must be non-negative, got {pair}")


def _check_rank4(x: Tensor, op: str, what: str, letters: str) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{op} expected {what} to be a torch.Tensor {letters}, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            f"{op} expected {what} of shape {letters} (4 dimensions), "
            f"got {x.dim()} dimensions with shape {tuple(x.shape)}"
        )


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Length of a convolution or pooling output along one spatial axis.

    ``out = floor((size + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1``

    Args:
        size: input length ``H`` (or ``W``).
        kernel: kernel length ``K_h`` (or ``K_w``).
        stride: step between neighbouring windows, at least 1.
        padding: zeros added on each side, at least 0.
        dilation: spacing between kernel taps, at least 1.

    Returns:
        ``H_out`` (or ``W_out``), at least 1.

    Raises:
        ValueError: on a non-positive size, kernel, stride or dilation, a negative padding, or a
            kernel that spans more than the padded input.

    Reference: https://pytorch.org/docs/stable/generated/torch.nn.Conv2d.html (shape section).
    """
    checks = (("size", size, 1), ("kernel", kernel, 1), ("stride", stride, 1), ("dilation", dilation, 1))
    for name, value, low in checks:
        if value < low:
            raise ValueError(f"{name} must be positive, got {value}")
    if padding < 0:
        raise ValueError(f"padding must be non-negative, got {padding}")
    span = dilation * (kernel - 1) + 1
    if span > size + 2 * padding:
        raise ValueError(
            f"kernel spans {span} pixels (dilation * (kernel - 1) + 1) but the padded input is only "
            f"{size + 2 * padding} (size + 2 * padding); expected a kernel no larger than the padded input"
        )
    return (size + 2 * padding - span) // stride + 1


def _output_size(input, kernel, stride, padding, dilation, op) -> tuple[int, int]:
    """``(H_out, W_out)`` from :func:`conv_output_size`, after a check whose error names ``op``.

    The one place the output-size formula is applied for the ops' argument checks (``_conv_args``
    and ``_pool_args``); a kernel wider than the padded input is an error rather than an empty output.
    """
    h, w = input.shape[2:]
    span = (dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1)
    padded = (h + 2 * padding[0], w + 2 * padding[1])
    if span[0] > padded[0] or span[1] > padded[1]:
        raise ValueError(
            f"{op} expected a kernel no larger than the padded input: kernel spans {span} "
            f"(dilation * (K - 1) + 1 per axis), padded input is {padded} (H + 2 * padding, W + 2 * padding)"
        )
    return (
        conv_output_size(h, kernel[0], stride[0], padding[0], dilation[0]),
        conv_output_size(w, kernel[1], stride[1], padding[1], dilation[1]),
    )


def _windows(x: Tensor, kernel, stride, padding, dilation, fill: float = 0.0) -> Tensor:
    """A strided view of every kernel window of ``x``: ``(N, C, H_out, W_out, K_h, K_w)``, no copy."""
    (k_h, k_w), (s_h, s_w), (p_h, p_w), (d_h, d_w) = kernel, stride, padding, dilation
    if p_h or p_w:
        x = F.pad(x, (p_w, p_w, p_h, p_h), value=fill)
    # a dilated window is a dense window of span d*(k-1)+1, sampled every d pixels
    windows = x.unfold(2, d_h * (k_h - 1) + 1, s_h).unfold(3, d_w * (k_w - 1) + 1, s_w)
    return windows[..., ::d_h, ::d_w]


def _im2col(x: Tensor, kernel, stride, padding, dilation, fill: float = 0.0, out: Tensor | None = None) -> Tensor:
    """Every kernel window as a column, ``(N, C*K_h*K_w, L)``: the layout of ``F.unfold``.

    Built from a ``Tensor.unfold`` view plus one copy; on CPU that is several times faster than
    ``F.unfold`` itself. With ``out`` (a contiguous tensor of at least that many elements) the copy
    lands in ``out``'s memory, so a caller can reuse one buffer instead of allocating a new matrix.
    """
    windows = _windows(x, kernel, stride, padding, dilation, fill)
    n, c, h_out, w_out, k_h, k_w = windows.shape
    columns = windows.permute(0, 1, 4, 5, 2, 3)  # (N, C, K_h, K_w, H_out, W_out)
    if out is None:
        return columns.reshape(n, c * k_h * k_w, h_out * w_out)
    cols = out.view(-1)[: columns.numel()].view(n, c * k_h * k_w, h_out * w_out)
    cols.view(columns.shape).copy_(columns)
    return cols
