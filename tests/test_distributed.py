"""Data-parallel ``fit``: the sharding is a partition, and 2 gloo ranks x batch 64 train like 1 process x batch 128.

The equivalence test starts two real processes on localhost with the environment ``torchrun`` would
give them (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) and calls the unchanged
``train.fit``. A third run in the same processes skips DDP's all-reduce, to show that the comparison
notices when the ranks stop averaging.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket

import pytest
import torch
import torch.distributed
import torch.nn as nn

from cnncourse import distributed, models, train
from cnncourse.data import BatchLoader, ImageDataset

WORLD, PER_RANK, N, EPOCHS = 2, 64, 1000, 2  # 1000 = 7 full global batches of 128 + one of 104
TOL = 1e-6  # float32 summed in a different order on two processes; measured: at most 9e-8


def toy_data(n: int = N, seed: int = 0) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 12, 12), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    return ImageDataset(images, labels, [str(i) for i in range(10)], mean=0.5, std=0.29, name="toy")


def toy_model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 5 * 5, 10))


def run_fit(batch_size: int, max_batches: int | None = None, epochs: int = EPOCHS):
    """Train a fresh toy model; return its weights, the last step's gradients and the history."""
    model = toy_model()
    hist = train.fit(model, toy_data(), toy_data(200, seed=1), epochs=epochs, lr=0.05, optimizer="sgd",
                     batch_size=batch_size, seed=3, progress=False, device="cpu", max_batches=max_batches)
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters()}
    return weights, grads, hist.as_dicts()


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    first_step = run_fit(PER_RANK, max_batches=1, epochs=1)
    full = run_fit(PER_RANK)
    distributed.Context.wrap = lambda self, model: model  # no DDP: every rank steps on its own half alone
    unsynced = run_fit(PER_RANK)
    torch.save({"first_step": first_step, "full": full, "unsynced": unsynced}, f"{out}.{rank}")
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory, one_thread):
    """Results of the two gloo ranks; the processes are killed if they outlive 120 s.

    Forked like DataLoader workers, with one torch thread each (as torchrun sets OMP_NUM_THREADS=1).
    """
    out = str(tmp_path_factory.mktemp("ddp") / "rank")
    run_fit(PER_RANK, max_batches=1, epochs=1)  # the first optimizer step imports for seconds: do it once, here
    ctx = mp.get_context("fork")  # torch is already imported here: a spawned rank would spend seconds importing it
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, out)) for r in range(WORLD)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive, "the two gloo ranks did not finish within 120 s"
    assert [p.exitcode for p in procs] == [0] * WORLD, f"rank exit codes {[p.exitcode for p in procs]}"
    return [torch.load(f"{out}.{r}", weights_only=False) for r in range(WORLD)]


def test_two_ranks_of_64_equal_one_process_of_128(ranks):
    single_first = run_fit(PER_RANK * WORLD, max_batches=1, epochs=1)
    single = run_fit(PER_RANK * WORLD)
    for r in ranks:  # same gradients after one step, same weights after 2 epochs (16 steps)
        assert _max_diff(r["first_step"][1], single_first[1]) < TOL
        assert _max_diff(r["first_step"][0], single_first[0]) < TOL
        assert _max_diff(r["full"][0], single[0]) < TOL
        assert _max_diff(r["full"][1], single[1]) < TOL
    # the history is averaged over ranks: the same losses and accuracies as the single process
    for rec, ref in zip(ranks[0]["full"][2], single[2]):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert rec[key] == pytest.approx(ref[key], abs=1e-5), key


def test_without_all_reduce_the_ranks_drift(ranks):
    """The comparison above can fail: ranks that do not average their gradients end far apart."""
    single = run_fit(PER_RANK * WORLD)
    assert _max_diff(ranks[0]["unsynced"][0], single[0]) > 100 * TOL
    assert _max_diff(ranks[0]["unsynced"][0], ranks[1]["unsynced"][0]) > 100 * TOL


@pytest.mark.parametrize("n, batch, world", [(1000, 64, 2), (1001, 64, 2), (130, 16, 3), (7, 4, 4), (5, 8, 1)])
def test_shards_partition_the_permutation(n, batch, world):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    per_rank = [distributed.shard_batches(order, batch, r, world) for r in range(world)]
    steps = {len(s) for s in per_rank}
    assert len(steps) == 1, "every rank must take the same number of steps"
    everything = torch.cat([idx for shards in per_rank for idx in shards])
    usable = n - n % world
    assert len(everything) == usable and torch.equal(everything.sort().values, order[:usable].sort().values)
    for b in range(steps.pop()):
        sizes = {len(shards[b]) for shards in per_rank}
        assert len(sizes) == 1, f"step {b}: unequal shards {sizes}"
        union = torch.cat([shards[b] for shards in per_rank])
        assert torch.equal(union, order[b * batch * world:b * batch * world + len(union)])


def test_sharded_loader_splits_the_single_process_batches():
    data = toy_data(300)
    single = list(BatchLoader(data, 128, shuffle=True, seed=4))
    shards = [list(distributed.ShardedBatchLoader(data, 64, rank=r, world_size=2, seed=4)) for r in range(2)]
    assert len(single) == len(shards[0]) == len(shards[1]) == len(distributed.ShardedBatchLoader(
        data, 64, rank=0, world_size=2)) == 3
    for (x, y), (x0, y0), (x1, y1) in zip(single, *shards):
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)


def test_without_torchrun_nothing_changes(monkeypatch):
    for var in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    ctx = distributed.context(torch.device("cpu"))
    model = toy_model()
    assert (ctx.rank, ctx.world_size, ctx.is_main) == (0, 1, True) and ctx.wrap(model) is model
    assert type(ctx.loader(toy_data(10), 4, seed=0, transform=None)) is BatchLoader
    assert ctx.sum(3, 2.5) == (3, 2.5) and distributed.is_main() and not distributed.launched()
    assert distributed.backend_for(torch.device("cpu")) == "gloo"
    assert distributed.backend_for(torch.device("cuda", 0)) == "nccl"
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\), got 2"):
        distributed.shard_batches(torch.arange(4), 2, 2, 2)


def _hand_average(model: nn.Module) -> None:
    for p in model.parameters():
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad)
            p.grad /= torch.distributed.get_world_size()


def test_data_parallel_gradients_by_hand_and_by_ddp_equal_one_process(one_thread):
    model = toy_model()
    model[0].weight.requires_grad_(False)  # a frozen layer has no gradient to average
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(12, 1, 12, 12, generator=g), torch.randint(0, 10, (12,), generator=g)
    want = dict(zip(["0.bias", "4.weight", "4.bias"], torch.autograd.grad(
        nn.functional.cross_entropy(model(x), y), [p for p in model.parameters() if p.requires_grad])))
    for average, world in ((None, 2), (_hand_average, 2), (_hand_average, 3)):
        ranks = distributed.data_parallel_gradients(model, x, y, average=average, world_size=world)
        assert len(ranks) == world
        for grads in ranks:
            assert sorted(grads) == sorted(want) and _max_diff(grads, want) < TOL
    not_averaged = distributed.data_parallel_gradients(model, x, y, average=lambda m: None)
    assert _max_diff(not_averaged[0], want) > 100 * TOL  # each rank alone holds only its shard's gradient
    with pytest.raises(ValueError, match="the batch of 12 must split into 5 equal shards"):
        distributed.data_parallel_gradients(model, x, y, world_size=5)


def _fail_on_rank_1() -> int:
    if torch.distributed.get_rank() == 1:
        raise KeyError("rank one broke")
    return torch.distributed.get_rank()


def _sleep() -> None:
    import time

    time.sleep(30)


def test_run_on_ranks_reports_failures_and_hangs():
    assert distributed.run_on_ranks(torch.distributed.get_world_size, world_size=3) == [3, 3, 3]
    with pytest.raises(RuntimeError, match=r"(?s)rank 1 of 2 failed:.*KeyError: 'rank one broke'"):
        distributed.run_on_ranks(_fail_on_rank_1)
    with pytest.raises(RuntimeError, match=r"rank\(s\) \[0, 1\] of 2 did not finish within 2 s"):
        distributed.run_on_ranks(_sleep, timeout=2)


@pytest.mark.slow
def test_cli_train_under_torchrun(tmp_path):
    """`torchrun -m cnncourse train` trains on 2 ranks; rank 0 alone reports and writes the checkpoint."""
    import subprocess
    import sys
    from pathlib import Path

    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "lenet.pt"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "cnncourse", "train",
                          "lenet5", "--train-size", "512", "--batch-size", "64", "--no-progress", "--out", str(out)],
                         capture_output=True, text=True, env=env, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("final test accuracy") == 1 and run.stdout.count(f"saved {out}") == 1
    assert out.is_file() and train.load_checkpoint(out, models.lenet5())["epochs"] == 1
