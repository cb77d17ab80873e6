"""Tests of cnncourse.transfer: freezing, BatchNorm in frozen parts, heads, strategies, loading."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
import torchvision

from cnncourse import checkpoints, transfer
from cnncourse.data import ImageDataset
from cnncourse.models.googlenet import googlenet_small
from cnncourse.models.lenet import lenet5
from cnncourse.models.resnet import cifar_resnet
from cnncourse.models.vgg import vgg_small
from cnncourse.train import fit, save_checkpoint


class Tiny(nn.Module):
    """conv-bn-relu, conv-bn-relu, pool, fc: small enough to train in milliseconds."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(1, 4, 3, stride=2), bn1=nn.BatchNorm2d(4), relu1=nn.ReLU(),
            conv2=nn.Conv2d(4, 8, 3, stride=2), bn2=nn.BatchNorm2d(8), relu2=nn.ReLU(),
        ))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


def synthetic(n: int = 48, classes: int = 3, seed: int = 0) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    images = torch.randint(0, 60, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    for c in range(classes):  # a bright square whose position encodes the class
        images[labels == c, :, 4 + 7 * c:10 + 7 * c, 8:20] = 250
    return ImageDataset(images, labels, [f"c{c}" for c in range(classes)], 0.2, 0.35, "synthetic")


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_freeze_until_returns_the_changed_names_in_order():
    m = Tiny()
    names = transfer.freeze(m, until="features.bn1")
    assert names == ["features.conv1.weight", "features.conv1.bias", "features.bn1.weight", "features.bn1.bias"]
    assert trainable(m) == sum(p.numel() for n, p in m.named_parameters() if n not in names)
    assert transfer.freeze(m, until="features.bn1") == [], "freezing twice changes nothing the second time"
    assert transfer.freeze(m) == [n for n, _ in m.named_parameters() if n not in names]
    assert trainable(m) == 0


def test_unfreeze_is_the_inverse_of_freeze():
    m = Tiny()
    frozen = transfer.freeze(m, until="features")
    assert len(frozen) == 8 and all(n.startswith("features.") for n in frozen)
    assert transfer.unfreeze(m, until="features") == frozen
    assert all(p.requires_grad for p in m.parameters())


def test_unknown_layer_lists_candidates():
    with pytest.raises(ValueError, match=r"no layer 'features\.conv9'.*features\.conv1.*features\.bn2.*fc"):
        transfer.freeze(Tiny(), until="features.conv9")


def test_frozen_batchnorm_stays_in_eval_mode_during_fit():
    m = Tiny()
    transfer.freeze(m, until="features.bn2")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    seen = []
    m.features.bn1.register_forward_hook(lambda mod, i, o: seen.append(mod.training))
    fit(m, synthetic(), epochs=2, batch_size=16, device="cpu", progress=False)
    after = m.state_dict()
    assert seen and not any(seen), "frozen BN ran in training mode"
    for k in ("features.bn1.running_mean", "features.bn2.running_var", "features.bn2.num_batches_tracked"):
        torch.testing.assert_close(after[k], before[k], msg=f"{k} changed although its layer is frozen")
    assert not torch.equal(after["fc.weight"], before["fc.weight"]), "the trainable head did not train"
    m.train()
    assert m.training and m.fc.training, "only the frozen BN layers are switched to eval, not the model"


def test_bn_eval_opt_out_and_unfreeze_let_statistics_update():
    for release in ("opt_out", "unfreeze"):
        m = Tiny()
        transfer.freeze(m, bn_eval=(release == "unfreeze"))
        if release == "unfreeze":
            transfer.unfreeze(m)
        mean = m.features.bn1.running_mean.clone()
        m.train()
        m(torch.randn(8, 1, 28, 28) + 3.0)
        assert not torch.equal(m.features.bn1.running_mean, mean), release


def test_frozen_parameters_get_no_gradient():
    m = cifar_resnet(20, num_classes=5)
    transfer.freeze(m, until="layer2")
    m(torch.randn(2, 1, 28, 28)).sum().backward()
    assert all(p.grad is None for n, p in m.named_parameters() if n.startswith(("conv1", "bn1", "layer1", "layer2")))
    assert all(p.grad is not None for n, p in m.named_parameters() if n.startswith(("layer3", "fc")))


@pytest.mark.parametrize("build, head, x_shape", [
    (lambda: lenet5("textbook", num_classes=5), "classifier.fc3", (2, 1, 28, 28)),
    (lambda: lenet5("1998"), "output", (2, 1, 32, 32)),
    (lambda: cifar_resnet(20), "fc", (2, 1, 28, 28)),
    (lambda: vgg_small(), "classifier.6", (2, 1, 28, 28)),
    (lambda: googlenet_small(), "fc", (2, 1, 28, 28)),
    (lambda: torchvision.models.resnet18(weights=None), "fc", (2, 3, 64, 64)),
    (lambda: torchvision.models.mobilenet_v3_small(weights=None), "classifier.3", (2, 3, 64, 64)),
])
def test_replace_head_course_and_torchvision(build, head, x_shape):
    torch.manual_seed(0)
    m = build().eval()
    old = m.get_submodule(head)
    in_features = old.in_features if isinstance(old, nn.Linear) else old.codes.shape[1]  # LeNet-5 1998: RBF codes
    transfer.freeze(m)
    assert transfer.replace_head(m, 7) == head
    new = m.get_submodule(head)
    assert new is not old and isinstance(new, nn.Linear) and (new.in_features, new.out_features) == (in_features, 7)
    assert trainable(m) == in_features * 7 + 7, "only the new head is trainable"
    assert m(torch.randn(x_shape)).shape == (2, 7)


def test_replace_head_conv_classifier_and_aux_heads():
    sq = torchvision.models.squeezenet1_1(weights=None)
    assert transfer.replace_head(sq, 4) == "classifier.1"
    assert sq.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 4)
    g = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False)
    assert transfer.replace_head(g, 4) == "fc"
    assert g.aux1.fc2.out_features == 4 and g.aux2.fc2.out_features == 4 and g.fc.out_features == 4


def test_head_not_found_lists_candidates():
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 26 * 26, 3))
    with pytest.raises(ValueError, match=r"cannot find the head.*fc, classifier.*0, 2"):
        transfer.replace_head(m, 5)
    with pytest.raises(ValueError, match="num_classes must be >= 1, got 0"):
        transfer.replace_head(Tiny(), 0)


def test_blocks_and_strategies_on_resnet20():
    m = cifar_resnet(20, num_classes=5)
    assert transfer.blocks(m) == ["conv1", "bn1"] + [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)] + ["fc"]
    total = trainable(m)
    assert transfer.apply_strategy(m, "head") == ["fc.weight", "fc.bias"]
    names = transfer.apply_strategy(m, "last_k", k=3)
    assert {n.split(".")[0] for n in names} == {"layer3", "fc"}
    assert len(transfer.apply_strategy(m, "full")) == len(list(m.parameters())) and trainable(m) == total
    with pytest.raises(ValueError, match="k must be between 1 and 11"):
        transfer.apply_strategy(m, "last_k", k=12)
    with pytest.raises(ValueError, match="unknown strategy 'middle'; expected one of: head, last_k, full, scratch"):
        transfer.apply_strategy(m, "middle")


def test_param_groups_discriminative_learning_rates():
    m = Tiny()
    transfer.freeze(m, until="features.conv1")
    groups = transfer.param_groups(m, lr=1e-2, backbone_lr=1e-4)
    assert [(g["name"], g["lr"], len(g["params"])) for g in groups] == [("backbone", 1e-4, 6), ("head", 1e-2, 2)]
    opt = torch.optim.SGD(groups, lr=0.5)
    assert [g["lr"] for g in opt.param_groups] == [1e-4, 1e-2]
    transfer.freeze(m)
    with pytest.raises(ValueError, match="no trainable parameters"):
        transfer.param_groups(m, 1e-2, 1e-4)


@pytest.mark.parametrize("strategy", list(transfer.STRATEGIES))
def test_fine_tune_changes_exactly_the_trainable_part(strategy):
    torch.manual_seed(1)
    m = Tiny(num_classes=5)
    start = {k: v.clone() for k, v in m.state_dict().items()}
    hist = transfer.fine_tune(m, synthetic(classes=3), strategy, k=2, steps=6, batch_size=16, device="cpu",
                              progress=False, backbone_lr=1e-3 if strategy != "head" else None)
    assert len(hist.epochs) == 2 and m.fc.out_features == 3
    end = m.state_dict()
    changed = {k.rsplit(".", 1)[0] for k in start if k in end and start[k].shape == end[k].shape
               and not torch.equal(start[k], end[k])}
    expected = {"head": set(), "last_k": {"features.conv2", "features.bn2"}}.get(
        strategy, {"features.conv1", "features.bn1", "features.conv2", "features.bn2"})
    assert changed == expected, f"{strategy}: expected {sorted(expected)} to change, got {sorted(changed)}"


def test_load_pretrained_offline_from_local_state_dicts(tmp_path):
    torch.manual_seed(3)
    src = torchvision.models.resnet18(weights=None)
    torch.save(src.state_dict(), tmp_path / "r18.pt")
    got = checkpoints.load_pretrained("resnet18", tmp_path / "r18.pt")
    for (k, v), w in zip(src.state_dict().items(), got.state_dict().values()):
        torch.testing.assert_close(w, v, msg=k)
    small = lenet5("textbook", num_classes=5)
    save_checkpoint(tmp_path / "lenet.pt", small, note="course format")
    got = checkpoints.load_pretrained("lenet5", str(tmp_path / "lenet.pt"), variant="textbook", num_classes=5)
    torch.testing.assert_close(got.classifier.fc3.weight, small.classifier.fc3.weight)
    with pytest.raises(ValueError, match="missing keys"):
        checkpoints.load_pretrained("lenet5", tmp_path / "lenet.pt", variant="textbook", num_classes=10)


def test_load_pretrained_errors_list_candidates(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="not a course checkpoint.*lenet5_mnist04.*resnet20_fashion"):
        checkpoints.load_pretrained("lenet5", "no_such_weights")
    with pytest.raises(ValueError, match="no weights 'IMAGENET9K'; candidates: DEFAULT, IMAGENET1K_V1"):
        checkpoints.load_pretrained("resnet18", "IMAGENET9K")
    with pytest.raises(ValueError, match="holds a 'lenet5' model, not 'cifar_resnet'"):
        checkpoints.load_pretrained("cifar_resnet", "lenet5_mnist04")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache, and no network needed
    with pytest.raises(FileNotFoundError, match="not in torch's cache"):
        checkpoints.load_pretrained("resnet18", torchvision.models.ResNet18_Weights.IMAGENET1K_V1, allow_download=False)


def test_features_and_pca():
    m = Tiny().eval()
    data = synthetic(n=30)
    feats = transfer.extract_features(m, data, batch_size=7)
    assert feats.shape == (30, 8)
    coords, ratio = transfer.pca_2d(feats)
    x = feats.double() - feats.double().mean(0)
    evals, evecs = torch.linalg.eigh(x.T @ x)
    for j in range(2):  # principal axes are the top eigenvectors of the scatter matrix, up to sign
        ref = (x @ evecs[:, -1 - j]).float()
        assert torch.allclose(coords[:, j].abs(), ref.abs(), atol=1e-4)
    torch.testing.assert_close(ratio.double(), (evals[-2:].flip(0) / evals.sum()), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"expected features \(N >= 2, D\), got \(5,\)"):
        transfer.pca_2d(torch.zeros(5))


def test_summarize_and_plot():
    rows = [{"target": t, "size": n, "strategy": s, "seed": seed, "accuracy": 0.5 + 0.1 * seed}
            for t in ("similar", "different") for n in (10, 100) for s in ("head", "full") for seed in (0, 1, 2)]
    summary = transfer.summarize(rows)
    assert len(summary) == 8
    assert summary[0]["mean"] == pytest.approx(0.6) and summary[0]["std"] == pytest.approx(0.1)
    fig = transfer.plot_grid(summary)
    assert len(fig.axes) == 2 and len(fig.axes[0].get_lines()) >= 2


def _benchmark_module():
    """benchmarks/transfer.py, imported the way `python benchmarks/transfer.py` runs it (its folder on sys.path)."""
    import importlib.util
    import sys
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location("transfer_benchmark", folder / "transfer.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return module


def test_transfer_benchmark_writes_results_with_provenance(data_root, tmp_path):
    import json

    out = tmp_path / "transfer.json"
    bench = _benchmark_module()
    assert bench.main(["--sizes", "1", "--seeds", "0", "1", "--steps", "2", "--test-size", "40",
                       "--strategies", "head", "scratch", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    for key in ("command", "date", "machine", "threads", "load_average_1min"):  # the shared provenance header
        assert key in doc, key
    assert doc["complete"] and doc["runs_done"] == doc["runs_total"] == 2 * 2 * 2  # targets x strategies x seeds
    assert doc["source"]["sha256"] == checkpoints.read_manifest()[bench.CHECKPOINT]["sha256"]
    cells = {(r["target"], r["strategy"]): r for r in doc["summary"]}
    assert set(cells) == {(t, s) for t in transfer.TARGETS for s in ("head", "scratch")}
    assert all(r["seeds"] == 2 and 0.0 <= r["mean"] <= 1.0 for r in cells.values())
    with pytest.raises(ValueError, match="unknown target 'cifar'"):
        bench.main(["--targets", "cifar", "--out", str(out)])


def test_committed_transfer_results_match_the_benchmark():
    """The chapter reads book/results/transfer.json: it must be complete and come from the committed checkpoint."""
    import json
    from pathlib import Path

    doc = json.loads((Path(__file__).resolve().parents[1] / "book" / "results" / "transfer.json").read_text())
    assert doc["complete"] and doc["runs_done"] == doc["runs_total"] == len(doc["runs"])
    assert doc["source"]["sha256"] == checkpoints.read_manifest()[doc["config"]["checkpoint"]]["sha256"]
    assert len(doc["summary"]) == len(doc["runs"]) // len(doc["config"]["seeds"])
