"""Tests of cnncourse.checkpoints and the pretrain command: committed checkpoints, manifest, determinism, CLI registration."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest
import torch

from cnncourse import checkpoints, cli_pretrain
from cnncourse.data import sha256_of
from cnncourse.train import evaluate

COMMITTED = ["lenet5_mnist04", "resnet20_mnist04", "resnet20_fashion", "lenet5_mnist04_ci", "lenet5_mnist04_full"]
# Different CPU instruction sets or torch versions round differently, so a re-run elsewhere can
# differ in the last bits; over a few dozen Adam steps that moves test accuracy by well under this.
ACCURACY_TOLERANCE = 0.02


def test_manifest_covers_every_recipe_with_small_verified_files():
    manifest = checkpoints.read_manifest()
    assert sorted(manifest) == sorted(checkpoints.RECIPES) == sorted(COMMITTED)
    for name, entry in manifest.items():
        path = checkpoints.CHECKPOINT_DIR / entry["file"]
        assert path.stat().st_size < 2 * 1024 * 1024, f"{path.name} is {path.stat().st_size} bytes, limit 2 MB"
        assert sha256_of(path) == entry["sha256"], name
        assert entry["command"] == f"python -m cnncourse pretrain {name}"
        r = checkpoints.RECIPES[name]
        assert (entry["seed"], entry["epochs"]) == (r.seed, r.epochs)
        assert 0.0 < entry["source_accuracy"] <= 1.0 and entry["library_version"]


def test_committed_lenet_checkpoint_has_its_recorded_source_accuracy(data_root):
    model = checkpoints.load_pretrained("lenet5", "lenet5_mnist04")
    test = checkpoints.source_data("lenet5_mnist04", "test")
    acc = evaluate(model, test, device="cpu")["accuracy"]
    assert acc == pytest.approx(checkpoints.read_manifest()["lenet5_mnist04"]["source_accuracy"], abs=1e-4)
    assert acc > 0.95, f"LeNet-5 on MNIST 0-4 should exceed 95% test accuracy, got {acc:.4f}"


def test_loading_verifies_sha256(tmp_path):
    shutil.copy(checkpoints.CHECKPOINT_DIR / "lenet5_mnist04_ci.pt", tmp_path / "lenet5_mnist04_ci.pt")
    shutil.copy(checkpoints.CHECKPOINT_DIR / checkpoints.MANIFEST, tmp_path / checkpoints.MANIFEST)
    assert checkpoints.checkpoint_path("lenet5_mnist04_ci", tmp_path).is_file()
    with open(tmp_path / "lenet5_mnist04_ci.pt", "r+b") as f:  # flip one byte near the end (tensor data)
        f.seek(-100, 2)
        byte = f.read(1)
        f.seek(-100, 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ValueError, match="corrupt or stale: re-run python -m cnncourse pretrain lenet5_mnist04_ci"):
        checkpoints.checkpoint_path("lenet5_mnist04_ci", tmp_path)
    with pytest.raises(FileNotFoundError, match="make it with: python -m cnncourse pretrain resnet20_mnist04"):
        checkpoints.checkpoint_path("resnet20_mnist04", tmp_path)
    with pytest.raises(KeyError, match="unknown checkpoint 'vgg'; expected one of: lenet5_mnist04"):
        checkpoints.recipe("vgg")


@pytest.mark.slow
def test_ci_recipe_is_deterministic_and_reproduces_the_manifest(tmp_path, data_root):
    threads = torch.get_num_threads()
    first = checkpoints.pretrain("lenet5_mnist04_ci", tmp_path / "a", progress=False)
    second = checkpoints.pretrain("lenet5_mnist04_ci", tmp_path / "b", progress=False, write_manifest=False)
    assert first["sha256"] == second["sha256"], "same seed, same CPU, one thread: the file must be bit-identical"
    assert json.loads((tmp_path / "a" / checkpoints.MANIFEST).read_text())["lenet5_mnist04_ci"]["sha256"] == first["sha256"]
    committed = checkpoints.read_manifest()["lenet5_mnist04_ci"]
    if committed["platform"] == checkpoints.platform_fingerprint():
        assert first["sha256"] == committed["sha256"], (
            f"re-running the recipe on the platform that made the committed file gave sha256 {first['sha256']}, "
            f"manifest says {committed['sha256']}")
    assert first["source_accuracy"] == pytest.approx(committed["source_accuracy"], abs=ACCURACY_TOLERANCE)
    assert torch.get_num_threads() == threads, "pretrain must restore the caller's thread count"


def test_add_parser_registers_the_pretrain_subcommand(capsys):
    parser = argparse.ArgumentParser(prog="cnncourse")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_pretrain.add_parser(sub)
    args = parser.parse_args(["pretrain", "--list"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in checkpoints.RECIPES)
    args = parser.parse_args(["pretrain", "nope"])
    assert args.func(args) == 2
    assert "unknown checkpoint 'nope'" in capsys.readouterr().out
