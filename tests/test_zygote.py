"""Kernels forked from the zygote into their sandboxes: the same walls as a fresh sandboxed kernel.

Each test starts real kernels through :class:`cnncourse.grading.kernel.Kernel`, as the grader does,
and checks what the student's code sees from inside (the probe of tests/test_sandbox.py), what the
grader sees from outside (CPU time, death, kill) and that the zygote is really used.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import pytest

from cnncourse.grading import sandbox, zygote
from tests.test_sandbox import LAB00, PROBE

pytestmark = pytest.mark.skipif(not (sandbox.available() and zygote.available()),
                                reason="needs bubblewrap and the right to enter namespaces (root)")


@contextlib.contextmanager
def _kernel(tmp_path):
    """A sandboxed kernel as the grader starts one, connected; killed afterwards."""
    from cnncourse.grading.autograde import Limits
    from cnncourse.grading.kernel import Kernel

    subs = tmp_path / "subs"
    subs.mkdir(exist_ok=True)
    (subs / "ada.ipynb").write_text("{}")
    hide = sandbox.hidden_paths(LAB00, subs / "ada.ipynb", [subs])
    kernel = Kernel(Limits(sandbox=True, memory_mb=4096), None, None, hide)
    try:
        channel = kernel.connect(120)
        try:
            yield kernel
        finally:
            channel.sock.close()
    finally:
        kernel.kill()


def _run(kernel, source, timeout=60):
    reply = kernel.run(source, timeout)
    assert reply.get("status") == "ok", reply
    return reply


@pytest.mark.timeout(300)
def test_a_forked_kernel_sees_what_a_fresh_sandboxed_one_sees(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNCOURSE_SECRET", "do-not-leak")
    with _kernel(tmp_path) as kernel:
        assert kernel.forked
        probe = PROBE.replace("print(json.dumps(out))", "open('probe.json', 'w').write(json.dumps(out))")
        argv = [str(LAB00), str(tmp_path / "subs" / "ada.ipynb"), str(tmp_path / "subs")]
        _run(kernel, f"import sys\nsys.argv = ['probe', *{argv!r}]\n" + probe
             + "\nimport os\nopen('env.json', 'w').write(json.dumps([os.environ.get('CNNCOURSE_SECRET'), "
               "os.environ.get('TMPDIR'), [l.split()[1] for l in open('/proc/self/status') "
               "if l.startswith(('CapPrm', 'CapBnd', 'CapAmb', 'NoNewPrivs'))]]))")
        work = Path(kernel.workdir)
        got = json.loads((work / "probe.json").read_text())
        errors = {k: v[1] for k, v in got.items() if v[0] == "error"}
        assert errors.get("write_checks") == "OSError", got
        assert errors.get("read_lab") == "FileNotFoundError", got
        assert errors.get("read_submission") == "FileNotFoundError", got
        assert "net" in errors, got
        assert got["cwd"][1] == repr(str(work.resolve()))
        assert got["caps"][1] == repr("0000000000000000"), got
        pids = json.loads(got["pids"][1])
        assert len(pids) <= 4 and max(pids) < 1000, got                     # its own PID namespace
        assert sorted(json.loads(got["tmp"][1].replace("'", '"'))) == sorted(
            [Path(kernel.workdir).name, Path(kernel.sockets).name]), got      # a private /tmp
        secret, tmpdir, caps = json.loads((work / "env.json").read_text())
        assert secret is None and tmpdir == str(work.resolve())
        assert caps == ["0000000000000000"] * 3 + ["1"], caps                # nothing to regain


@pytest.mark.timeout(300)
def test_the_grader_meters_kills_and_sees_the_death_of_a_forked_kernel(tmp_path):
    from nbclient.exceptions import DeadKernelError

    with _kernel(tmp_path) as kernel:
        start = kernel.meter.read()
        assert start < 2.0, f"a forked kernel imports nothing at start; it used {start:.2f} s of CPU"
        _run(kernel, "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0:\n    pass")
        assert kernel.meter.read() - start >= 0.8           # the kernel's CPU time is counted
        # A child that leaves the session, then the kernel is killed: the child dies with the sandbox.
        _run(kernel, "import os\nif os.fork() == 0:\n    os.setsid()\n    os.execvp('sleep', ['sleep', '4242.1'])")
        kernel_pid = kernel.meter.extra[0]
        time.sleep(0.5)
        assert _pids_with("4242.1"), "the forked child should be running"
    for _ in range(100):
        if not _pids_with("4242.1") and not Path(f"/proc/{kernel_pid}").exists():
            break
        time.sleep(0.1)
    assert not _pids_with("4242.1") and not Path(f"/proc/{kernel_pid}").exists()

    with _kernel(tmp_path) as kernel:
        t0 = time.monotonic()
        with pytest.raises(DeadKernelError):  # seen while the cell runs, not at the cell's time limit
            kernel.run("import os\nos._exit(3)", 120)
        assert time.monotonic() - t0 < 30 and not kernel.alive()


def _pids_with(marker: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{name}/cmdline").read_bytes():
                    found.append(int(name))
            except OSError:
                pass
    return found


@pytest.mark.timeout(300)
def test_without_the_zygote_kernels_start_fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNCOURSE_NO_ZYGOTE", "1")
    with _kernel(tmp_path) as kernel:
        assert not kernel.forked and not kernel.meter.extra
        _run(kernel, "x = 1")


@pytest.mark.timeout(300)
def test_a_zygote_that_cannot_fork_a_kernel_leaves_kernels_to_start_fresh(tmp_path, monkeypatch):
    from cnncourse.grading.kernel import kernel_env

    monkeypatch.setattr(zygote, "_BROKEN", False)  # restored after the test, for the other tests of this process
    with pytest.raises(zygote.SpawnError, match="setns|No such file"):
        zygote.shared(kernel_env()).spawn(2**22 + 12345, {})   # no such process: its sandbox cannot be entered
    assert not zygote.available()
    with _kernel(tmp_path) as kernel:
        assert not kernel.forked
        _run(kernel, "x = 1")
