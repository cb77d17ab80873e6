"""Time forward + backward of the course's recurrent layers against torch.nn.RNN/LSTM/GRU, in the same run.

The batch is sequential MNIST: 128 images read row by row, 28 steps of 28 pixels, hidden size 128,
followed by a linear classifier on the last state and a cross-entropy loss. Both sides get the
same weights (ours are loaded from torch's module). The step-by-step autograd version of the
Elman layer (``elman_rnn_naive``) is timed too, to show what the hand-written BPTT buys.
Every line prints ``ratio = ours / torch``; the goal for the batch-vectorised versions is at most 3.

Usage::

    python benchmarks/bench_rnn.py [--device cpu|cuda] [--repeats 10] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnncourse import recurrent as rec
from cnncourse.models.rnn import GRU, LSTM, RNN
from provenance import header  # benchmarks/ is sys.path[0] when run as a script

BATCH, STEPS, INPUT, HIDDEN = 128, 28, 28, 128


class _NaiveElman(nn.Module):
    """The Elman layer through ``elman_rnn_naive``: a Python loop that autograd differentiates."""

    def __init__(self, layer: RNN) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x):
        out, h = rec.elman_rnn_naive(x, x.new_zeros(x.shape[0], HIDDEN), *self.layer._weights(0))
        return out, h.unsqueeze(0)


def _make_step(layer: nn.Module, head: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        layer.zero_grad(set_to_none=True)
        x.grad = None
        out, _ = layer(x)
        F.cross_entropy(head(out[:, -1]), y).backward()
    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_pair(ours: Callable[[], None], ref: Callable[[], None], device: torch.device, repeats: int):
    """Best-of-``repeats`` seconds for ``ref`` and ``ours``, interleaved so both see the same background load."""
    best_ref = best_ours = float("inf")
    ours(), ref()  # warm-up
    for _ in range(repeats):
        for fn, which in ((ref, "ref"), (ours, "ours")):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            took = time.perf_counter() - start
            if which == "ref":
                best_ref = min(best_ref, took)
            else:
                best_ours = min(best_ours, took)
    return best_ref, best_ours


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", default=None, help="also write the results here (atomically)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, STEPS, INPUT, generator=g).to(device).requires_grad_()
    y = torch.randint(0, 10, (BATCH,), generator=g).to(device)
    head = nn.Linear(HIDDEN, 10).to(device)
    results = []
    cases = [("rnn (hand-written BPTT)", RNN, nn.RNN, None), ("rnn (autograd loop)", RNN, nn.RNN, _NaiveElman),
             ("lstm", LSTM, nn.LSTM, None), ("gru", GRU, nn.GRU, None)]
    print(f"batch {BATCH}, {STEPS} steps of {INPUT}, hidden {HIDDEN}, device {device}, "
          f"threads {torch.get_num_threads()}, best of {args.repeats}")
    for name, ours_cls, ref_cls, wrap in cases:
        torch.manual_seed(0)
        ref = ref_cls(INPUT, HIDDEN, batch_first=True).to(device)
        ours = ours_cls(INPUT, HIDDEN, batch_first=True).to(device)
        ours.load_state_dict(ref.state_dict())
        ours_layer = wrap(ours) if wrap else ours
        t_ref, t_ours = time_pair(_make_step(ours_layer, head, x, y), _make_step(ref, head, x, y), device,
                                  args.repeats)
        row = {"layer": name, "torch_ms": 1e3 * t_ref, "ours_ms": 1e3 * t_ours, "ratio": t_ours / t_ref}
        results.append(row)
        print(f"{name:<24} torch {row['torch_ms']:7.2f} ms   ours {row['ours_ms']:7.2f} ms   "
              f"ratio = {row['ratio']:.2f}")
    if args.json:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(args.json)) or ".")
        with os.fdopen(fd, "w") as f:
            json.dump({**header(argv), "device": str(device), "results": results}, f, indent=1)
        os.replace(tmp, args.json)
    return results


if __name__ == "__main__":
    main()
