import pytest
import torch
import torch.nn as nn

from cnncourse import train
from cnncourse.data import pad_to


def tiny_cnn(num_classes=10):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(8 * 12 * 12, num_classes))


@pytest.fixture(scope="module")
def small(mnist_train):
    return mnist_train.take(2000, seed=0), mnist_train.take(500, seed=1)


def test_fit_learns_and_records_history(small):
    tr, va = small
    model = tiny_cnn()
    hist = train.fit(model, tr, va, epochs=2, lr=3e-3, batch_size=64, seed=0, progress=False, device="cpu")
    assert [e["epoch"] for e in hist.epochs] == [1, 2]
    columns = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"}
    assert set(hist.last) == columns
    assert hist["train_loss"][1] < hist["train_loss"][0]
    assert hist.last["val_acc"] > 0.8
    assert "val_acc" in str(hist) and len(hist.as_dicts()) == 2
    assert hist.plot().axes


def test_fit_is_bit_for_bit_repeatable(small):
    tr, _ = small
    states = []
    for _ in range(2):
        model = tiny_cnn()
        train.fit(model, tr, epochs=1, batch_size=100, seed=5, progress=False, device="cpu", max_batches=5)
        states.append(model.state_dict())
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k


def test_sgd_transform_and_scheduler(small):
    tr, va = small
    model = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10))
    hist = train.fit(model, tr, va, epochs=2, lr=0.05, optimizer="sgd", transform=pad_to(32), progress=False,
                     scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5), device="cpu")
    assert hist.last["val_acc"] > 0.6
    with pytest.raises(ValueError, match="optimizer must be 'adam' or 'sgd', got 'rmsprop'"):
        train.fit(model, tr, epochs=1, optimizer="rmsprop", progress=False)


def test_evaluate_and_predict_keep_mode(small):
    _, va = small
    model = tiny_cnn().train()
    metrics = train.evaluate(model, va, device="cpu")
    assert set(metrics) == {"loss", "accuracy"} and model.training
    pred = train.predict(model, va, device="cpu")
    assert pred.shape == (500,) and pred.dtype == torch.int64
    x = torch.randn(3, 1, 28, 28)
    assert train.predict(model, x, device="cpu").shape == (3,)
    with pytest.raises(ValueError, match=r"expected images of shape \(N, C, H, W\), got \(28, 28\)"):
        train.predict(model, torch.randn(28, 28), device="cpu")


def test_checkpoint_roundtrip_and_mismatch(tmp_path):
    model = tiny_cnn()
    path = tmp_path / "ck" / "model.pt"
    train.save_checkpoint(path, model, epochs=3, note="hello")
    other = tiny_cnn(10)
    with torch.no_grad():
        for p in other.parameters():
            p.zero_()
    meta = train.load_checkpoint(path, other)
    assert meta == {"epochs": 3, "note": "hello"}
    for a, b in zip(model.parameters(), other.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError) as err:
        train.load_checkpoint(path, nn.Sequential(nn.Conv2d(1, 8, 5), nn.ReLU(), nn.Linear(3, 3)))
    msg = str(err.value)
    assert "missing keys: ['2.bias', '2.weight']" in msg and "unexpected keys: ['4.bias', '4.weight']" in msg
    with pytest.raises(ValueError, match=r"4.weight: checkpoint \(10, 1152\) vs model \(5, 1152\)"):
        train.load_checkpoint(path, tiny_cnn(5))


def test_failed_write_keeps_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    train.save_checkpoint(path, tiny_cnn(), version=1)
    before = path.read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(KeyboardInterrupt):
        train.save_checkpoint(path, tiny_cnn(), version=2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary left behind


@pytest.mark.parametrize("cuda,mps,expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_pick_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    """Runs every branch on any machine: the accelerators' availability is simulated."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert train.pick_device().type == expected
    assert train.pick_device("auto").type == expected
    assert train.pick_device("cpu") == torch.device("cpu")


def test_atomic_write_uses_normal_permissions(tmp_path):
    import os

    from cnncourse.io import atomic_write_text

    atomic_write_text(tmp_path / "a.txt", "hello")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "a.txt").read_text() == "hello"


class _Raises(torch.nn.Module):
    """A model whose forward fails after the first batch, with a BatchNorm already in eval mode."""

    def __init__(self):
        super().__init__()
        self.bn = torch.nn.BatchNorm2d(1)
        self.fc = torch.nn.Linear(28 * 28, 10)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        assert not self.training, "evaluate/predict must run in eval mode"
        raise RuntimeError("boom")


@pytest.mark.parametrize("call", ["evaluate", "predict"])
def test_evaluate_and_predict_restore_modes_when_the_model_raises(call, mnist_train):
    from cnncourse import train

    model = _Raises().train()
    model.bn.eval()  # a frozen layer: must come back in eval mode, the rest in train mode
    with pytest.raises(RuntimeError, match="boom"):
        getattr(train, call)(model, mnist_train.take(8), device="cpu")
    assert model.calls == 1
    assert model.training and model.fc.training and not model.bn.training


def test_eval_mode_restores_each_submodule():
    from cnncourse.utils import eval_mode

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout()).train()
    model[1].eval()
    with pytest.raises(ValueError):
        with eval_mode(model):
            assert not any(m.training for m in model.modules())
            raise ValueError
    assert [m.training for m in model.modules()] == [True, True, False]


def test_input_pipeline_reads_what_the_model_declares(mnist_train):
    from cnncourse.models import lenet5, lenet_caffe
    from cnncourse.models.lenet import lenet1998_loss

    data = mnist_train.take(4)
    x = data.images.float()
    transform, loss_fn, target = train.input_pipeline(lenet5(variant="1998"), data)
    assert transform(x).shape[-2:] == (32, 32) and loss_fn is lenet1998_loss
    transform, loss_fn, target = train.input_pipeline(lenet5(variant="textbook", input_size=32), data)
    assert transform(x).shape[-2:] == (32, 32) and loss_fn is None
    assert train.input_pipeline(lenet_caffe(), data) == (None, None, None)


def test_input_pipeline_gives_an_autoencoder_its_input_as_target(mnist_train):
    import torch.nn.functional as F

    from cnncourse.models import conv_autoencoder

    data = mnist_train.take(4)
    x, y = data.images.float(), data.labels
    transform, loss_fn, target = train.input_pipeline(conv_autoencoder(), data)
    assert transform is None and loss_fn is F.mse_loss and target(x, y) is x
    model = conv_autoencoder()
    model.training_target = "pixels"
    with pytest.raises(ValueError, match=r"training_target must be one of \['inputs', 'labels'\], got 'pixels'"):
        train.input_pipeline(model, data)
