"""A student's kernel: a fresh IPython kernel per submission, sandboxed, with the grading agent already running.

:class:`Kernel` starts ``ipykernel`` (inside bubblewrap, see :mod:`cnncourse.grading.sandbox`)
with the grading agent (:mod:`cnncourse.grading.runner`) in its start-up code, so the agent
imports torch and connects to the grader's socket before the kernel answers its first
request, and before any student code. Start-up is split in two: :meth:`Kernel.__init__`
spawns the process (milliseconds) and :meth:`Kernel.connect` waits for it and takes the
agent's connection. A batch therefore starts the next submission's kernel while the current
one is graded (:class:`Spare`): most of a kernel's start-up (``import torch``) then overlaps
with grading. A kernel still serves exactly one submission: a spare is handed out once and
only to a submission whose sandbox would be identical (:func:`launch_key`).
"""

from __future__ import annotations

import math
import os
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any, Callable

import nbformat

from cnncourse.grading import limits as _limits
from cnncourse.grading.harness import GraderChannel

_AGENT = "__import__('cnncourse.grading.runner', fromlist=['start']).start({path!r}, get_ipython().user_ns)"


def kernel_env() -> dict[str, str]:
    """The environment of a student's kernel: the grader's, less the course secret, with one thread.

    The kernel inherits ``PYTHONPATH`` (so a development checkout of ``cnncourse`` is the one
    imported) and gets an absolute ``CNNCOURSE_DATA``.
    """
    # OMP_WAIT_POLICY=PASSIVE: a lab that asks for 2 threads on a busy machine would otherwise spin-wait
    # for a descheduled thread, burning CPU time that counts against its limit (measured: 12x the CPU time).
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        MPLBACKEND="Agg",
        PYDEVD_DISABLE_FILE_VALIDATION="1",
        PYTHONHASHSEED="0",
        OMP_WAIT_POLICY="PASSIVE",
    )
    env.pop("CNNCOURSE_SECRET", None)
    if env.get("CNNCOURSE_DATA"):
        # The kernel runs in a temporary folder: a relative data path would point nowhere.
        env["CNNCOURSE_DATA"] = os.path.abspath(env["CNNCOURSE_DATA"])
    return env


def _limit_memory(memory_mb: int | None) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if memory_mb:
            nbytes = int(memory_mb) * 2**20
            resource.setrlimit(resource.RLIMIT_DATA, (nbytes, nbytes))

    return apply


def launch_key(limits: Any, hide: list | None) -> tuple:
    """What a kernel's start depends on: its memory limit and sandbox mounts (``hide=None``: no sandbox).

    Two submissions with the same key get identical kernels, so a kernel started for one may serve the other.
    """
    from cnncourse.grading import sandbox

    return (limits.memory_mb, None if hide is None else tuple(sandbox.mounts(hide)))


class Kernel:
    """A kernel for one submission, driven through nbclient, that keeps no student output.

    Args:
        limits: an :class:`~cnncourse.grading.autograde.Limits` (its ``memory_mb`` is applied).
        workdir: the kernel's working folder; ``None`` makes a private one, removed by :meth:`kill`.
        deadline: ``time.monotonic()`` by which the kernel must be ready; ``None``: do not wait here
            (spawn only, :meth:`connect` waits).
        hide: paths the sandbox hides (:func:`cnncourse.grading.sandbox.hidden_paths`); ``None``: no sandbox.
    """

    def __init__(
        self, limits: Any, workdir: str | None = None, deadline: float | None = None, hide: list | None = None
    ) -> None:
        from jupyter_client import AsyncKernelManager
        from nbclient import NotebookClient

        from cnncourse.grading import sandbox

        class Client(NotebookClient):
            def output(self, outs: Any, msg: dict[str, Any], display_id: Any, cell_index: int) -> None:
                # Outputs are dropped as they arrive: a 100 MB print costs no memory here, and
                # nothing the student's kernel prints is read by the grader.
                return None

        self.key = launch_key(limits, hide)
        self.forked = False  # True: the kernel is forked from this process's zygote into its sandbox
        self.own_workdir = workdir is None
        self.workdir = tempfile.mkdtemp(prefix="cnncourse-grade-") if workdir is None else str(workdir)
        # IPC sockets in a private folder instead of TCP on localhost, which other users could reach.
        self.sockets = tempfile.mkdtemp(prefix="cnncourse-kernel-")
        self.ready = False
        self.agent = os.path.join(self.sockets, "grader.sock")
        self.server: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.agent)
        self.server.listen(1)  # before the kernel starts: its agent connects during start-up
        if hide is None:
            self.km = AsyncKernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(self.sockets, "k"))
        else:  # sandboxed: the connection file sits with the sockets, the only folder shared with the kernel
            from cnncourse.grading import zygote

            self.forked = zygote.available()
            # The forked kernel writes its PID here; the holder waits for it, then for its end.
            self.pidfile = os.path.join(os.path.realpath(self.sockets), "kernel.pid")
            self.km = sandbox.kernel_manager(
                sandbox.bwrap_prefix(self.workdir, self.sockets, hide),
                kernel_name="python3",
                transport="ipc",
                ip=os.path.join(self.sockets, "k"),
                connection_file=os.path.join(self.sockets, "kernel.json"),
                holder=[*zygote.HOLDER, self.pidfile] if self.forked else None,
            )
        self.reply: dict[str, Any] = {}
        self.client = Client(
            nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("")]),
            km=self.km,
            allow_errors=True,
            iopub_timeout=10,
            shutdown_kernel="immediate",
            # IPython runs exec_lines before it answers any request: the agent starts before student code.
            extra_arguments=[f"--IPKernelApp.exec_lines={_AGENT.format(path=self.agent)}"],
        )
        self.client.on_cell_executed = self._on_executed
        try:
            self.client.start_new_kernel(
                cwd=self.workdir,
                env=kernel_env(),
                preexec_fn=_limit_memory(limits.memory_mb),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            provisioner: Any = self.km.provisioner  # a LocalProvisioner: it has the process
            self.process = provisioner.process
            self.meter = _limits.CpuMeter(provisioner.process.pid, getattr(provisioner, "pgid", None))
            if self.forked:
                self.meter.extra = (self._fork_into_sandbox(limits),)
            if deadline is not None:
                self.wait_ready(deadline - time.monotonic())
        except BaseException as exc:
            self.kill()
            from cnncourse.grading import zygote

            if isinstance(exc, zygote.SpawnError):  # no zygote from now on in this process: start fresh
                self.__init__(limits, workdir, deadline, hide)  # type: ignore[misc]
                return
            raise

    def _fork_into_sandbox(self, limits: Any) -> int:
        """Have the zygote fork the kernel into the sandbox that ``bwrap`` (running the holder) has set up; its PID."""
        from cnncourse.grading import sandbox, zygote

        env = kernel_env()
        env.pop("JPY_PARENT_PID", None)
        env.update(sandbox.kernel_setenv(self.workdir))
        argv = [
            "-f",
            os.path.realpath(self.km.connection_file),
            f"--IPKernelApp.exec_lines={_AGENT.format(path=self.agent)}",
        ]
        request = {
            "env": env,
            "workdir": os.path.realpath(self.workdir),
            "argv": argv,
            "memory_mb": limits.memory_mb,
            "pidfile": self.pidfile,
        }
        return zygote.shared(kernel_env()).spawn(zygote.holder_pid(self.process.pid), request)

    def alive(self) -> bool:
        """Whether the kernel's process (``bwrap`` in the sandbox) is still running."""
        return self.process.poll() is None

    def wait_ready(self, timeout: float) -> None:
        """Wait at most ``timeout`` seconds for the kernel to answer (its start-up code, the agent, has run)."""
        if not self.ready:
            self.client.startup_timeout = max(1, int(min(120, timeout)))
            self.client.start_new_kernel_client()
            self.ready = True

    def _on_executed(self, cell: Any, cell_index: int, execute_reply: dict[str, Any]) -> None:
        self.reply = execute_reply.get("content", {})

    def run(self, source: str, timeout: float, cpu: float | None = None) -> dict[str, Any]:
        """Execute ``source`` within ``timeout`` wall seconds and ``cpu`` CPU seconds; return the reply content.

        Raises:
            CpuLimitExceeded: when the kernel's processes used ``cpu`` seconds (they are killed).
            nbclient.exceptions.CellTimeoutError: when ``timeout`` wall seconds passed.
        """
        from nbclient.exceptions import DeadKernelError

        self.wait_ready(timeout)
        self.client.timeout = max(1, math.ceil(timeout))
        self.reply = {}
        with self.watchdog(cpu) as watchdog:
            try:
                self.client.execute_cell(nbformat.v4.new_code_cell(source), 0, store_history=False)
            except DeadKernelError:
                if watchdog.tripped:
                    raise _limits.CpuLimitExceeded(f"{watchdog.used:.1f} s of CPU time") from None
                raise
        return self.reply

    def watchdog(self, cpu: float | None) -> _limits.Watchdog:
        """A watchdog that kills the kernel's processes (the sandbox's too) once they used ``cpu`` more CPU seconds.

        Wrapped around every wait for the kernel: a student cell, and a trusted test's calls into the kernel.
        """
        meter = self.meter
        return _limits.Watchdog(
            meter, math.inf if cpu is None else cpu, lambda: _limits.kill_tree(meter.root, meter.pgid, meter.extra)
        )

    def connect(self, timeout: float) -> GraderChannel:
        """Wait for the kernel and return the grader's end of the agent's socket (once per kernel).

        Raises:
            RuntimeError: when the agent did not start (its error, as the kernel reports it).
        """
        start = time.monotonic()
        self.wait_ready(timeout)
        server, self.server = self.server, None
        if server is None:
            raise RuntimeError("the grading agent is connected already")
        try:
            # The agent connected during start-up, before the kernel answered: the connection is waiting.
            server.settimeout(1.0)
            try:
                conn, _ = server.accept()
            except socket.timeout:  # it failed: start it as a cell, which reports why
                left = max(1.0, timeout - (time.monotonic() - start))
                reply = self.run(_AGENT.format(path=self.agent), left)
                if reply.get("status") != "ok":
                    raise RuntimeError(
                        f"the grading agent did not start: {reply.get('ename')}: {reply.get('evalue')}"
                    ) from None
                server.settimeout(left)
                conn, _ = server.accept()
        finally:
            server.close()
        conn.settimeout(None)
        return GraderChannel(conn)

    def kill(self) -> None:
        """Kill the kernel's process group (its children too) and release its files."""
        if self.server is not None:
            self.server.close()
            self.server = None
        pgid = getattr(self.km.provisioner, "pgid", None) if self.km.provisioner else None
        try:
            if self.client.kc is not None:
                self.client.kc.stop_channels()
        except Exception:  # noqa: BLE001
            pass
        if pgid:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        from nbclient.util import run_sync

        try:
            run_sync(self.km.shutdown_kernel)(now=True)
        except Exception:  # noqa: BLE001
            pass
        shutil.rmtree(self.sockets, ignore_errors=True)
        if self.own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


class Spare:
    """At most one kernel started ahead of time for the next submission of a batch.

    :meth:`take` hands it out once, and only for a submission whose kernel would be started
    the same way (same :func:`launch_key`); otherwise it is killed and the caller starts a fresh one.
    """

    def __init__(self) -> None:
        self.kernel: Kernel | None = None

    def start(self, limits: Any, hide: list | None) -> None:
        """Start a kernel now (replacing any unused one); a failure leaves none (the next submission starts its own)."""
        self.close()
        try:
            self.kernel = Kernel(limits, None, None, hide)
        except Exception:  # noqa: BLE001  (the next submission's own start reports the error)
            self.kernel = None

    def take(self, limits: Any, hide: list | None) -> Kernel | None:
        """The spare kernel if it was started for a submission like this one and still runs, else ``None``."""
        kernel, self.kernel = self.kernel, None
        if kernel is None:
            return None
        if kernel.key != launch_key(limits, hide) or not kernel.alive():
            kernel.kill()
            return None
        return kernel

    def close(self) -> None:
        """Kill the unused kernel, if any."""
        kernel, self.kernel = self.kernel, None
        if kernel is not None:
            kernel.kill()
