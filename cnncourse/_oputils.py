"""Argument checks and the strided window view shared by the from-scratch ops.

Kept apart from :mod:`cnncourse.functional` so that both it and :mod:`cnncourse.functional_transpose`
import them without a cycle.
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
