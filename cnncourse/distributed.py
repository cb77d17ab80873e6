"""Data-parallel training with ``torch.distributed``: what :func:`cnncourse.train.fit` does under ``torchrun``.

``torchrun --nproc-per-node N script.py`` starts N copies of a script and tells each one, through
environment variables, who it is (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``) and where to meet the
others (``MASTER_ADDR``, ``MASTER_PORT``). :func:`context` reads them, joins the process group
(``gloo`` on the CPU, ``nccl`` on CUDA) and returns a :class:`Context` that ``fit`` asks for four
things: the device, the model wrapped in ``DistributedDataParallel``, this rank's shard of every
epoch's batches, and the sum of a metric over all ranks. Without ``torchrun`` the context has one
rank, and every one of those answers is what ``fit`` did before.

Reference: https://pytorch.org/docs/stable/elastic/run.html and
https://pytorch.org/docs/stable/notes/ddp.html
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
import torch.nn as nn

from cnncourse.data import BatchLoader, ImageDataset, Transform

ENV_VARS = ("RANK", "WORLD_SIZE")  # set by torchrun (and by any env:// launcher) in every process


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or another ``env://`` launcher)."""
    return all(v in os.environ for v in ENV_VARS) or (dist.is_available() and dist.is_initialized())


def rank() -> int:
    """This process's rank: 0 without ``torchrun``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", 0))


def is_main() -> bool:
    """True on rank 0, the one process that prints, shows progress and writes files."""
    return rank() == 0


def backend_for(device: torch.device) -> str:
    """``"nccl"`` for CUDA tensors, ``"gloo"`` for everything else (the CPU)."""
    return "nccl" if device.type == "cuda" else "gloo"


def shard_batches(order: torch.Tensor, batch_size: int, rank: int, world_size: int) -> list[torch.Tensor]:
    """This rank's indices for each step of an epoch whose shuffled order is ``order``.

    Step ``b`` takes the global batch ``order[b*B*W:(b+1)*B*W]`` (``B = batch_size`` per rank,
    ``W = world_size``) and rank ``r`` takes its ``r``-th contiguous ``1/W``. The union over ranks of
    step ``b`` is therefore exactly batch ``b`` of one process with batch size ``B*W``. The final,
    short global batch is cut to a multiple of ``W`` so that every rank gets the same number of
    samples in every step (DDP averages per-rank means, which equals the global mean only when the
    ranks' batches are equal): at most ``W - 1`` samples, the last of the permutation, sit out each epoch.

    Args:
        order: a permutation of ``range(N)``, the same on every rank.
        batch_size: samples per rank per step.
        rank, world_size: ``0 <= rank < world_size``.

    Returns:
        One index tensor per step; the shards of all ranks partition ``order[:N - N % W]``.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    usable = len(order) - len(order) % world_size
    step = batch_size * world_size
    shards = []
    for start in range(0, usable, step):
        chunk = order[start:min(start + step, usable)]
        per_rank = len(chunk) // world_size
        shards.append(chunk[rank * per_rank:(rank + 1) * per_rank])
    return shards


class ShardedBatchLoader(BatchLoader):
    """A :class:`~cnncourse.data.BatchLoader` that yields only this rank's share of each step.

    Every rank draws the same permutation (the generator is seeded with the same ``seed``), then
    :func:`shard_batches` picks its part; nothing is sent between processes. ``batch_size`` is per rank.
    """

    def __init__(self, data: ImageDataset, batch_size: int, *, rank: int, world_size: int, seed: int = 0,
                 transform: Transform | None = None, device: str | torch.device = "cpu") -> None:
        super().__init__(data, batch_size, shuffle=True, seed=seed, transform=transform, device=device)
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        usable = len(self.data) - len(self.data) % self.world_size
        return -(-usable // (self.batch_size * self.world_size))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.data), generator=self.generator).to(self.images.device)
        for idx in shard_batches(order, self.batch_size, self.rank, self.world_size):
            x = self.images[idx].float().div_(255).sub_(self.data.mean).div_(self.data.std)
            yield (x if self.transform is None else self.transform(x)), self.labels[idx]


@dataclass
class Context:
    """Who this process is in a data-parallel run; ``world_size == 1`` without ``torchrun``."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that shows progress and writes checkpoints."""
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in ``DistributedDataParallel`` (which also copies rank 0's weights to every rank).

        With one rank, the model itself. The wrapper shares the model's parameters, so training the
        wrapper trains ``model``.
        """
        if self.world_size == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def loader(self, data: ImageDataset, batch_size: int, *, seed: int, transform: Transform | None) -> BatchLoader:
        """The training batches of this rank: ``batch_size`` samples per rank per step."""
        if self.world_size == 1:
            return BatchLoader(data, batch_size, shuffle=True, seed=seed, transform=transform, device=self.device)
        return ShardedBatchLoader(data, batch_size, rank=self.rank, world_size=self.world_size, seed=seed,
                                  transform=transform, device=self.device)

    def sum(self, *values: float) -> tuple[float, ...]:
        """Each value summed over all ranks (one ``all_reduce``); unchanged with one rank."""
        if self.world_size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return tuple(t.tolist())

    def evaluate(self, evaluate: Callable[..., dict[str, Any]], model: nn.Module, data: ImageDataset,
                 **kwargs: Any) -> dict[str, Any]:
        """``evaluate(model, data, **kwargs)`` with each rank scoring a contiguous ``1/W`` of ``data``.

        The per-rank means are turned back into sums, added over ranks and divided by ``len(data)``,
        so the result is the mean over the whole dataset, as with one process.
        """
        if self.world_size == 1:
            return evaluate(model, data, **kwargs)
        part = torch.tensor_split(torch.arange(len(data)), self.world_size)[self.rank]
        n = len(part)
        m = evaluate(model, data.subset(part), **kwargs) if n else {"loss": 0.0, "accuracy": 0.0}
        has_acc = m["accuracy"] is not None
        loss, correct, total = self.sum(m["loss"] * n, (m["accuracy"] or 0.0) * n, float(n))
        return {"loss": loss / total, "accuracy": correct / total if has_acc else None}


_CREATED_HERE = False


def context(device: torch.device) -> Context:
    """The data-parallel context of this process, joining the process group if ``torchrun`` started it.

    Under ``torchrun`` (``RANK`` and ``WORLD_SIZE`` in the environment) this initialises
    ``torch.distributed`` from ``env://`` once, with ``nccl`` for a CUDA ``device`` and ``gloo``
    otherwise. A CUDA device without an index becomes ``cuda:LOCAL_RANK``, so that the N processes
    on one machine use N different GPUs. A process group the caller initialised is used as it is.

    Args:
        device: the device ``fit`` would use in a single process.

    Returns:
        ``Context(rank=0, world_size=1, device=device)`` without ``torchrun``.
    """
    global _CREATED_HERE
    if not launched():
        return Context(0, 1, device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"data-parallel training runs on 'cpu' (gloo) or 'cuda' (nccl), got device {device}")
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend_for(device), init_method="env://", **kwargs)
        _CREATED_HERE = True
        atexit.register(_destroy)
    return Context(dist.get_rank(), dist.get_world_size(), device)


def _destroy() -> None:
    if _CREATED_HERE and dist.is_initialized():
        dist.destroy_process_group()
