"""The training engine: one short, explicit loop that the book shows in full.

``fit`` trains any classifier on an :class:`~cnncourse.data.ImageDataset` and returns a
:class:`History`. ``evaluate`` and ``predict`` use the same batching. Checkpoints are
written atomically and loaded with ``weights_only=True``.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from cnncourse import distributed
from cnncourse.data import BatchLoader, ImageDataset, Transform, pad_to
from cnncourse.io import atomic_write_bytes
from cnncourse.utils import eval_mode

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch.

    CPU kernels are deterministic for a fixed thread count, so this makes a CPU run
    bit-for-bit repeatable; GPU runs may still differ in the last bits.

    Reference: https://pytorch.org/docs/stable/notes/randomness.html
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple's MPS, then the CPU; anything else is passed to ``torch.device``."""
    if str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass
class History:
    """Per-epoch records of a :func:`fit` run.

    Each entry of ``epochs`` is a dict with ``epoch``, ``train_loss``, ``train_acc``,
    ``val_loss``, ``val_acc`` (``None`` without validation data) and ``seconds``.
    """

    epochs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def last(self) -> dict[str, Any]:
        """The record of the final epoch."""
        return self.epochs[-1]

    def as_dicts(self) -> list[dict[str, Any]]:
        """A copy of the records, ready for ``pandas.DataFrame`` or ``json.dump``."""
        return [dict(e) for e in self.epochs]

    def __getitem__(self, key: str) -> list[Any]:
        """One column, e.g. ``history["val_acc"]``."""
        return [e[key] for e in self.epochs]

    def __str__(self) -> str:
        lines = [f"{'epoch':>5} {'train_loss':>10} {'train_acc':>9} {'val_loss':>9} {'val_acc':>8} {'seconds':>8}"]
        for e in self.epochs:
            vl = "" if e["val_loss"] is None else f"{e['val_loss']:.4f}"
            va = "" if e["val_acc"] is None else f"{e['val_acc']:.4f}"
            ta = "" if e["train_acc"] is None else f"{e['train_acc']:.4f}"
            lines.append(f"{e['epoch']:>5} {e['train_loss']:>10.4f} {ta:>9} {vl:>9} {va:>8} {e['seconds']:>8.1f}")
        return "\n".join(lines)

    def plot(self, title: str | None = None):
        """Loss and accuracy against epoch, train and validation; returns the figure."""
        import matplotlib.pyplot as plt

        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.2))
        for key, ax in (("loss", ax_loss), ("acc", ax_acc)):
            if key == "acc" and self.epochs and self.epochs[0]["train_acc"] is None:
                ax.set_visible(False)  # a reconstruction target has no accuracy
                continue
            ax.plot(self["epoch"], self[f"train_{key}"], marker="o", label="train")
            if self.epochs and self.epochs[0]["val_loss"] is not None:
                ax.plot(self["epoch"], self[f"val_{key}"], marker="o", label="validation")
            ax.set_xlabel("epoch")
            ax.set_ylabel("accuracy" if key == "acc" else "cross-entropy loss")
            ax.legend()
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        return fig


def _make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {name!r}")


def fit(
    model: nn.Module,
    train: ImageDataset,
    val: ImageDataset | None = None,
    *,
    epochs: int = 1,
    lr: float = 1e-3,
    optimizer: str | torch.optim.Optimizer = "adam",
    batch_size: int = 128,
    weight_decay: float = 0.0,
    scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    progress: bool = True,
    transform: Transform | None = None,
    augment: Transform | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    max_batches: int | None = None,
    target: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> History:
    """Train ``model`` with mini-batch gradient descent and return its :class:`History`.

    Args:
        model: a classifier mapping ``(B, C, H, W)`` to logits ``(B, num_classes)``.
        train, val: in-memory datasets; ``val`` is evaluated after every epoch.
        epochs, lr, batch_size, weight_decay: the usual hyper-parameters.
        optimizer: ``"adam"``, ``"sgd"`` (momentum 0.9) or a ready optimizer over the model's parameters.
        scheduler: a function ``optimizer -> LR scheduler``; it is stepped once per epoch.
        device: ``"auto"`` (CUDA, then MPS, then CPU) or any torch device.
        seed: seeds initial shuffling and everything random in the loop.
        progress: show a tqdm bar with the running loss and accuracy.
        transform: applied to every batch, training and evaluation (e.g. ``pad_to(32)``).
        augment: applied to training batches only (e.g. ``random_crop_flip(2)``).
        loss_fn: defaults to cross-entropy on the logits.
        max_batches: stop each epoch after this many batches (quick experiments).
        target: maps a batch ``(x, y)`` to what ``loss_fn`` compares the output with, computed before
            ``augment`` (``lambda x, y: x`` trains an autoencoder). Accuracy is recorded only when the
            target holds class indices (an integer tensor); otherwise it is ``None``.

    Under ``torchrun --nproc-per-node N`` (see :mod:`cnncourse.distributed`) the same call trains
    data-parallel: the model is wrapped in ``DistributedDataParallel``, ``batch_size`` is per rank (the
    effective batch is ``N * batch_size``), each rank takes its shard of every epoch's permutation, the
    history's losses and accuracies are averaged over all ranks, and only rank 0 shows the progress bar
    (its running values are rank 0's own).

    Reference: Goodfellow, Bengio and Courville, *Deep Learning* (2016), algorithm 8.1.
    """
    ctx = distributed.context(pick_device(device))  # one rank, on this device, without torchrun
    set_seed(seed + ctx.rank)  # dropout and augmentation differ per rank; the permutation uses `seed`
    dev = ctx.device
    model.to(dev)
    net = ctx.wrap(model)  # DistributedDataParallel under torchrun, `model` itself otherwise
    loss_fn = loss_fn or F.cross_entropy
    opt = (
        optimizer
        if isinstance(optimizer, torch.optim.Optimizer)
        else _make_optimizer(optimizer, [p for p in model.parameters() if p.requires_grad], lr, weight_decay)
    )
    sched = scheduler(opt) if scheduler else None
    loader = ctx.loader(train, batch_size, seed=seed, transform=transform)
    history = History()
    n_batches = min(len(loader), max_batches or len(loader))
    for epoch in range(1, epochs + 1):
        model.train()
        start, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
        bar = tqdm(total=n_batches, desc=f"epoch {epoch}/{epochs}", disable=not (progress and ctx.is_main), leave=False)
        for b, (x, y) in enumerate(loader):
            if b == n_batches:
                break
            t = y if target is None else target(x, y)
            if augment is not None:
                x = augment(x)
            logits = net(x)
            loss = loss_fn(logits, t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(y)
            loss_sum += loss.item() * len(y)
            classes = not t.is_floating_point()
            correct += (logits.argmax(1) == t).sum().item() if classes else 0
            bar.update()
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", **({"acc": f"{correct / seen:.3f}"} if classes else {}))
        bar.close()
        seen, loss_sum, correct = ctx.sum(seen, loss_sum, correct)  # over all ranks
        if sched is not None:
            sched.step()
        record = {
            "epoch": epoch,
            "train_loss": loss_sum / seen,
            "train_acc": correct / seen if classes else None,
            "val_loss": None,
            "val_acc": None,
        }
        if val is not None:
            metrics = ctx.evaluate(
                evaluate, model, val, transform=transform, device=dev, loss_fn=loss_fn, target=target
            )
            record.update(val_loss=metrics["loss"], val_acc=metrics["accuracy"])
        record["seconds"] = time.perf_counter() - start
        history.epochs.append(record)
    return history


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: ImageDataset,
    *,
    batch_size: int = 512,
    transform: Transform | None = None,
    device: str | torch.device = "auto",
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    target: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float | None]:
    """Mean loss and accuracy of ``model`` on ``data``, in eval mode; the model's mode is restored after.

    ``target`` is as in :func:`fit`; accuracy is ``None`` when the target is not class indices.

    Reference: the evaluation half of :func:`fit`.
    """
    dev = pick_device(device)
    loss_fn = loss_fn or F.cross_entropy
    loss_sum, correct = 0.0, 0
    classes = True
    with eval_mode(model.to(dev)):
        for x, y in BatchLoader(data, batch_size, transform=transform, device=dev):
            t = y if target is None else target(x, y)
            logits = model(x)
            loss_sum += loss_fn(logits, t).item() * len(y)
            classes = not t.is_floating_point()
            correct += (logits.argmax(1) == t).sum().item() if classes else 0
    return {"loss": loss_sum / len(data), "accuracy": correct / len(data) if classes else None}


@torch.no_grad()
def predict(
    model: nn.Module,
    images: torch.Tensor | ImageDataset,
    *,
    batch_size: int = 512,
    transform: Transform | None = None,
    device: str | torch.device = "auto",
) -> torch.Tensor:
    """Predicted class index ``(N,)`` for a dataset, or for a float batch ``(N, C, H, W)`` already normalised.

    Reference: the evaluation half of :func:`fit`.
    """
    dev = pick_device(device)
    model.to(dev)
    if isinstance(images, ImageDataset):
        batches = (x for x, _ in BatchLoader(images, batch_size, transform=transform, device=dev))
    else:
        if images.dim() != 4:
            raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(images.shape)}")
        batches = (
            (transform or (lambda t: t))(images[i : i + batch_size].to(dev)) for i in range(0, len(images), batch_size)
        )
    with eval_mode(model):
        return torch.cat([model(x).argmax(1).cpu() for x in batches])


class Pipeline(NamedTuple):
    """What a model declares for training: pass each field to :func:`fit` under the same name."""

    transform: Transform | None
    loss_fn: LossFn | None
    target: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None


def _inputs_as_target(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The ``target`` for ``training_target = "inputs"``: the network should reproduce its input."""
    return x


_TARGETS = {"labels": None, "inputs": _inputs_as_target}


def input_pipeline(model: nn.Module, data: ImageDataset) -> Pipeline:
    """The batch transform, loss and target that ``model`` declares for ``data``; ``None`` means fit's defaults.

    A model may define ``input_transform(mean, std) -> Transform`` (e.g. the 1998 LeNet-5's input
    scaling), ``loss_fn(output, target)`` and ``training_target``: ``"labels"`` (the default: class
    indices, for classifiers) or ``"inputs"`` (the batch itself, for autoencoders). Without an
    ``input_transform``, images smaller than the model's ``input_size`` are zero-padded to it (after
    normalisation).

    Raises:
        ValueError: the images are larger than the model's ``input_size``, or ``training_target``
            is not one of ``"labels"``, ``"inputs"``.
    """
    name = getattr(model, "training_target", "labels")
    if name not in _TARGETS:
        raise ValueError(f"{type(model).__name__}.training_target must be one of {sorted(_TARGETS)}, got {name!r}")
    target, loss_fn = _TARGETS[name], getattr(model, "loss_fn", None)
    make = getattr(model, "input_transform", None)
    if callable(make):
        return Pipeline(make(data.mean, data.std), loss_fn, target)
    size = getattr(model, "input_size", None)
    h, w = data.images.shape[-2:]
    if size is None or tuple(size[-2:]) == (h, w):
        return Pipeline(None, loss_fn, target)
    if size[-2] < h or size[-1] < w:
        raise ValueError(f"{type(model).__name__} takes {tuple(size)} inputs, smaller than the {h}x{w} images")
    return Pipeline(pad_to(int(size[-1])), loss_fn, target)


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **meta: Any) -> None:
    """Save ``model.state_dict()`` and JSON-like ``meta`` to ``path`` atomically.

    Under ``torchrun`` only rank 0 writes; the other ranks return without touching ``path``.

    Reference: https://pytorch.org/tutorials/beginner/saving_loading_models.html
    """
    import io

    if not distributed.is_main():
        return

    buf = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "meta": meta}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike, model: nn.Module) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` into ``model``; return its metadata.

    Raises:
        ValueError: when the architecture does not match, listing missing and unexpected keys
            and any shape mismatches.

    Reference: https://pytorch.org/docs/stable/generated/torch.load.html (``weights_only=True``).
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt["state_dict"] if isinstance(ckpt, dict) and "state_dict" in ckpt else ckpt
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own.keys() & state.keys()
        if own[k].shape != state[k].shape
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f"checkpoint {path} does not match {type(model).__name__}:\n"
            f"  missing keys: {missing or 'none'}\n  unexpected keys: {unexpected or 'none'}\n"
            f"  shape mismatches: {shapes or 'none'}"
        )
    model.load_state_dict(state)
    return dict(ckpt.get("meta", {})) if isinstance(ckpt, dict) else {}
