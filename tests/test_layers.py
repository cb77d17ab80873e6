"""cnncourse.layers as drop-ins for torch.nn, and a small network of them trained on MNIST."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from cnncourse import layers as L
from cnncourse.data import load_dataset
from cnncourse.train import evaluate, fit

DT = torch.float64


@pytest.mark.parametrize(
    "args,kwargs",
    [
        ((3, 8, 3), {}),
        ((1, 6, 5), {"bias": False}),
        ((2, 4, (3, 2)), {"stride": 2, "padding": (1, 0), "dilation": (1, 2)}),
    ],
)
def test_conv2d_state_dict_loads_both_ways(args, kwargs):
    torch.manual_seed(0)
    ours, ref = L.Conv2d(*args, **kwargs).double(), nn.Conv2d(*args, **kwargs).double()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    x = torch.randn(2, args[0], 9, 8, dtype=DT)

    ours.load_state_dict(ref.state_dict())  # torch -> ours
    torch.testing.assert_close(ours(x), ref(x))

    fresh = L.Conv2d(*args, **kwargs).double()
    ref.load_state_dict(fresh.state_dict())  # ours -> torch
    torch.testing.assert_close(ref(x), fresh(x))


def test_conv2d_parameter_names_count_and_init_scale_match_torch():
    torch.manual_seed(0)
    ours, ref = L.Conv2d(6, 16, 5), nn.Conv2d(6, 16, 5)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()] == ["weight", "bias"]
    # LeNet-5's C3 without the partial connection table: 16 * (6 * 25 + 1)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters()) == 2416
    bound = 1 / (6 * 25) ** 0.5  # kaiming_uniform(a=sqrt(5)) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert ours.weight.abs().max() <= bound and ours.bias.abs().max() <= bound
    assert ours.weight.std() > bound / 3  # not collapsed to zeros
    assert "bias=False" in repr(L.Conv2d(1, 2, 3, bias=False)) and "padding=(1, 1)" in repr(L.Conv2d(1, 2, 3, padding=1))


def test_conv2d_constructor_errors():
    with pytest.raises(ValueError, match="positive in_channels and out_channels, got 0 and 4"):
        L.Conv2d(0, 4, 3)
    with pytest.raises(ValueError, match=r"kernel_size must be positive, got \(0, 3\)"):
        L.Conv2d(1, 4, (0, 3))
    with pytest.raises(ValueError, match="stride must be an int or a pair of ints"):
        L.Conv2d(1, 4, 3, stride=1.0)


@pytest.mark.parametrize(
    "ours,ref",
    [
        (L.MaxPool2d(2), nn.MaxPool2d(2)),
        (L.MaxPool2d(3, stride=2, padding=1), nn.MaxPool2d(3, stride=2, padding=1)),
        (L.AvgPool2d(2), nn.AvgPool2d(2)),
        (L.AvgPool2d((3, 2), stride=1, padding=(1, 0)), nn.AvgPool2d((3, 2), stride=1, padding=(1, 0))),
    ],
)
def test_pool_layers_match_torch(ours, ref):
    x = torch.randn(2, 3, 9, 8, dtype=DT, requires_grad=True)
    out, want = ours(x), ref(x)
    torch.testing.assert_close(out, want)
    g = torch.randn_like(want)
    torch.testing.assert_close(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(want, x, g)[0])
    assert list(ours.parameters()) == []
    assert ours.stride == ref.stride


def test_small_network_of_course_layers_learns_mnist():
    train = load_dataset("mnist", "train").take(2000, seed=0)
    test = load_dataset("mnist", "test").take(1000, seed=0)
    torch.manual_seed(0)
    net = nn.Sequential(
        L.Conv2d(1, 8, 5), nn.ReLU(), L.MaxPool2d(2),  # (N, 8, 12, 12)
        L.Conv2d(8, 16, 5), nn.ReLU(), L.MaxPool2d(2),  # (N, 16, 4, 4)
        nn.Flatten(), nn.Linear(256, 10),
    )
    fit(net, train, epochs=1, lr=3e-3, batch_size=32, progress=False, device="cpu", seed=0)
    accuracy = evaluate(net, test, device="cpu")["accuracy"]
    assert accuracy > 0.80, f"expected > 80% test accuracy after 1 epoch on 2,000 images, got {accuracy:.3f}"
