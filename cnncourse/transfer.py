"""Transfer learning: freeze, replace the head, fine-tune, and measure it.

* ``freeze`` / ``unfreeze`` switch ``requires_grad`` for every parameter up to and including a named
  layer, in registration order (the order of ``model.named_parameters()``, which for the course's and
  torchvision's models is the order of the forward pass), and return the names they changed.
* Frozen BatchNorm stays in eval mode: ``fit`` calls ``model.train()`` every epoch, which would put a
  frozen BN layer back into training mode, where it normalises with the batch's statistics and
  overwrites its running averages, so the "frozen" features would keep changing. ``freeze`` therefore
  registers a forward pre-hook on each frozen BN layer that switches that layer (and only it) to eval
  mode just before it runs. ``unfreeze`` removes the hook; ``freeze(..., bn_eval=False)`` opts out.
* ``replace_head`` finds the classifier (``fc``, the last layer of ``classifier``, ``head``/``heads``,
  LeNet's ``output``) of course and torchvision models and swaps in a fresh one.
* ``fine_tune`` applies one of the ``STRATEGIES`` and trains with :func:`cnncourse.train.fit`;
  ``run_grid`` runs it for every (target, images per class, strategy, seed), ``summarize`` reduces the
  runs to mean and standard deviation, and ``plot_grid`` draws them. The transfer chapter's experiments
  (``benchmarks/transfer.py``) and lab 6 are built on these three.

This module is the one to import: it re-exports the read-only helpers it is built on, the naming of a
model's layers, blocks and head (:mod:`cnncourse.model_parts`), and the measuring side, the targets,
features, summaries and plots (:mod:`cnncourse.transfer_analysis`). What changes a model stays here, so
a lab's ``forbid("cnncourse.transfer.freeze", ...)`` also covers the calls this module makes itself.

Reference: J. Yosinski, J. Clune, Y. Bengio, H. Lipson, "How transferable are features in deep neural
networks?", NeurIPS 2014; S. Ioffe and C. Szegedy, "Batch Normalization", ICML 2015 (eval-mode statistics).
"""

from __future__ import annotations

import itertools
import time
import weakref
from typing import Any, Iterable, Sequence, cast

import torch
import torch.nn as nn
from torch.utils.hooks import RemovableHandle

from cnncourse.checkpoints import load_pretrained, recipe
from cnncourse.data import ImageDataset
from cnncourse.model_parts import aux_heads, blocks, find_head, layer_names
from cnncourse.train import History, evaluate, fit, set_seed
from cnncourse.transfer_analysis import TARGETS, extract_features, pca_2d, plot_grid, summarize, target_data

__all__ = [
    "STRATEGIES",
    "TARGETS",
    "apply_strategy",
    "aux_heads",
    "blocks",
    "extract_features",
    "find_head",
    "fine_tune",
    "freeze",
    "layer_names",
    "param_groups",
    "pca_2d",
    "plot_grid",
    "reinitialize",
    "replace_head",
    "run_grid",
    "summarize",
    "target_data",
    "unfreeze",
]

STRATEGIES: dict[str, str] = {
    "head": "train only the new head; the pretrained backbone is frozen",
    "last_k": "train the new head and the last k blocks (default: the last third of the blocks, rounded up)",
    "full": "fine-tune every layer, starting from the pretrained weights",
    "scratch": "the same architecture, randomly initialised, every layer trained",
}
_BN_HOOKS: "weakref.WeakKeyDictionary[nn.Module, RemovableHandle]" = weakref.WeakKeyDictionary()


def _keep_eval(module: nn.Module, args: tuple) -> None:
    # Runs before every forward of a frozen BN layer, after fit's model.train(): use the running statistics.
    if module.training and not any(p.requires_grad for p in module.parameters(recurse=False)):
        module.train(False)


def _part(model: nn.Module, until: str | None) -> list[tuple[str, nn.Module]]:
    """The modules, in registration (pre-)order, up to and including ``until``'s whole subtree."""
    mods = list(model.named_modules())
    if until is None:
        return mods
    names = [n for n, _ in mods]
    if until not in names[1:]:
        raise ValueError(f"{type(model).__name__} has no layer {until!r}; candidates: {', '.join(layer_names(model))}")
    end = max(i for i, n in enumerate(names) if n == until or n.startswith(until + "."))
    return mods[: end + 1]


def freeze(model: nn.Module, until: str | None = None, *, bn_eval: bool = True) -> list[str]:
    """Set ``requires_grad=False`` on every parameter up to and including layer ``until`` (all when None).

    Args:
        model: any ``nn.Module``.
        until: a module name such as ``"layer2"`` or ``"features.conv2"``; a container freezes its
            whole subtree. ``None`` freezes every parameter.
        bn_eval: keep the frozen BatchNorm layers in eval mode even under ``model.train()`` (see the
            module docstring); ``False`` lets them update their running statistics.

    Returns:
        The names of the parameters that were trainable and are now frozen, in order.

    Raises:
        ValueError: ``until`` is not a layer of ``model``; the message lists the candidates.

    Reference: Yosinski et al., NeurIPS 2014 (frozen vs fine-tuned transferred layers).
    """
    changed = []
    for prefix, module in _part(model, until):
        for pname, p in module.named_parameters(recurse=False):
            if p.requires_grad:
                p.requires_grad_(False)
                changed.append(f"{prefix}.{pname}" if prefix else pname)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if bn_eval and module not in _BN_HOOKS:
                _BN_HOOKS[module] = module.register_forward_pre_hook(_keep_eval)
            elif not bn_eval and module in _BN_HOOKS:
                _BN_HOOKS.pop(module).remove()
    return changed


def unfreeze(model: nn.Module, until: str | None = None) -> list[str]:
    """The inverse of :func:`freeze`: make the same range trainable again and drop the BN hooks.

    Returns:
        The names of the parameters that were frozen and are now trainable, in order.

    Reference: :func:`freeze`.
    """
    changed = []
    for prefix, module in _part(model, until):
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                p.requires_grad_(True)
                changed.append(f"{prefix}.{pname}" if prefix else pname)
        if module in _BN_HOOKS:
            _BN_HOOKS.pop(module).remove()
    return changed


def _new_head(old: nn.Module, num_classes: int) -> nn.Module:
    if isinstance(old, nn.Conv2d):  # SqueezeNet-style 1x1 conv classifier
        k, s, p = old.kernel_size, old.stride, old.padding
        return nn.Conv2d(old.in_channels, num_classes, k, s, p)  # type: ignore[arg-type]
    # nn.Linear, or a Linear-like head (LeNet-5's fixed RBF codes): a fresh linear layer of the same input size.
    return nn.Linear(int(cast(int, old.in_features)), num_classes, bias=getattr(old, "bias", True) is not None)


def replace_head(model: nn.Module, num_classes: int) -> str:
    """Swap the final classifier for a freshly initialised one with ``num_classes`` outputs, in place.

    Inception-style auxiliary classifiers (``aux1``, ``aux2``, ``AuxLogits``) get new heads too.
    The new layer is trainable, on the old layer's device and dtype, and initialised from torch's RNG
    (seed it first for a repeatable head).

    Returns:
        The name of the replaced main head, e.g. ``"fc"`` or ``"classifier.6"``.

    Raises:
        ValueError: ``num_classes < 1`` or no head found (listing the candidate layers).

    Reference: https://pytorch.org/tutorials/beginner/finetuning_torchvision_models_tutorial.html
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    head = find_head(model)
    names = [head] + aux_heads(model)
    for name in names:
        old = model.get_submodule(name)
        ref = next(itertools.chain(old.parameters(), old.buffers()))
        new = _new_head(old, num_classes).to(device=ref.device, dtype=ref.dtype)
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, new)
    return head


def _before(model: nn.Module, name: str) -> str | None:
    """The last module registered before ``name`` that is not one of its ancestors."""
    names = [n for n, _ in model.named_modules()]
    for n in reversed(names[1 : names.index(name)]):
        if not name.startswith(n + "."):
            return n
    return None


def apply_strategy(model: nn.Module, strategy: str, k: int | None = None, *, bn_eval: bool = True) -> list[str]:
    """Freeze ``model`` (whose head is already the new one) for ``strategy``; return the trainable names.

    ``"head"`` freezes everything registered before the head; ``"last_k"`` everything before the last
    ``k`` blocks (``k`` defaults to a third of the blocks before the head, rounded up); ``"full"`` and ``"scratch"``
    freeze nothing (``"scratch"`` is re-initialised by :func:`fine_tune`).

    Reference: Yosinski et al., NeurIPS 2014.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of: {', '.join(STRATEGIES)}")
    unfreeze(model)
    head = find_head(model)
    body = [b for b in blocks(model) if not (head == b or head.startswith(b + "."))]
    if strategy == "head":
        first = head
    elif strategy == "last_k":
        k = max(1, -(-len(body) // 3)) if k is None else k
        if not 1 <= k <= len(body):
            raise ValueError(f"k must be between 1 and {len(body)} for {type(model).__name__}, got {k}")
        first = body[-k]
    else:
        first = None
    if first is not None and (until := _before(model, first)) is not None:
        freeze(model, until, bn_eval=bn_eval)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def param_groups(model: nn.Module, lr: float, backbone_lr: float, head: str | None = None) -> list[dict[str, Any]]:
    """Optimizer parameter groups with discriminative learning rates: ``lr`` for the head, ``backbone_lr``
    for every other trainable parameter. Frozen parameters are left out; empty groups are dropped.

    Example: ``torch.optim.Adam(param_groups(model, lr=1e-3, backbone_lr=1e-4))``.

    Reference: J. Howard and S. Ruder, "Universal Language Model Fine-tuning", ACL 2018, section 3.2.
    """
    head = head or find_head(model)
    groups: dict[str, list[nn.Parameter]] = {"backbone": [], "head": []}
    for n, p in model.named_parameters():
        if p.requires_grad:
            groups["head" if n == head or n.startswith(head + ".") else "backbone"].append(p)
    out = [
        {"params": groups["backbone"], "lr": backbone_lr, "name": "backbone"},
        {"params": groups["head"], "lr": lr, "name": "head"},
    ]
    out = [g for g in out if g["params"]]
    if not out:
        raise ValueError("model has no trainable parameters: unfreeze something first")
    return out


def reinitialize(model: nn.Module) -> None:
    """Re-draw every parameter with each layer's ``reset_parameters`` (torch's default initialisation).

    Raises:
        ValueError: a layer owns parameters but has no ``reset_parameters`` (it would stay pretrained).

    Reference: ``torch.nn.Module`` layers' ``reset_parameters``.
    """
    stuck = [
        n
        for n, m in model.named_modules()
        if any(True for _ in m.parameters(recurse=False)) and not callable(getattr(m, "reset_parameters", None))
    ]
    if stuck:
        raise ValueError(
            f"cannot re-initialise {type(model).__name__}: these layers have parameters but no "
            f"reset_parameters(): {', '.join(stuck)}; build a fresh model instead"
        )
    for m in model.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()


def fine_tune(
    model: nn.Module,
    data: ImageDataset,
    strategy: str = "head",
    *,
    num_classes: int | None = None,
    k: int | None = None,
    steps: int | None = None,
    epochs: int = 5,
    lr: float = 1e-3,
    backbone_lr: float | None = None,
    batch_size: int = 64,
    seed: int = 0,
    bn_eval: bool = True,
    val: ImageDataset | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> History:
    """Give ``model`` a new head for ``data`` and train it with ``strategy``; the model changes in place.

    Args:
        model: a pretrained classifier (course or torchvision).
        data: the target training set.
        strategy: a key of ``STRATEGIES``.
        num_classes: outputs of the new head; default ``len(data.classes)``.
        k: blocks trained by ``"last_k"`` (see :func:`apply_strategy`).
        steps: train for about this many optimizer steps whatever the data size (overrides ``epochs``).
        lr, backbone_lr: learning rate of the head and of the rest (default ``lr``), Adam.
        seed: seeds the new head, the re-initialisation and the batch order.
        bn_eval: keep frozen BatchNorm in eval mode.

    Reference: Yosinski et al., NeurIPS 2014; ``cnncourse.train.fit``.
    """
    set_seed(seed)
    if strategy == "scratch":
        reinitialize(model)
    replace_head(model, num_classes or len(data.classes))
    apply_strategy(model, strategy, k, bn_eval=bn_eval)
    max_batches = None
    if steps is not None:
        per_epoch = -(-len(data) // batch_size)
        epochs, max_batches = max(1, round(steps / per_epoch)), min(per_epoch, steps)
    optimizer: Any = "adam"
    if backbone_lr is not None:
        optimizer = torch.optim.Adam(param_groups(model, lr, backbone_lr))
    return fit(
        model,
        data,
        val,
        epochs=epochs,
        lr=lr,
        optimizer=optimizer,
        batch_size=batch_size,
        seed=seed,
        device=device,
        progress=progress,
        max_batches=max_batches,
    )


def run_grid(
    checkpoint: str = "lenet5_mnist04",
    *,
    targets: Sequence[str] = tuple(TARGETS),
    sizes: Iterable[int] = (10, 100, 1000),
    strategies: Iterable[str] = tuple(STRATEGIES),
    seeds: Iterable[int] = (0, 1, 2),
    steps: int = 200,
    lr: float = 1e-3,
    batch_size: int = 64,
    test_size: int | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Fine-tune checkpoint ``checkpoint`` on every (target, images per class, strategy, seed).

    Each run starts from the checkpoint, draws ``size`` training images per class with ``seed``, trains
    for about ``steps`` Adam steps and records the accuracy on the target's test split (its first
    ``test_size`` images in a fixed random order when given).

    Returns:
        One dict per run: ``target, size, strategy, seed, accuracy, trainable_params, seconds``.

    Reference: the transfer chapter of this course; Yosinski et al., NeurIPS 2014.
    """
    from tqdm.auto import tqdm

    model_name = recipe(checkpoint).model
    cells = [(t, n, s, seed) for t in targets for n in sizes for s in strategies for seed in seeds]
    data = {t: (target_data(t, "train"), target_data(t, "test")) for t in targets}
    if test_size is not None:
        data = {t: (tr, te.take(min(test_size, len(te)), seed=0)) for t, (tr, te) in data.items()}
    rows = []
    for t, n, s, seed in tqdm(cells, desc=f"transfer grid ({checkpoint})", disable=not progress):
        train, test = data[t][0].per_class(n, seed=seed), data[t][1]
        model = load_pretrained(model_name, checkpoint)
        start = time.perf_counter()
        fine_tune(model, train, s, steps=steps, lr=lr, batch_size=batch_size, seed=seed, progress=False)
        rows.append(
            {
                "target": t,
                "size": n,
                "strategy": s,
                "seed": seed,
                "accuracy": evaluate(model, test)["accuracy"],
                "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
                "seconds": round(time.perf_counter() - start, 3),
            }
        )
    return rows
