"""The kernel side of the autograder: a small agent that serves the grader's requests.

:func:`start` runs in each submission's kernel before any student code. It connects to
the grader's Unix socket and, in a background thread, answers requests on the student's
objects: look up a name the notebook defined, read an attribute, call, index, iterate.
Between two student cells the kernel's main thread is idle, so a test's calls run as if
the next cell had made them. Plain results go back by value and everything else by
handle (see :mod:`cnncourse.grading.rpc`).

Nothing here is trusted. A submission can replace this module, the thread or its
answers; it then only sends the grader wrong data, which the grader's own checks judge.
The tests, the check helpers and the scoring never run in this process.
"""

from __future__ import annotations

import contextlib
import importlib
import socket
import threading
from typing import Any

from cnncourse.grading.rpc import Channel, apply_op


class _KernelChannel(Channel):
    """Serves every request on the notebook's objects; ``forbid`` names are blocked during a call."""

    def __init__(self, sock: socket.socket, user_ns: dict[str, Any]) -> None:
        super().__init__(sock, trusted=False)
        self.user_ns = user_ns

    def perform(self, op: str, target: Any, args: list, forbid: list) -> Any:
        if op == "name":
            if type(target) is not str or target not in self.user_ns:
                raise NameError(f"name {target!r} is not defined")
            return self.user_ns[target]
        if op == "build":
            return _build(target, args)
        if op == "setname":
            self.user_ns[target] = args[0]
            return None
        if op == "call" and forbid:
            from cnncourse.grading.integrity import forbid_here as block

            with block(*forbid):
                return apply_op(op, target, args)
        return apply_op(op, target, args)


def _build(where: Any, args: list) -> Any:
    """Call the library factory named ``"module:qualname"`` with ``args`` = [positional list, keyword dict]."""
    module_name, _, qualname = str(where).partition(":")
    if module_name.split(".")[0] not in ("cnncourse", "torch", "torchvision"):
        raise ValueError(f"in_student_kernel builds only cnncourse or torch objects, not {where!r}")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj(*args[0], **args[1])


def _serve(channel: _KernelChannel) -> None:
    try:
        while True:
            channel.wait()
    except BaseException:  # noqa: BLE001  (the grader sees the closed socket)
        with contextlib.suppress(OSError):
            channel.sock.close()


def start(path: str, user_ns: dict[str, Any]) -> None:
    """Connect to the grader at the Unix socket ``path`` and serve its requests in a daemon thread."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    thread = threading.Thread(
        target=_serve, args=(_KernelChannel(sock, user_ns),), name="cnncourse-grader", daemon=True
    )
    thread.start()
