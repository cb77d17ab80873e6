"""Measuring a kernel's CPU time from the outside, and stopping it when a limit is used up.

The meter reads every process in the kernel's process group plus every descendant of the
launched process (``/proc`` on Linux, psutil elsewhere), which also covers a kernel inside a
sandbox with its own PID namespace, or a child that called ``setsid``. The limits themselves
and their calibration are in :mod:`cnncourse.grading.limits`.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Callable

POLL_S = 0.5  # how often the watchdog reads the CPU meter (a scan of /proc costs ~10 ms)
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class CpuLimitExceeded(Exception):
    """A cell used up its CPU-time limit (per cell, or what was left of the whole submission's)."""


def _proc_table() -> dict[int, tuple[int, int, float]] | None:
    """``pid -> (ppid, pgrp, CPU seconds of the process, its threads and its reaped children)`` from ``/proc``."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return None
    table = {}
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                raw = f.read()
        except OSError:  # the process exited meanwhile
            continue
        # Fields after the command name (which may contain spaces and parentheses), see proc(5):
        # state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime
        rest = raw[raw.rfind(b")") + 2 :].split()
        ticks = int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
        table[int(name)] = (int(rest[1]), int(rest[2]), ticks / _TICK)
    return table


def _members(table: dict[int, tuple[int, int, float]], root: int, pgid: int | None, extra: tuple = ()) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [pid for pid in (root, *extra) if pid in table]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    if pgid:
        found |= {pid for pid, (_, pgrp, _) in table.items() if pgrp == pgid}
    return found


def tree_pids(root: int, pgid: int | None = None, extra: tuple = ()) -> set[int]:
    """Live pids of ``root``, its descendants and the members of process group ``pgid`` (and of ``extra``'s trees)."""
    table = _proc_table()
    if table is not None:
        return _members(table, root, pgid, extra)
    import psutil

    try:
        proc = psutil.Process(root)
        return {root} | {p.pid for p in proc.children(recursive=True)}
    except psutil.Error:
        return set()


def tree_cpu_seconds(root: int, pgid: int | None = None, extra: tuple = ()) -> float:
    """User + system CPU seconds of ``root``, its descendants and process group ``pgid``, reaped children included.

    Reference: proc(5), ``/proc/[pid]/stat`` fields utime, stime, cutime and cstime.
    """
    table = _proc_table()
    if table is not None:
        return sum(table[pid][2] for pid in _members(table, root, pgid, extra))
    import psutil

    total = 0.0
    try:
        procs = [psutil.Process(root)]
        procs += procs[0].children(recursive=True)
    except psutil.Error:
        return 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def kill_tree(root: int, pgid: int | None = None, extra: tuple = ()) -> None:
    """SIGKILL the process group ``pgid`` and every descendant of ``root`` (for those that left the group)."""
    pids = tree_pids(root, pgid, extra)
    if pgid:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class CpuMeter:
    """CPU seconds used so far by a kernel's processes; never decreases (a child reaped outside is not lost)."""

    def __init__(self, root: int, pgid: int | None = None) -> None:
        self.root, self.pgid, self._peak = root, pgid, 0.0
        # More trees to count: a kernel forked into its sandbox (cnncourse.grading.zygote) is no descendant of root.
        self.extra: tuple[int, ...] = ()
        self._lock = threading.Lock()

    def read(self) -> float:
        value = tree_cpu_seconds(self.root, self.pgid, self.extra)
        with self._lock:
            self._peak = max(self._peak, value)
            return self._peak


class Watchdog:
    """While a cell runs, poll ``meter`` and call ``on_exceed`` once it has used ``limit_s`` CPU seconds.

    Use as a context manager around the wait for the cell; ``tripped`` says whether it fired
    and ``used`` how many CPU seconds the cell took.
    """

    def __init__(self, meter: CpuMeter, limit_s: float, on_exceed: Callable[[], None]) -> None:
        self.meter, self.limit_s, self.on_exceed = meter, limit_s, on_exceed
        self.tripped, self.used = False, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="cnncourse-cpu-watchdog", daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            self.used = self.meter.read() - self._start
            if self.used >= self.limit_s:
                self.tripped = True
                self.on_exceed()
                return

    def __enter__(self) -> Watchdog:
        self._start = self.meter.read()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.used = self.meter.read() - self._start
