"""Shared fixtures. Tests that need MNIST use the folder named by $CNNCOURSE_DATA."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "book: needs the built book in _build/html (run after `make book`)")
    config.addinivalue_line("markers", "slow: trains a model or runs a subprocess for tens of seconds; "
                                       "deselect with -m 'not slow' for a quick loop")
    # Only this test process draws off-screen; never export MPLBACKEND, which kernels would inherit.
    import matplotlib

    matplotlib.use("Agg")
    config.addinivalue_line("markers", "loaded: grades a lab while spinners load every core (select with -m loaded)")
    config.addinivalue_line("markers", "mutants: runs every lab's mutant suite (minutes); `make mutants` runs it, "
                                       "`make unit` leaves it out")
    config.addinivalue_line("markers", "heavy: many minutes of CPU (the slowest lab graded under load); "
                                       "`make heavy` runs it, `make unit` leaves it out")


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared data folder; a missing one is a failure, not a skip (CI must have it)."""
    root = os.environ.get("CNNCOURSE_DATA")
    assert root, "set CNNCOURSE_DATA to the folder holding MNIST/raw and FashionMNIST/raw (CI: ../shared/data)"
    return Path(root)


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests on one torch thread, restoring the count afterwards.

    On a shared, oversubscribed CPU, intra-op threads spin-wait on each other and small
    convolutions run tens of times slower; one thread is also deterministic.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def mnist_train(data_root):
    from cnncourse.data import load_dataset

    return load_dataset("mnist", "train", root=data_root)


def processes_with(marker: str) -> list[int]:
    """PIDs of the running processes whose command line contains ``marker`` (read from ``/proc``).

    The grading tests start a child with a unique marker in its arguments, then check that
    nothing carrying it outlives the kernel.
    """
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:  # the process ended while we looked
            pass
    return found
