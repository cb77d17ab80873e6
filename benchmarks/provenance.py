"""The provenance header every experiment script writes at the top of its results file.

One helper, so every results file records the same keys the same way: the command, the UTC date,
the machine, the torch thread count and the load average (a shared machine makes timings noisy;
the load says how much).

Usage (scripts run as ``python benchmarks/<name>.py``, so this folder is on ``sys.path``)::

    from provenance import header, now_utc
    results = {**header(), "rows": ...}
    results["updated"] = now_utc()

``argv``: a script whose ``main(argv)`` is called with its own arguments passes them, so that
``command`` is the command line that would repeat the run.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import sys


def now_utc() -> str:
    """The current UTC time, ISO 8601 to the second: every time stamp in a results file (``updated`` ...)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def header(argv: list[str] | None = None) -> dict[str, object]:
    """``command``, ``date`` (UTC, ISO 8601), ``machine``, ``cpu_count``, ``torch``, ``threads``, ``load_average_1min``."""
    import torch

    args = sys.argv if argv is None else [sys.argv[0], *argv]
    return {
        "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(args[0]), *args[1:]]),
        "date": now_utc(),
        "machine": f"{platform.machine()} {platform.processor()}".strip(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def print_header(argv: list[str] | None = None) -> dict[str, object]:
    """Print :func:`header` as one line (for scripts that only print) and return it."""
    prov = header(argv)
    print("; ".join(f"{key}: {value}" for key, value in prov.items()), flush=True)
    return prov
