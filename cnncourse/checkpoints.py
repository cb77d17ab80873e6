"""Checkpoints: the ones the course trains itself, the recipes that reproduce them bit for bit, and
:func:`load_pretrained`, which loads them (or torchvision's weights) into a model.

Each recipe names a model builder, a source dataset (optionally a subset of its classes and
``per_class`` images of each), the epochs and the seed. ``pretrain(name)`` trains it on the CPU with
one thread, saves ``<name>.pt`` and records in ``MANIFEST.json`` the file's SHA-256, the exact
command, the seed, the epochs, the accuracy on the source test set and the library version.

Why one CPU thread: a float sum gives different last bits when it is split differently, and the
CPU kernels split their reductions by thread count, so the bits of a trained network can depend on
``torch.get_num_threads()``. One thread on the same CPU instruction set and torch version gives the
same file; the manifest records both so a check can tell a real regression from a platform change.

``python -m cnncourse pretrain NAME`` runs a recipe from the command line (see :mod:`cnncourse.cli_pretrain`).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

import cnncourse
from cnncourse.data import ImageDataset, load_dataset, sha256_of
from cnncourse.io import atomic_write_text
from cnncourse.train import load_checkpoint

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
MANIFEST = "MANIFEST.json"
THREADS = 1


@dataclass(frozen=True)
class Recipe:
    """How one checkpoint is made.

    Attributes:
        model: a builder name from ``cnncourse.models.list_models()``.
        model_kwargs: keyword arguments of the builder (``num_classes`` included).
        dataset: ``"mnist"`` or ``"fashion-mnist"``.
        classes: the labels kept (relabelled ``0..k-1``), or ``None`` for all of them.
        per_class: training images drawn from each class with ``ImageDataset.per_class(n, seed)``.
        epochs, seed, lr, batch_size: the training run (Adam).
        description: one line for the manifest and the CLI listing.
    """

    model: str
    model_kwargs: dict[str, Any]
    dataset: str
    classes: tuple[int, ...] | None
    per_class: int
    epochs: int
    seed: int = 0
    lr: float = 1e-3
    batch_size: int = 64
    description: str = ""


RECIPES: dict[str, Recipe] = {
    "lenet5_mnist04": Recipe(
        "lenet5",
        {"variant": "textbook", "num_classes": 5},
        "mnist",
        (0, 1, 2, 3, 4),
        per_class=1000,
        epochs=3,
        description="textbook LeNet-5 (28x28) on MNIST digits 0-4, 1,000 images per digit",
    ),
    "resnet20_mnist04": Recipe(
        "cifar_resnet",
        {"depth": 20, "num_classes": 5},
        "mnist",
        (0, 1, 2, 3, 4),
        per_class=300,
        epochs=3,
        description="ResNet-20 (CIFAR-style, 1 channel) on MNIST digits 0-4, 300 images per digit",
    ),
    "resnet20_fashion": Recipe(
        "cifar_resnet",
        {"depth": 20, "num_classes": 10},
        "fashion-mnist",
        None,
        per_class=200,
        epochs=3,
        description="ResNet-20 (CIFAR-style, 1 channel) on Fashion-MNIST, 200 images per class",
    ),
    "lenet5_mnist04_full": Recipe(
        "lenet5",
        {"variant": "textbook", "num_classes": 5},
        "mnist",
        (0, 1, 2, 3, 4),
        per_class=5800,
        epochs=4,
        description="textbook LeNet-5 (28x28) on all of MNIST digits 0-4 (5,800 images per digit)",
    ),
    "lenet5_mnist04_ci": Recipe(
        "lenet5",
        {"variant": "textbook", "num_classes": 5},
        "mnist",
        (0, 1, 2, 3, 4),
        per_class=100,
        epochs=2,
        description="a seconds-long LeNet-5 recipe that CI re-runs to check determinism",
    ),
}


def recipe(name: str) -> Recipe:
    """The recipe called ``name``.

    Raises:
        KeyError: for an unknown name; the message lists the known ones.

    Reference: this module's ``RECIPES`` table.
    """
    if name not in RECIPES:
        raise KeyError(f"unknown checkpoint {name!r}; expected one of: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def build(name: str) -> nn.Module:
    """A freshly initialised model of the architecture that checkpoint ``name`` holds.

    Reference: ``cnncourse.models.get_model``.
    """
    from cnncourse.models import get_model

    r = recipe(name)
    return get_model(r.model, **r.model_kwargs)


def source_data(name: str, split: str = "train") -> ImageDataset:
    """The source dataset of checkpoint ``name``: the training subset, or the whole test split.

    Reference: this module's ``RECIPES`` table.
    """
    r = recipe(name)
    data = load_dataset(r.dataset, split)
    if r.classes is not None:
        data = data.filter_classes(r.classes)
    return data.per_class(r.per_class, seed=r.seed) if split == "train" else data


def platform_fingerprint() -> dict[str, str]:
    """What the bits of a CPU training run depend on besides the seed: torch version and CPU ISA.

    Reference: https://pytorch.org/docs/stable/notes/randomness.html
    """
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
        "threads": str(THREADS),
    }


def read_manifest(out_dir: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """The manifest of ``out_dir`` (default: the package's checkpoint folder); ``{}`` when absent."""
    path = Path(out_dir or CHECKPOINT_DIR) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}


def checkpoint_path(name: str, out_dir: str | os.PathLike | None = None, verify: bool = True) -> Path:
    """The file of checkpoint ``name``, its SHA-256 checked against the manifest.

    Raises:
        FileNotFoundError: the checkpoint or its manifest entry is missing (with the command that makes it).
        ValueError: the file's SHA-256 differs from the manifest's.

    Reference: this module's docstring.
    """
    recipe(name)
    folder = Path(out_dir or CHECKPOINT_DIR)
    path = folder / f"{name}.pt"
    entry = read_manifest(folder).get(name)
    if not path.is_file() or entry is None:
        raise FileNotFoundError(
            f"checkpoint {name!r} is not in {folder} (file or manifest entry missing); "
            f"make it with: python -m cnncourse pretrain {name}"
        )
    if verify:
        actual = sha256_of(path)
        if actual != entry["sha256"]:
            raise ValueError(
                f"{path} has SHA-256 {actual}, but {MANIFEST} records {entry['sha256']}; "
                f"the file is corrupt or stale: re-run python -m cnncourse pretrain {name}"
            )
    return path


def pretrain(
    name: str, out_dir: str | os.PathLike | None = None, *, progress: bool = True, write_manifest: bool = True
) -> dict[str, Any]:
    """Train checkpoint ``name`` from its recipe, save it to ``out_dir`` and return its manifest entry.

    The run is on the CPU with one thread (see the module docstring), so the same recipe on the same
    platform gives a file with the same SHA-256. The file holds the state dict and only
    deterministic metadata (no date), so its hash depends on the training alone.

    Args:
        name: a key of ``RECIPES``.
        out_dir: where ``<name>.pt`` and ``MANIFEST.json`` go; default the package's checkpoint folder.
        progress: show tqdm bars.
        write_manifest: add or replace this checkpoint's entry in ``out_dir/MANIFEST.json``.

    Reference: https://pytorch.org/docs/stable/notes/randomness.html
    """
    from cnncourse.train import evaluate, fit, save_checkpoint, set_seed

    r = recipe(name)
    folder = Path(out_dir or CHECKPOINT_DIR)
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        train, test = source_data(name, "train"), source_data(name, "test")
        set_seed(r.seed)
        model = build(name)
        hist = fit(
            model,
            train,
            epochs=r.epochs,
            lr=r.lr,
            batch_size=r.batch_size,
            seed=r.seed,
            device="cpu",
            progress=progress,
        )
        acc = evaluate(model, test, device="cpu")["accuracy"]
        if acc is None:  # evaluate gives no accuracy when the targets are not class indices
            raise RuntimeError(f"recipe {name!r} must train a classifier; evaluate returned no accuracy")
    finally:
        torch.set_num_threads(threads)
    path = folder / f"{name}.pt"
    save_checkpoint(
        path,
        model,
        recipe=name,
        builder=r.model,
        model_kwargs=r.model_kwargs,
        seed=r.seed,
        epochs=r.epochs,
        source_accuracy=round(acc, 6),
    )
    entry = {
        "file": path.name,
        "sha256": sha256_of(path),
        "bytes": path.stat().st_size,
        "command": f"python -m cnncourse pretrain {name}",
        "description": r.description,
        "recipe": {k: v for k, v in asdict(r).items() if k != "description"},
        "seed": r.seed,
        "epochs": r.epochs,
        "train_images": len(train),
        "final_train_loss": round(hist.last["train_loss"], 6),
        "source_test_images": len(test),
        "source_accuracy": round(acc, 6),
        "library_version": cnncourse.__version__,
        "platform": platform_fingerprint(),
        "created": _dt.date.today().isoformat(),
    }
    if write_manifest:
        manifest = read_manifest(folder)
        manifest[name] = entry
        atomic_write_text(folder / MANIFEST, json.dumps(dict(sorted(manifest.items())), indent=2) + "\n")
    return entry


def load_pretrained(model_name: str, source: Any, *, allow_download: bool = True, **model_kwargs: Any) -> nn.Module:
    """Build ``model_name`` and load pretrained weights from ``source``.

    ``source`` is one of:

    * a course checkpoint name (``"lenet5_mnist04"``; see ``RECIPES``), SHA-256 verified;
    * a local file holding a state dict, or a checkpoint written by ``cnncourse.train.save_checkpoint``;
    * a torchvision weights enum (``ResNet18_Weights.IMAGENET1K_V1``) or its name (``"DEFAULT"``), for a
      torchvision model name. It is downloaded unless already in torch's cache (``torch.hub.get_dir()``).

    Course builders (``cnncourse.models.list_models()``) are tried first, then torchvision's.

    Raises:
        ValueError: unknown model or source (the message lists the candidates), or a checkpoint for
            another architecture.
        FileNotFoundError: torchvision weights not cached and ``allow_download=False``.

    Reference: https://pytorch.org/vision/stable/models.html#using-the-pre-trained-models
    """
    import torchvision.models as tvm
    from torchvision.models import WeightsEnum

    from cnncourse.models import get_model, list_models

    if isinstance(source, str) and source in RECIPES:
        expected = recipe(source).model
        if model_name != expected:
            raise ValueError(f"checkpoint {source!r} holds a {expected!r} model, not {model_name!r}")
        model = build(source)
        load_checkpoint(checkpoint_path(source), model)
        return model
    if isinstance(source, (str, os.PathLike)) and Path(source).is_file():
        if model_name in list_models():
            model = get_model(model_name, **model_kwargs)
        elif model_name in tvm.list_models():
            model = tvm.get_model(model_name, weights=None, **model_kwargs)
        else:
            raise ValueError(
                f"unknown model {model_name!r}; course models: {', '.join(list_models())}; "
                f"or any of torchvision.models.list_models()"
            )
        load_checkpoint(source, model)
        return model
    if model_name not in tvm.list_models():
        raise ValueError(
            f"cannot load {source!r}: it is not a course checkpoint ({', '.join(RECIPES)}), "
            f"not an existing file, and {model_name!r} is not a torchvision model"
        )
    enum = tvm.get_model_weights(model_name)
    if isinstance(source, str):
        if source not in {"DEFAULT", *enum.__members__}:
            raise ValueError(
                f"{model_name!r} has no weights {source!r}; candidates: DEFAULT, "
                f"{', '.join(enum.__members__)}; or a course checkpoint: {', '.join(RECIPES)}"
            )
        source = enum[source]
    if not isinstance(source, WeightsEnum):
        raise ValueError(f"source must be a checkpoint name, a file or a weights enum, got {type(source).__name__}")
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(source.url)
    if not cached.is_file() and not allow_download:
        raise FileNotFoundError(
            f"{source} is not in torch's cache ({cached}) and allow_download=False; "
            f"go online once or copy the file there"
        )
    return tvm.get_model(model_name, weights=source, **model_kwargs)
