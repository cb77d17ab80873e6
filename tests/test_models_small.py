"""Small 28x28 twins and the building blocks: shapes, parameter counts, behaviour."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.models as tvm

from cnncourse.models import get_model
from cnncourse.models.googlenet import BasicConv2d, Inception, InceptionFactorized
from cnncourse.models.resnet import BasicBlock, Bottleneck, ZeroPadShortcut

# cnncourse.models.alexnet and .googlenet name the builders, as in torchvision, so the
# family modules are fetched by their full names
alexnet_mod, googlenet_mod, resnet_mod, vgg_mod = (
    importlib.import_module(f"cnncourse.models.{name}") for name in ("alexnet", "googlenet", "resnet", "vgg")
)


pytestmark = pytest.mark.usefixtures("one_thread")


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


SMALL = [
    ("alexnet_small", {}),
    ("alexnet_small", {"activation": "tanh"}),
    ("alexnet_small", {"groups": 2, "lrn": True, "dropout": 0.0}),
    ("vgg_small", {}),
    ("vgg_small", {"cfg": "B", "batch_norm": True}),
    ("vgg_small", {"cfg": "D"}),
    ("vgg_small", {"cfg": [16, "M", 32, "M"]}),
    ("googlenet_small", {}),
    ("cifar_resnet", {"depth": 20}),
    ("cifar_resnet", {"depth": 20, "residual": False}),
    ("cifar_resnet", {"depth": 8, "shortcut": "B"}),
]


@pytest.mark.parametrize(("name", "kwargs"), SMALL)
@pytest.mark.parametrize("size", [28, 32])
def test_small_twin_output_shape(name: str, kwargs: dict, size: int) -> None:
    torch.manual_seed(0)
    model = get_model(name, **kwargs)
    out = model(torch.randn(2, 1, size, size))
    assert out.shape == (2, 10), f"{name}{kwargs}: expected (2, 10), got {tuple(out.shape)}"
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["alexnet_small", "vgg_small", "googlenet_small", "cifar_resnet"])
def test_small_twin_in_channels_num_classes(name: str) -> None:
    model = get_model(name, in_channels=3, num_classes=4).eval()
    assert model(torch.randn(2, 3, 28, 28)).shape == (2, 4)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.randn(2, 1, 28, 28))
    with pytest.raises(ValueError, match="got \\(3, 28, 28\\)"):
        model(torch.randn(3, 28, 28))


@pytest.mark.parametrize("name", ["alexnet_small", "vgg_small", "googlenet_small", "cifar_resnet"])
def test_small_twin_learns(name: str) -> None:
    # every parameter gets a gradient, and a few Adam steps on 16 fixed images lower the loss
    torch.manual_seed(0)
    model = get_model(name, dropout=0.0) if name != "cifar_resnet" else get_model(name)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for step in range(6):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            for pname, p in model.named_parameters():
                assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: no gradient for {pname}"
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, f"{name}: loss {losses[0]:.3f} -> {losses[-1]:.3f}"


# --- cifar_resnet: He et al. Table 6 -----------------------------------------------------
# 6n+2 layers, option A (zero-padding) shortcuts, so shortcuts add no parameters.
# A 3x3 conv C_in -> C_out without bias has 9 C_in C_out weights, a BN layer 2 C.
#   stem:  conv 3->16 = 432, BN 32                                      ->     464
#   stage1: n blocks of 2 convs 16->16 (2 * 2304) + 2 BN (64) = 4672 each
#   stage2: first block 16->32 (4608) + 32->32 (9216) + 2 BN (128) = 13952,
#           n - 1 blocks of 2 * 9216 + 128 = 18560
#   stage3: first block 32->64 (18432) + 64->64 (36864) + 2 BN (256) = 55552,
#           n - 1 blocks of 2 * 36864 + 256 = 73984
#   fc: 64 * 10 + 10 = 650
# n = 3 (ResNet-20): 464 + 3*4672 + 13952 + 2*18560 + 55552 + 2*73984 + 650 = 269,722 (0.27M)
# n = 9 (ResNet-56): 464 + 9*4672 + 13952 + 8*18560 + 55552 + 8*73984 + 650 = 853,018 (0.85M)
# With one input channel the stem conv has 1*16*9 = 144 weights instead of 432 (288 fewer).
def _table6_count(n: int, in_channels: int) -> int:
    stem = 9 * in_channels * 16 + 32
    stage1 = n * 4672
    stage2 = 13952 + (n - 1) * 18560
    stage3 = 55552 + (n - 1) * 73984
    return stem + stage1 + stage2 + stage3 + 650


@pytest.mark.parametrize(("depth", "expected"), [(20, 269_722), (56, 853_018)])
@pytest.mark.parametrize("residual", [True, False])
def test_cifar_resnet_param_count_table6(depth: int, expected: int, residual: bool) -> None:
    assert _table6_count((depth - 2) // 6, 3) == expected
    model = resnet_mod.cifar_resnet(depth, residual=residual, in_channels=3)
    assert _n_params(model) == expected
    grey = resnet_mod.cifar_resnet(depth, residual=residual, in_channels=1)
    assert _n_params(grey) == expected - 288 == _table6_count((depth - 2) // 6, 1)


def test_cifar_resnet_layer_count_is_6n_plus_2() -> None:
    for depth in (8, 20, 56):
        model = resnet_mod.cifar_resnet(depth)
        weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert len(weighted) == depth


def test_cifar_resnet_option_b_adds_projections() -> None:
    # option B: 1x1 projections 16->32 (512 + BN 64) and 32->64 (2048 + BN 128) = 2752 extra
    a = resnet_mod.cifar_resnet(20, in_channels=3)
    b = resnet_mod.cifar_resnet(20, in_channels=3, shortcut="B")
    assert _n_params(b) - _n_params(a) == 2752


def test_cifar_resnet_plain_has_no_shortcut() -> None:
    # same keys, so residual weights load into the plain twin; the outputs then differ only
    # because the shortcuts are gone
    torch.manual_seed(0)
    res = resnet_mod.cifar_resnet(20).eval()
    plain = resnet_mod.cifar_resnet(20, residual=False).eval()
    plain.load_state_dict(res.state_dict(), strict=True)
    assert all(not m.residual and m.downsample is None for m in plain.modules() if isinstance(m, BasicBlock))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert not torch.allclose(res(x), plain(x))


def test_cifar_resnet_bad_depth() -> None:
    for depth in (19, 21, 2):
        with pytest.raises(ValueError, match="6n \\+ 2"):
            resnet_mod.cifar_resnet(depth)
    for residual in (True, False):
        with pytest.raises(ValueError, match="shortcut"):
            resnet_mod.cifar_resnet(20, residual=residual, shortcut="C")
    with pytest.raises(ValueError, match="shortcut"):
        Bottleneck(8, 4, shortcut="projection")


# --- ResNet blocks -----------------------------------------------------------------------
def _bn_eval(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _randomise_bn(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


def test_basic_block_identity() -> None:
    torch.manual_seed(0)
    block = BasicBlock(8, 8).eval()
    _randomise_bn(block)
    assert block.downsample is None
    assert _n_params(block) == 2 * 9 * 8 * 8 + 2 * 16
    x = torch.randn(2, 8, 9, 9)
    f = F.relu(_bn_eval(block.bn1, F.conv2d(x, block.conv1.weight, padding=1)))
    f = _bn_eval(block.bn2, F.conv2d(f, block.conv2.weight, padding=1))
    with torch.no_grad():
        torch.testing.assert_close(block(x), F.relu(f + x))


@pytest.mark.parametrize(
    ("c_in", "c_out", "stride", "size", "out_size"), [(8, 16, 2, 9, 5), (8, 12, 1, 7, 7), (6, 6, 2, 10, 5)]
)
def test_basic_block_projection_when_shape_changes(
    c_in: int, c_out: int, stride: int, size: int, out_size: int
) -> None:
    torch.manual_seed(0)
    block = BasicBlock(c_in, c_out, stride=stride).eval()
    _randomise_bn(block)
    proj_conv, proj_bn = block.downsample
    assert proj_conv.weight.shape == (c_out, c_in, 1, 1) and proj_conv.stride == (stride, stride)
    # two 3x3 convs + two BNs + the 1x1 projection and its BN
    assert _n_params(block) == 9 * c_in * c_out + 9 * c_out * c_out + 2 * 2 * c_out + c_in * c_out + 2 * c_out
    x = torch.randn(2, c_in, size, size)
    f = F.relu(_bn_eval(block.bn1, F.conv2d(x, block.conv1.weight, stride=stride, padding=1)))
    f = _bn_eval(block.bn2, F.conv2d(f, block.conv2.weight, padding=1))
    shortcut = _bn_eval(proj_bn, F.conv2d(x, proj_conv.weight, stride=stride))
    with torch.no_grad():
        out = block(x)
    assert out.shape == (2, c_out, out_size, out_size)
    torch.testing.assert_close(out, F.relu(f + shortcut))


def test_zero_pad_shortcut() -> None:
    x = torch.randn(2, 4, 7, 7)
    out = ZeroPadShortcut(4, 8, stride=2)(x)
    assert out.shape == (2, 8, 4, 4)
    torch.testing.assert_close(out[:, 2:6], x[:, :, ::2, ::2])
    assert (out[:, :2] == 0).all() and (out[:, 6:] == 0).all()
    assert _n_params(BasicBlock(4, 8, stride=2, shortcut="A")) == _n_params(BasicBlock(4, 8, stride=2, residual=False))
    with pytest.raises(ValueError, match="out_channels >= in_channels"):
        ZeroPadShortcut(8, 4, stride=1)


@pytest.mark.parametrize(
    ("c_in", "planes", "stride", "projected"), [(16, 4, 1, False), (8, 4, 1, True), (16, 8, 2, True)]
)
def test_bottleneck(c_in: int, planes: int, stride: int, projected: bool) -> None:
    torch.manual_seed(0)
    block = Bottleneck(c_in, planes, stride=stride).eval()
    _randomise_bn(block)
    c_out = 4 * planes
    assert (block.downsample is not None) == projected
    expected = c_in * planes + 9 * planes * planes + planes * c_out + 2 * (planes + planes + c_out)
    if projected:
        expected += c_in * c_out + 2 * c_out
    assert _n_params(block) == expected
    x = torch.randn(2, c_in, 8, 8)
    f = F.relu(_bn_eval(block.bn1, F.conv2d(x, block.conv1.weight)))
    f = F.relu(_bn_eval(block.bn2, F.conv2d(f, block.conv2.weight, stride=stride, padding=1)))
    f = _bn_eval(block.bn3, F.conv2d(f, block.conv3.weight))
    shortcut = block.downsample(x) if projected else x
    with torch.no_grad():
        out = block(x)
    assert out.shape == (2, c_out, 8 // stride, 8 // stride)
    torch.testing.assert_close(out, F.relu(f + shortcut))


def test_bottleneck_matches_torchvision_block() -> None:
    torch.manual_seed(0)
    theirs = tvm.resnet.Bottleneck(64, 32, stride=2, downsample=nn.Sequential(
        nn.Conv2d(64, 128, 1, stride=2, bias=False), nn.BatchNorm2d(128))).eval()
    _randomise_bn(theirs)
    ours = Bottleneck(64, 32, stride=2).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


# --- Inception blocks --------------------------------------------------------------------
def test_inception_concatenates_branches() -> None:
    # inception (3a) of Table 1: 64 + 128 + 32 + 32 = 256 output channels
    torch.manual_seed(0)
    block = Inception(192, 64, 96, 128, 16, 32, 32).eval()
    x = torch.randn(2, 192, 7, 7)
    with torch.no_grad():
        out = block(x)
        parts = [block.branch1(x), block.branch2(x), block.branch3(x), block.branch4(x)]
    assert out.shape == (2, 256, 7, 7) and block.out_channels == 256
    assert [p.shape[1] for p in parts] == [64, 128, 32, 32]
    torch.testing.assert_close(out, torch.cat(parts, 1))
    assert block.branch3[1].conv.weight.shape == (32, 16, 5, 5)  # the paper's 5x5


def test_inception_reduction_saves_parameters() -> None:
    # the 1x1 reductions are why the block is cheap: 3a with and without them
    with_red = Inception(192, 64, 96, 128, 16, 32, 32)
    conv_weights = sum(m.weight.numel() for m in with_red.modules() if isinstance(m, nn.Conv2d))
    assert conv_weights == 192 * 64 + 192 * 96 + 9 * 96 * 128 + 192 * 16 + 25 * 16 * 32 + 192 * 32
    # Figure 2(a), the naive block: 3x3 and 5x5 straight on the 192 channels, no 1x1 anywhere but branch 1
    naive = 192 * 64 + 9 * 192 * 128 + 25 * 192 * 32
    assert conv_weights == 163_328 and naive == 387_072


def test_inception_kernel_option() -> None:
    block = Inception(8, 2, 2, 2, 2, 2, 2, kernel_5x5=3)
    assert block.branch3[1].conv.weight.shape == (2, 2, 3, 3)
    with pytest.raises(ValueError, match="odd"):
        Inception(8, 2, 2, 2, 2, 2, 2, kernel_5x5=4)


@pytest.mark.parametrize("n", [3, 7])
def test_inception_factorized(n: int) -> None:
    torch.manual_seed(0)
    block = InceptionFactorized(16, 8, 6, 10, 4, 12, 5, n=n).eval()
    x = torch.randn(2, 16, 9, 9)
    with torch.no_grad():
        out = block(x)
        parts = [block.branch1(x), block.branch2(x), block.branch3(x), block.branch4(x)]
    assert out.shape == (2, 8 + 10 + 12 + 5, 9, 9) and block.out_channels == 35
    torch.testing.assert_close(out, torch.cat(parts, 1))
    kernels = [tuple(m.weight.shape[2:]) for m in block.branch2.modules() if isinstance(m, nn.Conv2d)]
    assert kernels == [(1, 1), (1, n), (n, 1)]
    kernels = [tuple(m.weight.shape[2:]) for m in block.branch3.modules() if isinstance(m, nn.Conv2d)]
    assert kernels == [(1, 1), (n, 1), (1, n), (n, 1), (1, n)]
    # one 1 x n then n x 1 (6 -> 6 -> 10) costs n*6*6 + n*6*10 weights, an n x n 6 -> 10 costs n*n*6*10
    conv_1xn, conv_nx1 = block.branch2[1].conv, block.branch2[2].conv
    assert conv_1xn.weight.numel() + conv_nx1.weight.numel() == n * 36 + n * 60 < n * n * 60


def test_inception_factorized_bad_n() -> None:
    with pytest.raises(ValueError, match="odd"):
        InceptionFactorized(4, 1, 1, 1, 1, 1, 1, n=4)


def _basic_conv(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k + 2 * c_out  # conv without bias, then BN weight and bias


def _inception(c_in: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pool: int) -> int:
    return (_basic_conv(c_in, c1, 1) + _basic_conv(c_in, c3r, 1) + _basic_conv(c3r, c3, 3)
            + _basic_conv(c_in, c5r, 1) + _basic_conv(c5r, c5, 5) + _basic_conv(c_in, pool, 1))


def test_googlenet_small_uses_inception() -> None:
    model = googlenet_mod.googlenet_small()
    blocks = [m for m in model.modules() if isinstance(m, Inception)]
    assert len(blocks) == 4
    assert all(b.branch3[1].conv.kernel_size == (5, 5) for b in blocks)
    assert isinstance(model.conv1, BasicConv2d)
    expected = (_basic_conv(1, 32, 3) + _basic_conv(32, 48, 3)
                + _inception(48, 16, 24, 32, 4, 8, 8) + _inception(64, 32, 32, 48, 8, 16, 16)
                + _inception(112, 48, 32, 64, 8, 24, 24) + _inception(160, 48, 48, 64, 12, 24, 24)
                + 160 * 10 + 10)
    assert _n_params(model) == expected


# --- AlexNet and VGG twins ---------------------------------------------------------------
def test_alexnet_small_activation_and_groups() -> None:
    relu = alexnet_mod.alexnet_small()
    tanh = alexnet_mod.alexnet_small(activation="tanh")
    assert any(isinstance(m, nn.ReLU) for m in relu.modules())
    assert not any(isinstance(m, nn.Tanh) for m in relu.modules())
    assert sum(isinstance(m, nn.Tanh) for m in tanh.modules()) == 7  # five convs + two hidden FC
    assert _n_params(relu) == _n_params(tanh)
    split = alexnet_mod.alexnet_small(groups=2)
    convs = [m for m in split.features if isinstance(m, nn.Conv2d)]
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]
    # conv2 (5x5, 32->64), conv4 (3x3, 96->96), conv5 (3x3, 96->64) lose half their weights
    saved = (25 * 32 * 64 + 9 * 96 * 96 + 9 * 96 * 64) // 2
    assert _n_params(relu) - _n_params(split) == saved
    with pytest.raises(ValueError, match="'relu' or 'tanh'"):
        alexnet_mod.alexnet_small(activation="sigmoid")
    with pytest.raises(ValueError, match="groups"):
        alexnet_mod.alexnet_small(groups=3)


def test_alexnet_small_param_count() -> None:
    convs = 25 * 1 * 32 + 32 + 25 * 32 * 64 + 64 + 9 * 64 * 96 + 96 + 9 * 96 * 96 + 96 + 9 * 96 * 64 + 64
    fcs = 256 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10
    assert _n_params(alexnet_mod.alexnet_small()) == convs + fcs == 645_258


def test_make_vgg_features_matches_torchvision_layout() -> None:
    for key, cfg in vgg_mod.cfgs.items():
        for bn in (False, True):
            with torch.device("meta"):  # layout only, so skip allocating and initialising
                ours = vgg_mod.make_vgg_features(cfg, in_channels=3, batch_norm=bn)
                theirs = tvm.vgg.make_layers(cfg, batch_norm=bn)
            assert [type(m) for m in ours] == [type(m) for m in theirs], key
            assert {k: v.shape for k, v in ours.state_dict().items()} == {
                k: v.shape for k, v in theirs.state_dict().items()
            }


def test_make_vgg_features_shapes_and_errors() -> None:
    feats = vgg_mod.make_vgg_features([8, 8, "M", 16, "M"], in_channels=1)
    assert feats(torch.randn(2, 1, 28, 28)).shape == (2, 16, 7, 7)
    for bad in ([8, "X"], [0, "M"], ["M"], [8, 2.5]):
        with pytest.raises(ValueError):
            vgg_mod.make_vgg_features(bad)
    with pytest.raises(ValueError, match="cfg must be one of"):
        vgg_mod.vgg_small(cfg="Z")


def test_vgg_small_param_count() -> None:
    convs = 9 * 1 * 32 + 32 + 9 * 32 * 64 + 64 + 9 * 64 * 128 + 128 + 9 * 128 * 128 + 128
    fcs = 128 * 3 * 3 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    assert _n_params(vgg_mod.vgg_small()) == convs + fcs == 603_786


def _paper_lrn(a: torch.Tensor, n: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0) -> torch.Tensor:
    """Krizhevsky et al. 2012, Section 3.3, written out: the sum of squares is NOT divided by n."""
    out = torch.empty_like(a)
    channels = a.shape[1]
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        out[:, i] = a[:, i] / (k + alpha * (a[:, lo : hi + 1] ** 2).sum(dim=1)) ** beta
    return out


def test_lrn_matches_the_paper_formula() -> None:
    # activations of a few tens, as after a ReLU on unnormalised pixels: alpha * sum(a^2) is then
    # of order 1, so dividing alpha by n (torch's convention) changes the output visibly
    a = torch.rand(2, 12, 5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 60
    expected = _paper_lrn(a)
    layer = alexnet_mod.PaperLocalResponseNorm()
    torch.testing.assert_close(layer(a), expected)
    # torch's layer with the paper's numbers is a different function: the test can tell them apart
    plain = nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)
    assert (plain(a) - expected).abs().max() > 1e-2
    # the networks use the paper's layer, twice, and it computes the paper's formula
    for model in (get_model("alexnet_small", lrn=True), alexnet_mod.alexnet(lrn=True)):
        norms = [m for m in model.modules() if isinstance(m, nn.LocalResponseNorm)]
        assert len(norms) == 2
        for norm in norms:
            torch.testing.assert_close(norm(a), expected)
    assert not any(isinstance(m, nn.LocalResponseNorm) for m in get_model("alexnet_small").modules())
    assert "alpha=0.0001 (paper" in repr(layer)


def test_alexnet_lrn_keeps_torchvision_keys_and_shapes() -> None:
    with torch.device("meta"):
        ours = alexnet_mod.alexnet(lrn=True)
        reference = tvm.alexnet()
        out = ours.eval()(torch.empty(1, 3, 224, 224))
    assert out.shape == (1, 1000)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    # LRN sits after the ReLU of conv1 and conv2, before their max-pools (Section 3.5)
    assert [type(m).__name__ for m in ours.features[1]] == ["ReLU", "PaperLocalResponseNorm"]
    assert [type(m).__name__ for m in ours.features[4]] == ["ReLU", "PaperLocalResponseNorm"]
