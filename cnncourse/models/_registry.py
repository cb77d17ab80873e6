"""A tiny name -> builder registry, so the CLI and the book can build models by name."""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Record a lowercase builder under its function name and return it unchanged."""
    if fn.__name__ in _BUILDERS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _BUILDERS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names of every registered builder, sorted.

    Reference: modelled on ``torchvision.models.list_models``.
    """
    return sorted(_BUILDERS)


def get_model(name: str, **kwargs) -> nn.Module:
    """Build the registered model ``name`` with builder keyword arguments.

    Raises:
        KeyError: when ``name`` is not registered; the message lists the known names.

    Reference: modelled on ``torchvision.models.get_model``.
    """
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; expected one of: {', '.join(list_models())}") from None
    return builder(**kwargs)
