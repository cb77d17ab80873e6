"""LeNet family: paper parameter/connection counts, layer semantics, bad input."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnncourse.analysis import count_parameters, summary
from cnncourse.models._registry import get_model, list_models
from cnncourse.models.lenet import (
    C3_TABLE,
    EuclideanRBF,
    PartialConv2d,
    ScaledTanh,
    Subsampling,
    lenet1998_loss,
    lenet5,
    lenet_caffe,
    rbf_codes,
)

# LeCun et al. 1998, section II.B: (trainable parameters, connections) per layer.
PAPER_1998 = {
    "c1": (156, 122_304),
    "s2": (12, 5_880),
    "c3": (1_516, 151_600),
    "s4": (32, 2_000),
    "c5": (48_120, 48_120),
    "f6": (10_164, 10_164),
}


@pytest.fixture(scope="module")
def table_1998():
    return summary(lenet5("1998"), (1, 32, 32))


@pytest.mark.parametrize("layer", sorted(PAPER_1998))
def test_1998_per_layer_counts_match_paper(table_1998, layer):
    row = table_1998[layer]
    assert (row.params, row.connections) == PAPER_1998[layer], f"{layer}: got {(row.params, row.connections)}"


def test_1998_totals_and_shapes(table_1998):
    model = lenet5()
    assert count_parameters(model) == 60_000
    assert count_parameters(model, trainable_only=False) == 60_000  # codes are a buffer, not a parameter
    assert table_1998["output"].params == 0 and table_1998["output"].connections == 840
    shapes = {r.name: r.output_shape for r in table_1998.rows if r.name != "act"}
    assert shapes == {"c1": (6, 28, 28), "s2": (6, 14, 14), "c3": (16, 10, 10), "s4": (16, 5, 5),
                      "c5": (120, 1, 1), "f6": (84,), "output": (10,)}  # fmt: skip


def test_textbook_total_is_61706_for_both_input_sizes():
    for size in (28, 32):
        model = lenet5("textbook", input_size=size)
        assert count_parameters(model) == 61_706
        table = summary(model, (1, size, size))
        assert table["features.conv1"].output_shape == (6, 28, 28)
        assert table["features.conv2"].params == 2_416
        assert table["classifier.fc3"].params == 850
        assert model(torch.zeros(2, 1, size, size)).shape == (2, 10)


def test_textbook_activation_and_pool_choices():
    m = lenet5("textbook", activation="tanh", pool="avg")
    types = {type(x) for x in m.modules()}
    assert nn.Tanh in types and nn.AvgPool2d in types and nn.ReLU not in types and nn.MaxPool2d not in types
    m = lenet5("textbook")
    types = {type(x) for x in m.modules()}
    assert nn.ReLU in types and nn.MaxPool2d in types


def test_caffe_counts():
    model = lenet_caffe()
    assert count_parameters(model) == 431_080
    table = summary(model, (1, 28, 28))
    assert [table[n].params for n in ("features.conv1", "features.conv2", "classifier.fc1", "classifier.fc2")] == [
        520, 25_050, 400_500, 5_010]  # fmt: skip
    assert table["features.pool2"].output_shape == (50, 4, 4)


def test_registry_lists_builders():
    assert {"lenet5", "lenet_caffe"} <= set(list_models())
    assert count_parameters(get_model("lenet5", variant="textbook")) == 61_706


def test_c3_follows_table_one():
    torch.manual_seed(0)
    c3 = PartialConv2d(6, C3_TABLE)
    with torch.no_grad():
        c3.weight.normal_()
        c3.bias.normal_()
    dense = c3.dense_weight()
    for j, inputs in enumerate(C3_TABLE):
        for i in range(6):
            nonzero = bool(dense[j, i].abs().sum() > 0)
            assert nonzero == (i in inputs), f"C3 map {j} / S2 map {i}: connected={nonzero}, table says {i in inputs}"
    x = torch.randn(2, 6, 14, 14)
    # Independent reference: one small convolution per C3 map over only its S2 maps.
    ref = torch.cat([F.conv2d(x[:, list(inp)], dense[j : j + 1, list(inp)], c3.bias[j : j + 1])
                     for j, inp in enumerate(C3_TABLE)], dim=1)  # fmt: skip
    torch.testing.assert_close(c3(x), ref)


def test_partial_conv_and_subsampling_gradcheck():
    torch.manual_seed(0)
    c3 = PartialConv2d(6, C3_TABLE).double()
    with torch.no_grad():
        c3.weight.normal_()
    x = torch.randn(1, 6, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(c3, (x,))
    s = Subsampling(3).double()
    y = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(s, (y,))


def test_subsampling_is_coefficient_times_2x2_sum_plus_bias():
    s = Subsampling(2)
    with torch.no_grad():
        s.weight.copy_(torch.tensor([0.5, -2.0]))
        s.bias.copy_(torch.tensor([1.0, 3.0]))
    x = torch.randn(3, 2, 6, 6)
    window_sum = x.reshape(3, 2, 3, 2, 3, 2).sum(dim=(3, 5))
    expected = window_sum * torch.tensor([0.5, -2.0]).view(1, 2, 1, 1) + torch.tensor([1.0, 3.0]).view(1, 2, 1, 1)
    torch.testing.assert_close(s(x), expected)


def test_scaled_tanh_maps_one_to_one():
    f = ScaledTanh()
    torch.testing.assert_close(f(torch.tensor([-1.0, 0.0, 1.0])), torch.tensor([-1.0, 0.0, 1.0]), atol=1e-4, rtol=0)


def test_rbf_codes_fixed_and_distinct():
    codes = rbf_codes()
    assert codes.shape == (10, 84)
    assert set(codes.unique().tolist()) == {-1.0, 1.0}
    torch.testing.assert_close(codes, rbf_codes())  # deterministic
    hamming = (torch.cdist(codes, codes) ** 2 / 4).round()
    off_diag = hamming[~torch.eye(10, dtype=torch.bool)]
    assert off_diag.min() >= 8, f"closest codes differ in {off_diag.min()} pixels"
    model = lenet5()
    torch.testing.assert_close(model.output.codes, codes)
    assert "output.codes" not in dict(model.named_parameters())


def test_rbf_returns_negative_squared_distance():
    codes = rbf_codes()
    rbf = EuclideanRBF(codes)
    x = torch.randn(4, 84)
    torch.testing.assert_close(rbf(x), -torch.cdist(x, codes) ** 2, atol=1e-3, rtol=1e-4)
    out = rbf(codes)
    assert out.argmax(1).tolist() == list(range(10))
    torch.testing.assert_close(out.diagonal(), torch.zeros(10))


def test_lenet1998_loss_tends_to_cross_entropy():
    torch.manual_seed(0)
    scores = -torch.rand(5, 10) * 20
    target = torch.randint(0, 10, (5,))
    ce = F.cross_entropy(scores, target)
    torch.testing.assert_close(lenet1998_loss(scores, target, j=1e4), ce)
    assert lenet1998_loss(scores, target, j=1.0) > ce  # the extra exp(-j) term only adds


def test_1998_model_learns_a_tiny_batch():
    torch.manual_seed(0)
    model = lenet5()
    x, y = torch.randn(32, 1, 32, 32), torch.arange(32) % 10
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        loss = F.cross_entropy(model(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first, f"loss went from {first:.3f} to {loss.item():.3f}"


def test_output_is_the_same_in_train_and_eval_mode():
    model = lenet5()
    x = torch.randn(2, 1, 32, 32)
    out_train = model.train()(x)
    torch.testing.assert_close(model.eval()(x), out_train)


@pytest.mark.parametrize(
    "build, kwargs",
    [
        (lenet5, {"variant": "1999"}),
        (lenet5, {"variant": "1998", "activation": "relu"}),
        (lenet5, {"variant": "1998", "num_classes": 26}),
        (lenet5, {"variant": "1998", "input_size": 28}),
        (lenet5, {"variant": "textbook", "activation": "gelu"}),
        (lenet5, {"variant": "textbook", "pool": "lp"}),
        (lenet5, {"variant": "textbook", "input_size": 30}),
    ],
)
def test_bad_arguments_raise(build, kwargs):
    with pytest.raises(ValueError):
        build(**kwargs)


@pytest.mark.parametrize("model, shape", [(lenet5(), (2, 1, 28, 28)), (lenet5("textbook"), (2, 1, 32, 32)),
                                          (lenet_caffe(), (1, 28, 28)), (lenet5(), (2, 3, 32, 32))])  # fmt: skip
def test_wrong_input_shape_raises_with_expected_and_got(model, shape):
    with pytest.raises(ValueError, match="expected input"):
        model(torch.zeros(shape))


def test_paper_scaling_background_and_ink():
    from cnncourse.models.lenet import paper_scaling

    mean, std = 0.1307, 0.3081
    x01 = torch.zeros(2, 1, 28, 28)
    x01[:, :, 10:12, 10:12] = 1.0
    out = paper_scaling(mean, std)((x01 - mean) / std)
    assert out.shape == (2, 1, 32, 32)
    torch.testing.assert_close(out[0, 0, 0, 0], torch.tensor(-0.1))
    torch.testing.assert_close(out[0, 0, 12, 12], torch.tensor(1.175))
    with pytest.raises(ValueError, match="expected a batch"):
        paper_scaling(mean, std)(torch.zeros(1, 1, 40, 40))
