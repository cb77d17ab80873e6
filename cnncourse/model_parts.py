"""A classifier's parts by name: its parameter layers, its blocks and its head.

Read-only helpers that :mod:`cnncourse.transfer` freezes, replaces and fine-tunes by; they only
name modules (the names of ``model.named_modules()``) and never change the model.

* ``layer_names``: the modules that own parameters, in registration order.
* ``blocks``: the trainable blocks, descending into ``Sequential``/``ModuleList`` containers.
* ``find_head`` / ``aux_heads``: the final classifier (``fc``, the last layer of ``classifier``,
  ``head``/``heads``, LeNet's ``output``) and Inception-style auxiliary classifiers, for the course's
  and torchvision's models.
"""

from __future__ import annotations

import torch.nn as nn

HEAD_ATTRS = ("fc", "classifier", "head", "heads", "output")
AUX_ATTRS = ("aux1", "aux2", "AuxLogits")


def layer_names(model: nn.Module) -> list[str]:
    """Names of the modules that own parameters, in registration order: the valid ``until`` values.

    Reference: ``torch.nn.Module.named_modules``.
    """
    return [n for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))]


def _is_classifier_layer(m: nn.Module) -> bool:
    # nn.Linear, a 1x1-conv classifier, or any layer exposing nn.Linear's in_features/out_features
    # (LeNet-5's RBF output units do).
    return isinstance(m, (nn.Linear, nn.Conv2d)) or (hasattr(m, "in_features") and hasattr(m, "out_features"))


def _last_layer(module: nn.Module, prefix: str) -> str | None:
    found = [n for n, m in module.named_modules(prefix=prefix) if _is_classifier_layer(m)]
    return found[-1] if found else None


def find_head(model: nn.Module) -> str:
    """The name of the final classifier layer: ``fc``, the last layer in ``classifier``/``head``/``heads``
    or LeNet-5's RBF ``output``.

    Raises:
        ValueError: no such attribute; the message lists the model's Linear and Conv2d layers.

    Reference: torchvision ``models/*.py`` attribute names.
    """
    for attr in HEAD_ATTRS:
        child = getattr(model, attr, None)
        if isinstance(child, nn.Module) and (name := _last_layer(child, attr)):
            return name
    candidates = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-8:]
    raise ValueError(
        f"cannot find the head of {type(model).__name__}: it has none of the attributes "
        f"{', '.join(HEAD_ATTRS)}; its last Linear/Conv2d layers are: {', '.join(candidates) or 'none'}"
    )


def aux_heads(model: nn.Module) -> list[str]:
    """The names of the auxiliary classifiers' final layers (``aux1``, ``aux2``, ``AuxLogits``), if any.

    Reference: Szegedy et al., CVPR 2015 (GoogLeNet's auxiliary classifiers); torchvision's ``inception_v3``.
    """
    return [
        n
        for a in AUX_ATTRS
        if isinstance(getattr(model, a, None), nn.Module)
        for n in [_last_layer(getattr(model, a), a)]
        if n
    ]


def blocks(model: nn.Module) -> list[str]:
    """The model's trainable blocks in order: children of containers (``Sequential``, ``ModuleList``)
    and of the model itself, descending into containers; e.g. ``conv1, bn1, layer1.0, ..., layer3.2, fc``.

    Reference: the "blocks" of He et al., CVPR 2016, and torchvision's ``features``/``layerN`` layout.
    """
    out: list[str] = []

    def walk(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            full = f"{prefix}.{name}" if prefix else name
            if isinstance(child, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
                walk(child, full)
            elif any(True for _ in child.parameters()):
                out.append(full)

    walk(model, "")
    return out
