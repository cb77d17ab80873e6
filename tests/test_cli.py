import subprocess
import sys

import pytest


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


def test_model_kwargs_are_typed():
    from cnncourse.cli import _model_kwargs
    from cnncourse.models import lenet5

    assert _model_kwargs(["depth=20", "residual=false", "lr=0.5"]) == {"depth": 20, "residual": False, "lr": 0.5}
    assert _model_kwargs(["variant=1998"], lenet5) == {"variant": "1998"}


@pytest.mark.slow
def test_train_command_pads_for_the_1998_lenet_and_saves(tmp_path, data_root):
    import os
    out = tmp_path / "ck.pt"
    proc = run("train", "lenet5", "--model-arg", "variant=1998", "--train-size", "512", "--epochs", "1",
               "--no-progress", "--out", str(out), env={**os.environ, "CNNCOURSE_DATA": str(data_root)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "final test accuracy" in proc.stdout and out.is_file()
    import torch
    from cnncourse.models import lenet5
    from cnncourse.train import load_checkpoint
    meta = load_checkpoint(out, lenet5(variant="1998"))
    assert meta["model_kwargs"] == {"variant": "1998"} and meta["epochs"] == 1
    assert 0.0 <= meta["test_accuracy"] <= 1.0 and len(meta["history"]) == 1


def test_train_command_trains_an_autoencoder_on_its_inputs(tmp_path, data_root, monkeypatch, capsys):
    """The model declares its loss and target (the input); the CLI has no autoencoder case.

    In-process (``cli.main``), to save a second torch import in CI.
    """
    from cnncourse import cli
    monkeypatch.setenv("CNNCOURSE_DATA", str(data_root))
    out = tmp_path / "ae.pt"
    assert cli.main(["train", "autoencoder", "--train-size", "512", "--epochs", "2", "--no-progress",
                     "--out", str(out)]) == 0
    assert "final test loss" in capsys.readouterr().out and out.is_file()
    from cnncourse.models import autoencoder
    from cnncourse.train import load_checkpoint
    meta = load_checkpoint(out, autoencoder())
    first, last = meta["history"]
    assert meta["test_accuracy"] is None and first["train_acc"] is None
    assert last["val_loss"] == meta["test_loss"] < first["val_loss"] < 1.0, meta["history"]


def test_data_check_reports_the_folder_really_used(tmp_path, data_root):
    """Regression: with the data under $CNNCOURSE_DATA, an empty --root must not be called verified."""
    import os
    empty = tmp_path / "empty"
    (empty / "MNIST" / "raw").mkdir(parents=True)  # the folder exists, the files do not
    env = {**os.environ, "CNNCOURSE_DATA": str(data_root)}
    proc = run("data", "check", "--root", str(empty), "--dataset", "mnist", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [l for l in proc.stdout.splitlines() if "verified" in l]
    assert len(lines) == 2 and all(str(empty) not in l and str(data_root) in l for l in lines), proc.stdout


def test_data_check_rejects_unknown_dataset():
    proc = run("data", "check", "--dataset", "cifar10")
    assert proc.returncode == 2 and "expected one of: fashion-mnist, mnist" in proc.stderr


def test_locate_agrees_with_the_loader(tmp_path, data_root, monkeypatch):
    from cnncourse import data, data_files

    monkeypatch.setenv("CNNCOURSE_DATA", str(data_root))
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    where = data.locate("mnist", "test", root=tmp_path)
    assert where == data_root / "MNIST" / "raw"
    assert data.load_dataset("mnist", "test", root=tmp_path).location == where
    monkeypatch.setenv("CNNCOURSE_DATA", str(tmp_path))
    monkeypatch.setattr(data_files, "CACHE_ROOT", tmp_path / "cache")
    assert data.locate("mnist", "test") is None


def _modules_after(code: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", "import sys\n" + code + "\nprint(' '.join(sys.modules))"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.splitlines()[-1].split())


def test_help_and_assign_do_not_import_torch(tmp_path):
    """The thin CLI imports subcommands lazily: --help and assign stay fast (no torch, ~1.3 s)."""
    from pathlib import Path
    lab = Path(__file__).resolve().parents[1] / "labs" / "lab00_tensors.ipynb"
    for argv in (["--help"], ["pretrain", "--help"], ["assign", str(lab), "--out", str(tmp_path)]):
        mods = _modules_after(f"from cnncourse.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass")
        assert "cnncourse.cli" in mods, "the check must see the CLI's own import"
        assert "torch" not in mods, f"python -m cnncourse {' '.join(argv)} imported torch"
    assert (tmp_path / "lab00_tensors.ipynb").is_file()
