"""summary / count_parameters / flops / receptive_field."""

import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cnncourse.analysis import count_parameters, flops, receptive_field, summary
from cnncourse.models.lenet import lenet5


def test_lenet_1998_receptive_fields_match_paper():
    table = summary(lenet5(), (1, 32, 32))
    got = {n: table[n].rf_size for n in ("c1", "s2", "c3", "s4", "c5")}
    assert got == {"c1": 5, "s2": 6, "c3": 14, "s4": 16, "c5": 32}


@pytest.mark.parametrize("depth, expected", [(1, 3), (2, 5), (3, 7)])
def test_stacked_3x3_convs_see_2n_plus_1(depth, expected):
    layers = []
    for _ in range(depth):
        layers += [nn.Conv2d(2, 2, 3, padding=1), nn.ReLU()]
    rf = receptive_field(nn.Sequential(*layers), (2, 16, 16))
    assert rf.size == (expected, expected) and rf.jump == (1, 1)


def _brute_force_box(model: nn.Module, size: int, i: int, j: int) -> tuple[int, int, int, int]:
    """Bounding box of the input pixels that influence output unit (i, j), from the gradient."""
    x = torch.zeros(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    model(x)[0, 0, i, j].backward()
    rows, cols = torch.nonzero(x.grad[0, 0], as_tuple=True)
    return rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item()


layer_spec = st.tuples(
    st.sampled_from(["conv", "avg"]),
    st.integers(1, 4),  # kernel
    st.integers(1, 3),  # stride
    st.integers(0, 2),  # padding
    st.integers(1, 2),  # dilation (conv only)
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=st.lists(layer_spec, min_size=1, max_size=4))
def test_receptive_field_matches_gradient_support(specs):
    layers = []
    for kind, k, s, p, d in specs:
        p = min(p, k // 2)
        if kind == "conv":
            conv = nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d, bias=False).double()
            nn.init.ones_(conv.weight)
            layers.append(conv)
        else:
            layers.append(nn.AvgPool2d(k, stride=s, padding=p))
    model = nn.Sequential(*layers)
    size = 48
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, 1, size, size, dtype=torch.float64))
    except RuntimeError:  # a kernel grew larger than its input: not a valid network
        assume(False)
    rf = receptive_field(model, (1, size, size))
    u = out.shape[-1] // 2
    centre = rf.start[0] + u * rf.jump[0]
    lo, hi = centre - (rf.size[0] - 1) / 2, centre + (rf.size[0] - 1) / 2
    assume(lo >= 0 and hi <= size - 1)  # box fully inside the image: padding cannot clip it
    r0, r1, c0, c1 = _brute_force_box(model, size, u, u)
    assert (r0, r1) == (lo, hi) and (c0, c1) == (lo, hi), f"specs {specs}: brute force {(r0, r1)}, formula {(lo, hi)}"


def test_paper_style_connections_and_macs_for_conv_and_linear():
    model = nn.Sequential(nn.Conv2d(4, 6, 3, groups=2), nn.Flatten(), nn.Linear(6 * 8 * 8, 5))
    table = summary(model, (4, 10, 10))
    # conv: 6*8*8 outputs, each reads (4/2)*3*3 weights + 1 bias
    assert table["0"].connections == 6 * 8 * 8 * (2 * 9 + 1)
    assert table["0"].macs == 6 * 8 * 8 * 2 * 9
    assert table["2"].connections == 5 * (384 + 1) and table["2"].macs == 5 * 384
    assert flops(model, (4, 10, 10)) == 2 * (6 * 8 * 8 * 18 + 5 * 384)


def test_count_parameters_trainable_only():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=False) == 12 + 4 + 8 + 8 + 2
    assert count_parameters(model) == 12 + 4 + 8 + 8 + 2 - 12


def test_summary_removes_hooks_and_keeps_outputs_and_mode():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Dropout(0.5), nn.Linear(64, 3)
    )
    model.eval()
    x = torch.randn(2, 1, 6, 6)
    before = model(x)
    stats = model[1].running_mean.clone()
    model.train()
    summary(model, (1, 6, 6))
    assert model.training, "summary must restore train mode"
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    torch.testing.assert_close(model[1].running_mean, stats)  # ran in eval mode: no BN update
    model.eval()
    torch.testing.assert_close(model(x), before)


def test_summary_table_prints_aligned_and_converts():
    table = summary(lenet5("textbook"), (1, 28, 28))
    lines = str(table).splitlines()
    body = lines[:-1]
    assert len({len(line) for line in body}) == 1, "table lines must have equal width"
    assert "61,706 trainable" in lines[-1]
    dicts = table.to_dicts()
    assert dicts[0]["name"] == "features.conv1" and dicts[0]["output_shape"] == (6, 28, 28)
    assert set(dicts[0]) == {"name", "type", "output_shape", "params", "connections", "macs",
                             "rf_size", "rf_jump", "rf_start"}  # fmt: skip
    compact = summary(lenet5("textbook"), (1, 28, 28), show_elementwise=False)
    expected = ["Conv2d", "MaxPool2d", "Conv2d", "MaxPool2d", "Linear", "Linear", "Linear"]
    assert [r.type for r in compact.rows] == expected


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 1, 3, padding=1)
        self.conv2 = nn.Conv2d(1, 1, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv2(self.conv1(x)) + x)


class _Inception(nn.Module):
    def __init__(self):
        super().__init__()
        self.b1 = nn.Conv2d(1, 1, 1)
        self.b5 = nn.Conv2d(1, 1, 5, padding=2)
        self.head = nn.Conv2d(2, 1, 1)

    def forward(self, x):
        return self.head(torch.cat([self.b1(x), self.b5(x)], 1))


def test_branching_models_report_largest_path():
    assert summary(_Residual(), (1, 8, 8))["relu"].rf_size == 5  # conv path 5 > identity 1
    assert summary(_Inception(), (1, 8, 8))["head"].rf_size == 5  # 5x5 branch > 1x1 branch


def test_alexnet_geometry():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.alexnet()
    table = summary(model, (3, 224, 224))
    assert [table[f"features.{i}"].rf_size for i in (0, 3, 6, 8, 10)] == [11, 51, 99, 131, 163]
    assert round(flops(model, (3, 224, 224)) / 2e9, 2) == 0.71  # torchvision lists 0.71 GFLOPS (multiply-adds)


@pytest.mark.parametrize("bad", [(28, 28), (1, 0, 28), (1, 1, 1, 28, 28)])
def test_bad_input_size_raises(bad):
    with pytest.raises(ValueError, match="input_size"):
        summary(lenet5("textbook"), bad)


def test_course_layers_count_like_torch_layers():
    from cnncourse import layers

    ours = nn.Sequential(layers.Conv2d(1, 6, 5, padding=2), nn.ReLU(), layers.MaxPool2d(2))
    ref = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
    a, b = summary(ours, (1, 28, 28)).to_dicts(), summary(ref, (1, 28, 28)).to_dicts()
    for row_a, row_b in zip(a, b):
        row_a.pop("type"), row_b.pop("type")
        assert row_a == row_b
