"""`make lab` is real: JupyterLab starts from the project's environment on the released labs and runs one.

The test runs the Makefile's own ``lab`` target (release into a fresh folder, then ``jupyter lab``)
on a free local port with a token and no browser of its own, reads a released lab through the
server's REST API, opens it in headless Chromium, runs its first cells in a kernel through
JupyterLab's own commands, takes a screenshot, and shuts the server down through the API.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.test_book_browser import browser  # noqa: F401  (the shared headless Chromium)

ROOT = Path(__file__).resolve().parents[1]
LAB = "lab01_convolution.ipynb"
FIRST_CELLS = 4  # the title, the install cell, Settings and the imports
pytestmark = pytest.mark.book


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(base: str, token: str, path: str, method: str = "GET", timeout: float = 10) -> tuple[int, object]:
    request = urllib.request.Request(f"{base}{path}", method=method, data=b"" if method == "POST" else None,
                                     headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
            return response.status, json.loads(body) if body else None
    except urllib.error.HTTPError as exc:
        return exc.code, None


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@pytest.fixture
def jupyterlab(tmp_path):
    """``make lab`` on a free port with a token; yields ``(base_url, token, process, log)``; always stopped."""
    port, token = _free_port(), secrets.token_hex(16)
    folder, log_path = tmp_path / "release", tmp_path / "jupyterlab.log"
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"))
    env.pop("MPLBACKEND", None)
    flags = (f"--no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port={port} --ServerApp.port_retries=0 "
             f"--IdentityProvider.token={token} --LabApp.expose_app_in_browser=True --LabApp.news_url=None "
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate")
    # -o: take the installed environment as it is (never reinstall from inside a test).
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["make", "--no-print-directory", "-o", ".venv/.installed", "lab",
                                 f"LAB_DIR={folder}", f"LAB_FLAGS={flags}"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{port}", token, proc, log_path, folder
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _wait_for_server(base: str, token: str, proc: subprocess.Popen, log: Path, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"`make lab` exited ({proc.returncode}) before serving:\n{log.read_text()[-3000:]}"
        try:
            if _api(base, token, "/api/status", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer on {base} within {limit:.0f} s:\n{log.read_text()[-3000:]}")


_KERNEL_STATE = """
const app = window.jupyterapp, w = app && app.shell.currentWidget;
if (!w || !w.content || !w.sessionContext || !w.context || !w.context.isReady) return null;
const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
return [w.context.path, kernel ? kernel.status : 'no kernel', w.content.widgets.length];
"""

_RUN_FIRST_CELLS = """
const done = arguments[arguments.length - 1], n = arguments[0];
const app = window.jupyterapp, w = app.shell.currentWidget;
(async () => {
  w.content.activeCellIndex = 0;
  for (let i = 0; i < n; i++) { await app.commands.execute('notebook:run-cell-and-select-next'); }
  const cells = w.content.widgets.slice(0, n).map(c => ({
    type: c.model.type, count: c.model.type === 'code' ? c.model.executionCount : null,
    outputs: c.model.type === 'code' ? c.model.outputs.toJSON() : []}));
  done({cells: cells, status: w.sessionContext.session.kernel.status});
})().catch(e => done({error: String(e)}));
"""


@pytest.mark.timeout(180)
def test_make_lab_serves_the_released_labs_and_runs_a_lab_in_a_kernel(jupyterlab, browser, tmp_path):  # noqa: F811
    base, token, proc, log, folder = jupyterlab
    start = time.monotonic()
    _wait_for_server(base, token, proc, log)
    served = time.monotonic() - start

    # The server's root is the released folder: every lab, student versions only.
    status, listing = _api(base, token, "/api/contents")
    released = sorted(p.name for p in (ROOT / "labs").glob("*.ipynb"))
    assert status == 200 and sorted(item["name"] for item in listing["content"]) == released
    status, model = _api(base, token, f"/api/contents/{LAB}?content=1")
    assert status == 200 and model["type"] == "notebook", status
    cells = model["content"]["cells"]
    text = "\n".join(c["source"] for c in cells)
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text and "raise NotImplementedError()" in text
    assert f"self_check({LAB!r})" in cells[-1]["source"], "the released lab must end with its self-check cell"
    assert _api(base, "wrong-token", "/api/contents")[0] == 403, "the server must require its token"

    # The lab in JupyterLab, in headless Chromium, with its kernel.
    browser.set_window_size(1400, 1000)
    browser.get(f"{base}/lab/tree/{LAB}?token={token}")
    deadline, state = time.monotonic() + 60, None
    while time.monotonic() < deadline:
        state = browser.execute_script(_KERNEL_STATE)
        if state and state[1] == "idle":
            break
        time.sleep(0.5)
    assert state and state[0] == LAB and state[1] == "idle", f"the lab did not open with an idle kernel: {state}"
    assert state[2] == len(cells)
    browser.set_script_timeout(120)
    ran = browser.execute_async_script(_RUN_FIRST_CELLS, FIRST_CELLS)
    assert "error" not in ran, ran
    code = [c for c in ran["cells"] if c["type"] == "code"]
    assert len(code) == 3 and [c["count"] for c in code] == [1, 2, 3], ran["cells"]
    errors = [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
    assert not errors, f"a cell raised: {errors[0]['ename']}: {errors[0]['evalue']}" if errors else ""
    time.sleep(1)  # let the page paint the last prompt before the picture
    shot = tmp_path / "jupyterlab.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    print(f"screenshot: {shot}; server up after {served:.1f} s")

    status, sessions = _api(base, token, "/api/sessions")
    assert status == 200 and [s["path"] for s in sessions] == [LAB] and sessions[0]["kernel"]["name"] == "python3"
    children = _descendants(proc.pid)
    assert children, "no JupyterLab or kernel process under `make lab`"

    # A clean shutdown: the API stops the server, `make lab` exits 0, and no kernel is left behind.
    browser.get("about:blank")
    assert _api(base, token, "/api/shutdown", method="POST")[0] == 200
    assert proc.wait(30) == 0, log.read_text()[-3000:]
    time.sleep(0.5)
    import psutil

    left = [pid for pid in children if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert not left, f"processes left after the shutdown: {left}"
    assert sorted(p.name for p in folder.glob("*.ipynb")) == released
