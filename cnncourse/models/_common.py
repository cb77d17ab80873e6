"""Helpers every model family shares."""

from __future__ import annotations

from typing import Optional

import torch


def check_input(x: torch.Tensor, expected: tuple[int, Optional[int], Optional[int]]) -> None:
    """Raise a ``ValueError`` unless ``x`` is a batch ``(N, C, H, W)`` matching ``expected = (C, H, W)``.

    ``None`` for ``H`` or ``W`` accepts any size (models ending in an adaptive pool).
    """
    ok = x.dim() == 4 and all(e is None or s == e for s, e in zip(x.shape[1:], expected))
    if not ok:
        dims = ", ".join(str(e) if e is not None else n for e, n in zip(expected, "CHW"))
        raise ValueError(f"expected input of shape (N, {dims}), got {tuple(x.shape)}")
