"""Student kernels forked from a template process that has already imported torch.

A kernel's start costs about 3.5 s of CPU, and ``import torch`` is most of it. On a machine
where every core grades (``--jobs`` equal to the cores), starting the next kernel ahead hides
none of that. A :class:`Zygote` pays it once per grading process: it imports torch, ipykernel
and the grading agent, then forks one kernel per submission.

Each kernel still gets its own bubblewrap sandbox. The grader starts ``bwrap`` exactly as
for a fresh kernel (:func:`cnncourse.grading.sandbox.bwrap_prefix`), but with a small
*holder* command instead of Python. The zygote's child then joins that sandbox:
it enters the holder's namespaces (mount, PID, network, IPC, UTS, cgroup) and its root
(``setns(2)``, ``chroot``), forks the kernel inside the sandbox's PID namespace, and the
kernel drops every capability and sets ``no_new_privs`` (what ``bwrap --cap-drop ALL``
leaves) before it runs anything of the student's. The holder exits when the kernel does,
so ``bwrap`` and its PID namespace end with the kernel, and the grader kills the whole
sandbox by killing ``bwrap``, as before.

What a forked kernel shares with the zygote is its memory at the time of the fork: the
imported modules. The zygote runs with the kernel's environment (no course secret), never
runs student code, and never holds a submission: it forks before the kernel learns
anything. Its heap may still hold earlier requests: folder paths of other kernels (hidden by their
sandboxes), never a connection key (each kernel reads its own connection file after the fork).
Every file descriptor but the standard three is closed in the kernel.

Needs Linux, and the right to enter namespaces (root, like bubblewrap here); where that is
missing, :func:`available` is false and kernels start fresh.

Reference: setns(2), capabilities(7) and PR_SET_NO_NEW_PRIVS in prctl(2), https://man7.org/linux/man-pages/
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

# Namespaces to join, in this order: the mount namespace last, because it also moves the root.
_NAMESPACES = (
    ("cgroup", 0x02000000),
    ("ipc", 0x08000000),
    ("uts", 0x04000000),
    ("net", 0x40000000),
    ("pid", 0x20000000),
    ("mnt", 0x00020000),
)
_PR_SET_PDEATHSIG, _PR_CAPBSET_DROP, _PR_SET_NO_NEW_PRIVS, _PR_CAP_AMBIENT = 1, 24, 38, 47
_CAP_VERSION_3 = 0x20080522

# The holder: waits for the kernel to write its PID (in the sandbox's PID namespace), then for it to end.
HOLDER = [
    "/bin/sh",
    "-c",
    'while [ ! -s "$1" ]; do sleep 0.02; done; read p < "$1"; exec tail -s 0.1 --pid="$p" -f /dev/null',
    "holder",
]


class SpawnError(RuntimeError):
    """The zygote could not start a kernel (this process then starts kernels fresh)."""


_BROKEN = False


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _enter(holder: int) -> None:
    """Join the namespaces and the root folder of process ``holder`` (the PID namespace: for children)."""
    libc = _libc()
    fds = [
        (os.open(f"/proc/{holder}/ns/{name}", os.O_RDONLY), flag, name)
        for name, flag in _NAMESPACES
        if os.path.exists(f"/proc/{holder}/ns/{name}")
    ]
    root = os.open(f"/proc/{holder}/root", os.O_RDONLY | os.O_DIRECTORY)
    for fd, flag, name in fds:
        _check(libc.setns(fd, flag), f"setns({name})")
        os.close(fd)
    os.fchdir(root)
    os.chroot(".")
    os.close(root)


def _drop_privileges() -> None:
    """No capabilities, none to regain (bounding and ambient sets empty, ``no_new_privs``)."""
    libc = _libc()
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
    libc.prctl(_PR_CAP_AMBIENT, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    header = (ctypes.c_uint32 * 2)(_CAP_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: twice 32 bits each, all zero
    _check(libc.capset(header, data), "capset")
    with open("/proc/self/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    if any(int(status[k].strip(), 16) for k in ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb")):
        raise OSError("capabilities were not dropped")


def _kernel(request: dict[str, Any]) -> None:
    """In the forked kernel (inside the sandbox): become an unprivileged process and run ipykernel."""
    import resource
    import tempfile as _tempfile

    os.setsid()
    _drop_privileges()
    for sig in (signal.SIGCHLD, signal.SIGPIPE, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if request.get("memory_mb"):
        nbytes = int(request["memory_mb"]) * 2**20
        resource.setrlimit(resource.RLIMIT_DATA, (nbytes, nbytes))
    os.closerange(3, 65536)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["workdir"])
    _tempfile.tempdir = None  # the zygote's choice: TMPDIR is the kernel's own folder now
    with open(request["pidfile"] + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(request["pidfile"] + ".tmp", request["pidfile"])
    sys.argv = ["ipykernel_launcher", *request["argv"]]
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]
    from ipykernel import kernelapp

    kernelapp.launch_new_instance(argv=request["argv"])
    os._exit(0)


def _spawn(conn: socket.socket, request: dict[str, Any]) -> None:
    """In the zygote's child: join the sandbox, fork the kernel into it, report its PID, exit."""
    try:
        _enter(int(request["holder"]))
        pid = os.fork()
        if pid == 0:
            try:
                conn.close()
                _kernel(request)
            finally:
                os._exit(70)
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    except BaseException as exc:  # noqa: BLE001  (reported to the grader, which starts a fresh kernel)
        conn.sendall(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode() + b"\n")
    finally:
        os._exit(0)


def _read_line(conn: socket.socket) -> bytes:
    """One newline-ended message (or what came before the peer closed)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _reap(signum: int, frame: Any) -> None:
    """Reap every ended child (the forked helpers and the kernels re-parented here)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def serve(path: str) -> None:
    """The zygote's main loop: import what every kernel imports, then fork one kernel per request on ``path``."""
    libc = _libc()
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # dies with the grader
    # A kernel's parent (the forked helper) exits at once: the kernel is re-parented here, not to init,
    # and reaped here when its sandbox ends.
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    signal.signal(signal.SIGCHLD, _reap)
    import ipykernel.kernelapp  # noqa: F401
    import torch  # noqa: F401

    import cnncourse.grading.runner  # noqa: F401

    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)
    print("ready", flush=True)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # the kernels inherit these: nothing they write may reach the grader's pipe
        os.dup2(devnull, fd)
    os.close(devnull)
    while True:
        conn, _ = server.accept()
        with conn:
            data = _read_line(conn)
            try:
                request = json.loads(data)
            except ValueError:
                continue
            pid = os.fork()
            if pid == 0:
                server.close()
                _spawn(conn, request)


class Zygote:
    """The grader's handle on one zygote process (started on first use, killed with :meth:`close`)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.folder = tempfile.mkdtemp(prefix="cnncourse-zygote-")  # 0700: only the grader reaches the socket
        self.path = os.path.join(self.folder, "zygote.sock")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cnncourse.grading.zygote", self.path],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.ready = False

    def wait_ready(self, timeout: float) -> None:
        if self.ready:
            return
        import select

        assert self.process.stdout is not None
        if not select.select([self.process.stdout], [], [], timeout)[0] or self.process.stdout.readline() != b"ready\n":
            raise RuntimeError("the kernel zygote did not start")
        self.ready = True

    def spawn(self, holder: int, request: dict[str, Any], timeout: float = 60) -> int:
        """Fork a kernel into the sandbox of process ``holder``; return its PID (as the grader sees it)."""
        global _BROKEN
        try:
            self.wait_ready(timeout)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(timeout)
                conn.connect(self.path)
                conn.sendall(json.dumps({**request, "holder": holder}).encode() + b"\n")
                data = _read_line(conn)
            reply = json.loads(data or b"{}")
        except (OSError, ValueError, RuntimeError) as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        if "pid" not in reply:
            _BROKEN = True
            raise SpawnError(f"the kernel zygote could not start a kernel: {reply.get('error', 'no reply')}")
        return int(reply["pid"])

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)


def holder_pid(bwrap: int, timeout: float = 10) -> int:
    """The holder's PID: the grandchild of the ``bwrap`` process (``bwrap`` -> its PID 1 -> the holder)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{bwrap}/task/{bwrap}/children") as f:
                inner = [int(p) for p in f.read().split()]
            for pid in inner:
                with open(f"/proc/{pid}/task/{pid}/children") as f:
                    found = [int(p) for p in f.read().split()]
                if found:
                    return found[0]
        except (OSError, ValueError):
            pass
        if not os.path.exists(f"/proc/{bwrap}"):
            break
        time.sleep(0.005)
    raise SpawnError(f"the sandbox (bwrap, PID {bwrap}) did not start its holder")


_SHARED: Zygote | None = None


def shared(env: dict[str, str]) -> Zygote:
    """This process's zygote, started on first use (a new one if the last died)."""
    global _SHARED
    if _SHARED is None or not _SHARED.alive():
        if _SHARED is not None:
            _SHARED.close()
        _SHARED = Zygote(env)
        import atexit

        atexit.register(_SHARED.close)
    return _SHARED


def available() -> bool:
    """Whether kernels can be forked into sandboxes here: Linux, and allowed to enter namespaces."""
    if _BROKEN or not sys.platform.startswith("linux") or os.environ.get("CNNCOURSE_NO_ZYGOTE"):
        return False
    try:
        with open("/proc/self/status") as f:
            eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff"))
    except (OSError, StopIteration, ValueError):
        return False
    needed = (1 << 21) | (1 << 18)  # CAP_SYS_ADMIN (setns), CAP_SYS_CHROOT
    return eff & needed == needed


if __name__ == "__main__":
    serve(sys.argv[1])
