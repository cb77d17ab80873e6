import subprocess
import sys


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "cnncourse", *args], capture_output=True, text=True, **kw)


def test_help_lists_subcommands():
    out = run("--help").stdout
    for sub in ("data", "train", "assign", "pretrain", "grade"):
        assert sub in out


def test_data_check_verifies_shared_data(data_root):
    proc = run("data", "check", "--root", str(data_root))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [l for l in proc.stdout.splitlines() if "verified" in l]
    assert len(lines) == 4 and sum("fashion-mnist" in l for l in lines) == 2


def test_data_check_reports_missing(tmp_path):
    import os
    env = {**os.environ, "CNNCOURSE_DATA": str(tmp_path), "HOME": str(tmp_path)}
    proc = run("data", "check", env=env)
    assert proc.returncode == 1
    assert proc.stdout.count("missing") == 4 and str(tmp_path) in proc.stdout
