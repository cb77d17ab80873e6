"""Numerical gradients for checking hand-written backward passes.

Students compare the gradient their backward pass returns with a centred-difference estimate
and look at the relative error: around ``1e-7`` or less in float64 means the two agree.
"""

from __future__ import annotations

import itertools
from typing import Callable

import torch
from torch import Tensor

__all__ = ["numerical_gradient", "rel_error"]


def numerical_gradient(
    f: Callable[[Tensor], Tensor], x: Tensor, h: float = 1e-5, *, df: Tensor | None = None
) -> Tensor:
    """Centred-difference estimate of the gradient of ``f`` at ``x``.

    For every element ``x_i`` it evaluates ``(f(x + h e_i) - f(x - h e_i)) / (2 h)``. With ``df``
    given, ``f`` may return a tensor and the estimate is of ``sum(f(x) * df)``, i.e. the
    gradient that a backward pass receiving upstream gradient ``df`` should return.
    ``x`` is changed in place during the sweep and restored afterwards. Use float64.

    Args:
        f: function of ``x``; returns a scalar tensor (or any tensor when ``df`` is given).
        x: floating-point tensor of any shape.
        h: step size, positive.
        df: upstream gradient with the shape of ``f(x)``, or ``None`` for a scalar ``f``.

    Returns:
        Tensor shaped like ``x``.

    Raises:
        ValueError: on a non-floating ``x``, a non-positive ``h``, a non-scalar ``f(x)`` without
            ``df``, or a ``df`` whose shape differs from ``f(x)``.

    Reference: CS231n assignment 2, ``eval_numerical_gradient_array``
    (https://cs231n.github.io/optimization-1/#numerical).
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"numerical_gradient expected a floating-point tensor x, got {got}")
    if not h > 0:
        raise ValueError(f"numerical_gradient expected a positive step h, got {h}")

    def scalar(value: Tensor) -> float:
        if df is None:
            if value.numel() != 1:
                raise ValueError(
                    f"numerical_gradient expected f(x) to be a scalar when df is None, got shape {tuple(value.shape)}"
                )
            return float(value)
        if value.shape != df.shape:
            raise ValueError(
                f"numerical_gradient expected df of shape {tuple(value.shape)} (the shape of f(x)), "
                f"got {tuple(df.shape)}"
            )
        return float((value * df).sum())

    grad = torch.zeros_like(x)
    data = x.data  # writes through to x, contiguous or not
    with torch.no_grad():
        for idx in itertools.product(*(range(size) for size in x.shape)):
            old = data[idx].item()
            data[idx] = old + h
            plus = scalar(f(x))
            data[idx] = old - h
            minus = scalar(f(x))
            data[idx] = old
            grad[idx] = (plus - minus) / (2 * h)
    return grad


def rel_error(a: Tensor, b: Tensor) -> float:
    """Largest elementwise relative error ``|a - b| / max(1e-8, |a| + |b|)``.

    Raises:
        ValueError: when the shapes differ.

    Reference: CS231n assignment 1, ``rel_error`` (https://cs231n.github.io/assignments2024/assignment1/).
    """
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error expected tensors of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.numel() == 0:
        return 0.0
    return float(((a - b).abs() / (a.abs() + b.abs()).clamp(min=1e-8)).max())
