"""Time forward + backward of the course's conv2d against torch's, in the same run.

Shapes (batch 128): LeNet-5's C1 (1 -> 6 channels, 5x5, on 32x32) and C3 (6 -> 16, 5x5, on
14x14), and one 3x3 layer with 64 -> 64 channels and padding 1 on 16x16 maps. The naive loop
version is timed on a small input only. Every line prints ``ratio = ours / torch``; the goal
for the vectorised version is a ratio of at most 2.

Where the time goes (``torch.profiler``, one thread): the batched matrix products, then the
im2col copies and ``F.fold``. ``cnncourse.functional.conv2d`` unfolds a chunk of images at a
time into one reused buffer of at most ``COLUMN_BYTES`` (30 MiB). A column matrix for the whole
batch of the 3x3, 64-channel layer would be 75 MB, above glibc's largest ``mmap`` threshold
(32 MiB), so every call would get fresh pages from the kernel and pay a page fault per 4 KiB
page (about 35 ms of the ~45 ms such a copy took on one core); that was most of the gap to
``F.conv2d`` (oneDNN, which never builds those matrices). What remains is mostly MKL's batched
products running at about 40 GFLOP/s where oneDNN's direct convolution gets about 60.

LeNet-5's C3 stays above 2x (2.2 to 2.5x on a 2-core AMD EPYC, December 2026): its products are
tiny (16 x 150 by 150 x 100 per image) and ``F.fold`` costs as much as a product. With two threads on a machine busier than its cores,
each op ends in a barrier that may wait for a descheduled thread, so an op-count difference
shows up in the ratio; measure that case on a quiet machine.

PyTorch's ``THP_MEM_ALLOC_ENABLE=1`` (transparent huge pages for large CPU tensors) makes page
faults rarer for any large tensor; a library must not set it in the user's process, but you may::

    THP_MEM_ALLOC_ENABLE=1 python benchmarks/bench_conv.py --threads 1

Usage::

    python benchmarks/bench_conv.py [--device cpu|cuda] [--repeats 10] [--threads 1] [--clock wall|cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Callable

import torch
import torch.nn.functional as F

from cnncourse import functional as cf
from provenance import header  # benchmarks/ is sys.path[0] when run as a script

SHAPES = {
    # name: (input shape (N, C_in, H, W), weight shape (C_out, C_in, K_h, K_w), padding)
    "lenet5-c1": ((128, 1, 32, 32), (6, 1, 5, 5), 0),
    "lenet5-c3": ((128, 6, 14, 14), (16, 6, 5, 5), 0),
    "3x3-64ch": ((128, 64, 16, 16), (64, 64, 3, 3), 1),
}
NAIVE_SHAPE = ((2, 1, 12, 12), (3, 1, 5, 5), 0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _make_step(conv: Callable, x_shape, w_shape, padding: int, device: torch.device) -> Callable[[], None]:
    """One forward + backward (grads for input, weight and bias) on fixed random tensors."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(x_shape, generator=g).to(device).requires_grad_()
    w = torch.randn(w_shape, generator=g).to(device).requires_grad_()
    b = torch.randn(w_shape[0], generator=g).to(device).requires_grad_()

    def step() -> None:
        x.grad = w.grad = b.grad = None
        out = conv(x, w, b, 1, padding)
        out.backward(torch.ones_like(out))

    return step


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def time_pair(ours: Callable, x_shape, w_shape, padding: int, device: torch.device, repeats: int,
              clock: Callable[[], float] = time.perf_counter) -> tuple[float, float]:
    """Best-of-``repeats`` seconds for ``F.conv2d`` and for ``ours``, measured interleaved.

    Interleaving and taking the minimum keep the ratio fair on a machine shared with other
    jobs: both sides see the same background load, and the minimum is the least disturbed run.
    """
    steps = [_make_step(F.conv2d, x_shape, w_shape, padding, device), _make_step(ours, x_shape, w_shape, padding, device)]
    best = [float("inf"), float("inf")]
    for step in steps:
        step()  # warm-up: allocator, kernels, lazy init
    for _ in range(repeats):
        for i, step in enumerate(steps):
            _sync(device)
            start = clock()
            step()
            _sync(device)
            best[i] = min(best[i], clock() - start)
    return best[0], best[1]


def run(device: torch.device, repeats: int, clock: str = "wall") -> dict:
    results = {**header(), "device": str(device), "thp_mem_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE", "0"),
               "clock": clock, "rows": []}
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} best of {repeats}, interleaved, "
          f"{clock} clock, THP_MEM_ALLOC_ENABLE={results['thp_mem_alloc']}, load {results['load_average_1min']}")
    print(f"{'shape':<12} {'impl':<12} {'ms':>10} {'ratio vs F.conv2d':>18}")
    cases = [(name, *spec, "vectorised", cf.conv2d) for name, spec in SHAPES.items()]
    cases.append(("naive-small", *NAIVE_SHAPE, "naive", cf.conv2d_naive))
    for name, x_shape, w_shape, padding, label, ours in cases:
        t_ref, t_ours = time_pair(ours, x_shape, w_shape, padding, device, repeats, CLOCKS[clock])
        ratio = t_ours / t_ref
        print(f"{name:<12} {'F.conv2d':<12} {t_ref * 1e3:>10.2f}")
        print(f"{name:<12} {label:<12} {t_ours * 1e3:>10.2f} {ratio:>17.2f}x")
        results["rows"].append(
            {"shape": name, "input": x_shape, "weight": w_shape, "padding": padding, "impl": label,
             "torch_ms": t_ref * 1e3, "ours_ms": t_ours * 1e3, "ratio": ratio}
        )
    return results


def _write_json(path: str, payload: dict) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, indent=2)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op CPU threads for both sides (1 avoids spin-wait stalls on a busy machine)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or this process's CPU time (steadier on a loaded machine with 1 thread)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = run(torch.device(args.device), args.repeats, args.clock)
    if args.json:
        _write_json(args.json, results)


if __name__ == "__main__":
    main()
