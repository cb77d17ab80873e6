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
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import pickle
import shutil
import sys
import tempfile
import time
import traceback
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
        chunk = order[start : min(start + step, usable)]
        per_rank = len(chunk) // world_size
        shards.append(chunk[rank * per_rank : (rank + 1) * per_rank])
    return shards


class ShardedBatchLoader(BatchLoader):
    """A :class:`~cnncourse.data.BatchLoader` that yields only this rank's share of each step.

    Every rank draws the same permutation (the generator is seeded with the same ``seed``), then
    :func:`shard_batches` picks its part; nothing is sent between processes. ``batch_size`` is per rank.
    """

    def __init__(
        self,
        data: ImageDataset,
        batch_size: int,
        *,
        rank: int,
        world_size: int,
        seed: int = 0,
        transform: Transform | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
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
        return ShardedBatchLoader(
            data,
            batch_size,
            rank=self.rank,
            world_size=self.world_size,
            seed=seed,
            transform=transform,
            device=self.device,
        )

    def sum(self, *values: float) -> tuple[Any, ...]:
        """Each value summed over all ranks (one ``all_reduce`` in float64), keeping its type (int or float)."""
        if self.world_size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return tuple(type(v)(s) for v, s in zip(values, t.tolist()))

    def evaluate(
        self, evaluate: Callable[..., dict[str, Any]], model: nn.Module, data: ImageDataset, **kwargs: Any
    ) -> dict[str, Any]:
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


def _rank_main(fn: Callable[..., Any], args: tuple, rank: int, world_size: int, store: str, conn: Any) -> None:
    """One forked rank of :func:`run_on_ranks`: join the group, run ``fn``, send back ``(ok, value)``."""
    try:
        torch.set_num_threads(1)  # one core per rank, as torchrun's OMP_NUM_THREADS=1
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
        dist.barrier()  # every rank is connected before any can fail and close its end
        try:
            reply = (True, fn(*args))
        finally:
            dist.destroy_process_group()
    except BaseException:  # noqa: BLE001  (the parent re-raises it with the rank's traceback)
        reply = (False, traceback.format_exc())
    conn.send_bytes(pickle.dumps(reply))
    conn.close()


def run_on_ranks(fn: Callable[..., Any], *args: Any, world_size: int = 2, timeout: float = 120.0) -> list[Any]:
    """Run ``fn(*args)`` in ``world_size`` processes on this machine, joined by a ``gloo`` group; return each result.

    The ranks are forked (like a ``DataLoader``'s workers), so ``fn`` may be defined in a notebook, and each
    uses one torch thread. Inside ``fn``, ``torch.distributed.get_rank()`` and ``get_world_size()`` say
    who it is. Results come back pickled, in rank order. A small, local stand-in for ``torchrun``: use
    ``torchrun`` for real training. Needs ``fork``: Linux (Colab included) and macOS, not Windows.

    Raises:
        RuntimeError: a rank raised (its traceback is in the message) or did not finish within ``timeout`` s.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if sys.platform == "linux":
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # localhost only, also in a sandbox without network
    import torch._dynamo  # noqa: F401  (DDP's constructor and optimizers import it: once here, not in every rank)

    ctx = mp.get_context("fork")
    folder = tempfile.mkdtemp(prefix="cnncourse-ranks-")
    store = os.path.join(folder, "store")  # the ranks meet in a file: no port to pick, none to collide
    pipes = [ctx.Pipe(duplex=False) for _ in range(world_size)]
    procs = [
        ctx.Process(target=_rank_main, args=(fn, args, r, world_size, store, pipes[r][1]), daemon=True)
        for r in range(world_size)
    ]
    for p, (_, send) in zip(procs, pipes):
        p.start()
        send.close()  # the child holds the sending end; its exit then reads as end-of-file here
    deadline, replies = time.monotonic() + timeout, [None] * world_size
    pending = {receive: r for r, (receive, _) in enumerate(pipes)}
    try:
        while pending:  # the first rank to fail is reported at once; the others are then killed
            ready = mp_connection.wait(list(pending), timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                raise RuntimeError(
                    f"rank(s) {sorted(pending.values())} of {world_size} did not finish within "
                    f"{timeout:.0f} s: is a rank waiting in a collective (all_reduce, barrier) that "
                    f"another rank never calls?"
                )
            for receive in ready:
                r = pending.pop(receive)  # type: ignore[call-overload]
                try:
                    ok, value = pickle.loads(receive.recv_bytes())  # type: ignore[union-attr]
                except EOFError:
                    raise RuntimeError(f"rank {r} of {world_size} died without a result") from None
                if not ok:
                    raise RuntimeError(f"rank {r} of {world_size} failed:\n{value}")
                replies[r] = value
    finally:
        for p in procs:
            p.join(timeout=0 if pending else 5)  # after a failure the others may wait for it forever
            if p.is_alive():
                p.kill()
                p.join()
        shutil.rmtree(folder, ignore_errors=True)
    return replies


def _shard_gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, average: Callable[[nn.Module], Any] | None
) -> dict[str, torch.Tensor]:
    r, w = dist.get_rank(), dist.get_world_size()
    net = model if average is not None else nn.parallel.DistributedDataParallel(model)
    loss = nn.functional.cross_entropy(net(torch.tensor_split(x, w)[r]), torch.tensor_split(y, w)[r])
    loss.backward()  # under DDP the all-reduce of the gradient buckets runs during this call
    if average is not None:
        average(model)
    return {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}


def data_parallel_gradients(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    average: Callable[[nn.Module], Any] | None = None,
    world_size: int = 2,
) -> list[dict[str, torch.Tensor]]:
    """The gradient each rank holds after one data-parallel backward pass, one dict per rank.

    Rank ``r`` of ``world_size`` forked processes (:func:`run_on_ranks`) takes the ``r``-th contiguous
    ``1/world_size`` of the batch ``x (N, C, H, W)``, ``y (N,)``, computes the mean cross-entropy of its
    shard and backpropagates. With ``average=None`` the model is wrapped in ``DistributedDataParallel``,
    which averages the gradients during the backward; otherwise ``average(model)`` is called after it
    and must do the averaging (this is what a lab asks students to write). With equal shards, every
    rank's result should equal the gradient of one process on the whole batch.
    """
    if len(x) % world_size:
        raise ValueError(f"the batch of {len(x)} must split into {world_size} equal shards")
    return run_on_ranks(_shard_gradients, model, x, y, average, world_size=world_size)


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
        dist.init_process_group(
            backend_for(device), init_method="env://", device_id=device if device.type == "cuda" else None
        )
        _CREATED_HERE = True
        atexit.register(_destroy)
    return Context(dist.get_rank(), dist.get_world_size(), device)


def _destroy() -> None:
    if _CREATED_HERE and dist.is_initialized():
        dist.destroy_process_group()
