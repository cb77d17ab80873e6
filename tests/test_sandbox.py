"""The kernel sandbox: each property checked by running a small Python program under the bwrap prefix.

No kernel is started here (tests/test_grading_hostile.py grades real submissions in sandboxed
kernels). Without bubblewrap, only the refusal to grade is tested.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import cnncourse
from cnncourse.grading import sandbox
from tests.conftest import processes_with

ROOT = Path(__file__).resolve().parents[1]
LAB00 = ROOT / "labs" / "lab00_tensors.ipynb"
needs_bwrap = pytest.mark.skipif(not sandbox.available(), reason="bubblewrap (bwrap) is not installed")

PROBE = r'''
import json, os, socket, sys
out = {}
def attempt(name, f):
    try:
        out[name] = ["ok", repr(f())[:200]]
    except Exception as e:
        out[name] = ["error", type(e).__name__]
import cnncourse, cnncourse.grading.checks as checks
attempt("write_checks", lambda: open(checks.__file__, "a"))
attempt("read_lab", lambda: open(sys.argv[1]).read(10))
attempt("read_submission", lambda: open(sys.argv[2]).read(10))
attempt("list_out", lambda: os.listdir(sys.argv[3]))
attempt("write_out", lambda: open(os.path.join(sys.argv[3], "x"), "w"))
git = os.path.join(os.path.dirname(os.path.dirname(cnncourse.__file__)), ".git")   # a folder, or a worktree's file
attempt("read_git", lambda: os.listdir(git) if os.path.isdir(git) else open(git).read())
attempt("write_cwd", lambda: open("scratch.txt", "w").write("ok"))
attempt("cwd", os.getcwd)
attempt("tmp", lambda: sorted(os.listdir("/tmp")))
attempt("net", lambda: socket.create_connection(("1.1.1.1", 53), timeout=2))
attempt("pid", os.getpid)
attempt("pids", lambda: sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
attempt("caps", lambda: [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0])
attempt("import_torch", lambda: __import__("torch").ones(2).sum().item())
attempt("data", lambda: os.path.isdir(os.environ.get("CNNCOURSE_DATA", "/")))
print(json.dumps(out))
'''


def test_grading_without_bubblewrap_is_refused_unless_asked(tmp_path, monkeypatch, capsys):
    import argparse

    from cnncourse.grading import cli_grade, report

    monkeypatch.setattr(sandbox, "available", lambda: False)
    sub = tmp_path / "subs" / "broken.ipynb"
    sub.parent.mkdir()
    sub.write_text("{not json")                          # graded without a kernel
    parser = argparse.ArgumentParser()
    cli_grade.add_parser(parser.add_subparsers(dest="command", required=True))

    def grade(*extra: str) -> int:
        args = parser.parse_args(["grade", str(LAB00), str(sub), "--out", str(tmp_path / "out"), "--no-progress",
                                  *extra])
        return args.func(args)

    assert grade() == 2
    assert "bubblewrap" in capsys.readouterr().err and not (tmp_path / "out" / "broken.json").exists()
    with pytest.raises(ValueError, match="--no-sandbox"):
        report.grade_batch(LAB00, [sub], tmp_path / "out", progress=False)
    assert grade("--no-sandbox") == 0
    err = capsys.readouterr().err
    assert all(line in err for line in sandbox.UNPROTECTED) and "sandbox: false" in err
    assert json.loads((tmp_path / "out" / "broken.json").read_text())["sandbox"] is False


def test_hidden_paths_cover_the_lab_submissions_and_every_checkout(tmp_path):
    hidden = sandbox.hidden_paths(LAB00, tmp_path / "subs" / "a.ipynb", [tmp_path / "out"])
    repo = Path(cnncourse.__file__).resolve().parents[1]
    assert {LAB00.resolve().parent, (tmp_path / "subs").resolve(), (tmp_path / "out").resolve(), repo} <= set(hidden)
    assert not any(p in hidden for p in sandbox.needed_paths())


def test_masking_keeps_only_the_way_to_needed_folders(tmp_path):
    (tmp_path / "repo" / "pkg").mkdir(parents=True)
    (tmp_path / "repo" / "labs").mkdir()
    (tmp_path / "repo" / "README.md").write_text("x")
    mounts = list(sandbox._mask(tmp_path / "repo", [tmp_path / "repo" / "pkg"]))
    assert mounts == [("--ro-bind", "/dev/null", str(tmp_path / "repo" / "README.md")),
                      ("--tmpfs", str(tmp_path / "repo" / "labs"))]
    assert list(sandbox._mask(tmp_path / "repo", [])) == [("--tmpfs", str(tmp_path / "repo"))]



def test_mounts_inside_an_emptied_folder_are_left_out():
    # Two students' folders inside the hidden submissions folder: their own masks change nothing, so both
    # kernels get the same sandbox (and a kernel started ahead for one may serve the other).
    alice = [("--tmpfs", "/srv/subs"), ("--tmpfs", "/srv/subs/alice/lab00"), ("--ro-bind", "/dev/null", "/srv/x")]
    bob = [("--tmpfs", "/srv/subs/bob/lab00"), ("--tmpfs", "/srv/subs"), ("--ro-bind", "/dev/null", "/srv/x")]
    assert sandbox.outermost(alice) == [("--tmpfs", "/srv/subs"), ("--ro-bind", "/dev/null", "/srv/x")]
    assert sandbox.outermost(bob) == [("--tmpfs", "/srv/subs"), ("--ro-bind", "/dev/null", "/srv/x")]
    # A sibling whose name merely starts like the emptied folder's is not inside it.
    assert sandbox.outermost([("--tmpfs", "/srv/subs"), ("--tmpfs", "/srv/subs2")]) == [
        ("--tmpfs", "/srv/subs"), ("--tmpfs", "/srv/subs2")]
    assert sandbox._inside(Path("/srv/subs/a"), Path("/srv/subs")) and not sandbox._inside(Path("/srv/subs2"),
                                                                                          Path("/srv/subs"))
    assert sandbox._inside(Path("/srv"), Path("/"))

@needs_bwrap
def test_sandboxed_process_sees_a_read_only_world_without_network_or_secrets(tmp_path):
    work, sockets, subs, out = (tmp_path / n for n in ("work", "sockets", "subs", "out"))
    for folder in (work, sockets, subs, out):
        folder.mkdir()
    sub = subs / "ada.ipynb"
    sub.write_text("{}")
    (out / "ada.json").write_text("{}")
    # tmp_path is under /tmp, private in the sandbox anyway; hiding is tested by the source lab and .git.
    prefix = sandbox.bwrap_prefix(work, sockets, sandbox.hidden_paths(LAB00, sub, [subs, out]))
    done = subprocess.run([*prefix, sys.executable, "-c", PROBE, str(LAB00), str(sub), str(out)],
                          check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.splitlines()[-1])
    errors = {k: v[1] for k, v in got.items() if v[0] == "error"}
    assert errors.get("write_checks") == "OSError", got                     # read-only: EROFS
    assert errors.get("read_lab") == "FileNotFoundError", got               # the lab's folder is empty
    assert errors.get("read_submission") == "FileNotFoundError", got
    assert got["list_out"] == ["ok", "[]"] or errors.get("list_out") == "FileNotFoundError", got
    assert got["read_git"] in (["ok", "[]"], ["error", "PermissionError"]), got  # an empty folder, or /dev/null
    assert "net" in errors, got
    assert got["write_cwd"][0] == "ok" and (work / "scratch.txt").read_text() == "ok"
    assert got["cwd"][1] == repr(str(work.resolve()))
    assert got["pid"][1] in ("1", "2") and len(ast.literal_eval(got["pids"][1])) <= 3, got   # own PID namespace
    assert got["caps"][1] == repr("0000000000000000"), got
    assert got["import_torch"] == ["ok", "2.0"] and got["data"] == ["ok", "True"], got
    assert not (out / "x").exists() and sorted(p.name for p in out.iterdir()) == ["ada.json"]


@needs_bwrap
def test_sandboxed_processes_die_with_their_parent(tmp_path):
    """A child that leaves the process group still dies when bwrap is killed (PID namespace + die-with-parent)."""
    import os
    import signal
    import time

    work = tmp_path / "w"
    work.mkdir()
    marker = "31337.271828"
    child = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    os.execvp('sleep', ['sleep', "
             f"'{marker}'])\ntime.sleep(600)")
    proc = subprocess.Popen([*sandbox.bwrap_prefix(work, work), sys.executable, "-c", child], start_new_session=True)

    def survivors() -> list[int]:
        return processes_with(marker)

    try:
        def forked_child_running() -> bool:
            # Wait for the `sleep` itself: bwrap's own command line carries the marker too, and killing bwrap
            # before its sandboxed child has set up die-with-parent tests nothing (a race seen under load).
            for pid in survivors():
                try:
                    if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep\0"):
                        return True
                except OSError:  # it ended while we looked
                    pass
            return False

        for _ in range(600):                   # a loaded machine may take seconds to start Python
            if forked_child_running():
                break
            time.sleep(0.1)
        assert forked_child_running(), "the forked child should be running"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        for _ in range(300):
            if not survivors():
                break
            time.sleep(0.1)
        assert not survivors()
    finally:
        for pid in survivors():
            os.kill(pid, signal.SIGKILL)


@needs_bwrap
def test_a_resumed_sandboxed_run_regrades_what_was_graded_without_the_sandbox(tmp_path):
    from cnncourse.grading.autograde import Limits
    from cnncourse.grading.report import grade_batch

    sub = tmp_path / "subs" / "broken.ipynb"
    sub.parent.mkdir()
    sub.write_text("{not json")                          # graded without a kernel
    graded: list[bool] = []
    for use_sandbox in (False, False, True, True, False):
        grade_batch(LAB00, [sub], tmp_path / "out", progress=False, limits=Limits(sandbox=use_sandbox),
                    on_record=lambda r: graded.append(r["sandbox"]))
    assert graded == [False, True]
    assert json.loads((tmp_path / "out" / "broken.json").read_text())["sandbox"] is True


FIND_SOLUTIONS = r'''
import json, os, sys
found = []
for folder, dirs, files in os.walk("/"):
    if folder == "/":
        dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev")]
    for name in files:
        if name.endswith(".ipynb"):
            try:
                text = open(os.path.join(folder, name), errors="replace").read()
                if "BEGIN SOLUTION" in text and "cnncourse" in text:
                    found.append(os.path.join(folder, name))
            except OSError:
                pass
print(json.dumps(found))
'''


@needs_bwrap
def test_no_source_lab_is_readable_anywhere_in_the_sandbox(tmp_path):
    """Hiding is an allow-list: a course copy in a folder no rule names (here a new folder in the home
    directory, as CI's clone beside another checkout once was) is out of sight too."""
    import shutil
    import uuid

    decoy = Path.home() / f".cnncourse-decoy-{uuid.uuid4().hex[:8]}" / "labs" / LAB00.name
    decoy.parent.mkdir(parents=True)
    try:
        shutil.copy(LAB00, decoy)
        assert "BEGIN SOLUTION" in decoy.read_text()                 # readable outside the sandbox
        work = tmp_path / "w"
        work.mkdir()
        prefix = sandbox.bwrap_prefix(work, work, sandbox.hidden_paths(LAB00, tmp_path / "subs" / "a.ipynb"))
        done = subprocess.run([*prefix, sys.executable, "-c", FIND_SOLUTIONS], check=False, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert json.loads(done.stdout.splitlines()[-1]) == []
    finally:
        shutil.rmtree(decoy.parents[1])
