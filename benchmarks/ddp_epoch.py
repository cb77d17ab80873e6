"""Seconds per epoch of ResNet-20 on CIFAR-sized images: one process against two gloo ranks on this CPU.

Usage: ``python benchmarks/ddp_epoch.py [--samples 1536]`` writes ``book/results/ddp_epoch.json``, which
the chapter "Training on more than one device" reads. It runs ``train.fit`` three ways, each in a fresh
process: one process with 2 threads and with 1 thread (batch 128), and ``torchrun --nproc-per-node 2``
(batch 64 per rank, the same effective batch of 128, one thread per rank, as torchrun sets). Each run
trains one warm-up epoch and one timed epoch on ``--samples`` random 3x32x32 images (the time does not
depend on what the pixels show), recording wall time and the CPU time of all ranks together (on a shared
machine the wall time grows with the load, the CPU time much less). The time is then scaled to a 50,000-image
epoch. The two-rank run also times ``all_reduce`` of a tensor as large as ResNet-20's gradient, the
communication that DDP adds to every step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "book" / "results" / "ddp_epoch.json"
FULL_EPOCH = 50_000


def worker(samples: int, batch_size: int, result: str) -> None:
    """One run of ``fit`` (under torchrun when launched by it); rank 0 writes ``result``."""
    import torch
    import torch.distributed as dist

    from cnncourse import distributed, models, train
    from cnncourse.data import ImageDataset

    g = torch.Generator().manual_seed(0)
    data = ImageDataset(torch.randint(0, 256, (samples, 3, 32, 32), dtype=torch.uint8, generator=g),
                        torch.randint(0, 10, (samples,), generator=g), [str(i) for i in range(10)], 0.5, 0.25)
    model = models.cifar_resnet(20, in_channels=3)
    kwargs = dict(lr=0.1, optimizer="sgd", batch_size=batch_size, device="cpu", progress=False)
    train.fit(model, data, epochs=1, seed=0, **kwargs)  # warm-up: first-use imports, allocator, caches
    cpu = time.process_time()
    hist = train.fit(model, data, epochs=1, seed=1, **kwargs)
    cpu = time.process_time() - cpu
    world = dist.get_world_size() if dist.is_initialized() else 1
    if world > 1:
        cpu = distributed.Context(dist.get_rank(), world).sum(cpu)[0]
    row = {"ranks": world, "threads_per_rank": torch.get_num_threads(), "batch_per_rank": batch_size,
           "samples_per_epoch": samples - samples % world, "epoch_seconds": hist.last["seconds"],
           "cpu_seconds_all_ranks": cpu, "train_loss": round(hist.last["train_loss"], 4)}
    if world > 1:
        n_params = sum(p.numel() for p in model.parameters())
        grad = torch.ones(n_params)
        for _ in range(3):
            dist.all_reduce(grad)
        dist.barrier()
        start, reps = time.perf_counter(), 30
        for _ in range(reps):
            dist.all_reduce(grad)
        row["allreduce_ms"] = (time.perf_counter() - start) / reps * 1e3
        row["allreduce_mb"] = n_params * 4 / 1e6
    row["steps"] = -(-row["samples_per_epoch"] // (batch_size * world))
    row["full_epoch_seconds"] = row["epoch_seconds"] / row["samples_per_epoch"] * FULL_EPOCH
    row["full_epoch_cpu_seconds"] = cpu / row["samples_per_epoch"] * FULL_EPOCH
    if distributed.is_main():
        Path(result).write_text(json.dumps(row))


def run(cmd: list[str], env: dict[str, str], result: Path) -> dict:
    subprocess.run(cmd, env=env, check=True, cwd=ROOT)
    return json.loads(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1536, help="images per epoch (scaled to 50,000 after)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=128, help=argparse.SUPPRESS)
    parser.add_argument("--result", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.worker:
        worker(args.samples, args.batch_size, args.result)
        return

    sys.path.insert(0, str(Path(__file__).parent))
    from provenance import header

    from cnncourse.io import atomic_write_bytes

    me = [str(Path(__file__).resolve()), "--worker", "--samples", str(args.samples)]
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}
    load_before = round(os.getloadavg()[0], 2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmd, threads in [
            ("1 process, 2 threads", [sys.executable, *me, "--batch-size", "128"], "2"),
            ("1 process, 1 thread", [sys.executable, *me, "--batch-size", "128"], "1"),
            ("2 gloo ranks, 1 thread each", [torchrun, "--nproc-per-node", "2", "--master-port", "29533",
                                             *me, "--batch-size", "64"], "1"),
        ]:
            result = Path(tmp) / "row.json"
            started = time.perf_counter()
            row = run([*cmd, "--result", str(result)], {**env, "OMP_NUM_THREADS": threads}, result)
            row.update(name=name, wall_seconds=round(time.perf_counter() - started, 1))
            print(f"{name:<30} {row['epoch_seconds']:6.2f} s for {row['samples_per_epoch']} images "
                  f"-> {row['full_epoch_seconds']:6.0f} s per 50k epoch ({row['full_epoch_cpu_seconds']:.0f} CPU-s)",
                  flush=True)
            rows.append(row)
    results = {**header(), "load_average_1min_before": load_before,
               "load_average_1min_after": round(os.getloadavg()[0], 2), "full_epoch": FULL_EPOCH,
               "model": "cifar_resnet(20, in_channels=3), 269,722 parameters", "rows": rows}
    atomic_write_bytes(args.out, (json.dumps(results, indent=2) + "\n").encode())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
