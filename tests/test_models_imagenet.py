"""Full-size AlexNet, VGG, GoogLeNet and ResNet against torchvision.

For every builder: the parameter count equals torchvision's (and the count torchvision
publishes for its ImageNet weights), torchvision's ``state_dict()`` loads into ours with
``strict=True``, and both give the same outputs on a small batch in eval mode.

To keep the suite fast, both models are built on the ``meta`` device (no memory, no init
cost). torchvision's is then materialised and every tensor of its state dict, batch-norm
statistics included, is filled with seeded random values: with the default batch-norm
state (mean 0, var 1, weight 1, bias 0) every BN layer is the same function, and a
mismatched BN layer could not change the output. Ours receives those tensors with
``assign=True``. Inputs are 32x32 (64x64 for AlexNet), which the adaptive pools accept.
"""

from __future__ import annotations

import importlib

import pytest
import torch
import torchvision.models as tvm

from cnncourse.models import get_model, list_models

# cnncourse.models.alexnet and .googlenet name the builders, as in torchvision, so the
# family modules are fetched by their full names
alexnet_mod, googlenet_mod, resnet_mod, vgg_mod = (
    importlib.import_module(f"cnncourse.models.{name}") for name in ("alexnet", "googlenet", "resnet", "vgg")
)

# builder name -> torchvision's published parameter count for its ImageNet weights
PUBLISHED = {
    "alexnet": tvm.AlexNet_Weights.IMAGENET1K_V1.meta["num_params"],
    "vgg11": tvm.VGG11_Weights.IMAGENET1K_V1.meta["num_params"],
    "vgg11_bn": tvm.VGG11_BN_Weights.IMAGENET1K_V1.meta["num_params"],
    "vgg13": tvm.VGG13_Weights.IMAGENET1K_V1.meta["num_params"],
    "vgg13_bn": tvm.VGG13_BN_Weights.IMAGENET1K_V1.meta["num_params"],
    "vgg16": tvm.VGG16_Weights.IMAGENET1K_V1.meta["num_params"],
    "vgg16_bn": tvm.VGG16_BN_Weights.IMAGENET1K_V1.meta["num_params"],
    "vgg19": tvm.VGG19_Weights.IMAGENET1K_V1.meta["num_params"],
    "vgg19_bn": tvm.VGG19_BN_Weights.IMAGENET1K_V1.meta["num_params"],
    "resnet18": tvm.ResNet18_Weights.IMAGENET1K_V1.meta["num_params"],
    "resnet34": tvm.ResNet34_Weights.IMAGENET1K_V1.meta["num_params"],
    "resnet50": tvm.ResNet50_Weights.IMAGENET1K_V1.meta["num_params"],
    "resnet101": tvm.ResNet101_Weights.IMAGENET1K_V1.meta["num_params"],
    "resnet152": tvm.ResNet152_Weights.IMAGENET1K_V1.meta["num_params"],
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _build_ours(name: str, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):
        return get_model(name, **kwargs)


def _torchvision(name: str, **kwargs) -> torch.nn.Module:
    """torchvision's model with every state-dict tensor drawn at random (seeded)."""
    with torch.device("meta"):
        model = getattr(tvm, name)(weights=None, **kwargs)
    model = model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if not t.is_floating_point():
                t.zero_()  # num_batches_tracked
            elif t.dim() > 1:
                bound = (6.0 / t[0].numel()) ** 0.5  # He-uniform keeps activations O(1) through depth
                t.uniform_(-bound, bound, generator=gen)
            elif key.endswith(("running_var", "weight")):
                t.uniform_(0.5, 1.5, generator=gen)  # BN scale and variance
            else:
                t.uniform_(-0.1, 0.1, generator=gen)  # biases and BN means
    return model


def _check_against(ours: torch.nn.Module, theirs: torch.nn.Module, x: torch.Tensor, logits=lambda out: out) -> None:
    """Load torchvision's weights into ours strictly and compare eval outputs; ``logits`` picks ours'."""
    assert _n_params(ours) == _n_params(theirs)
    ours.load_state_dict(theirs.state_dict(), strict=True, assign=True)
    ours.eval()
    theirs.eval()
    with torch.inference_mode():
        expected = theirs(x)
        actual = logits(ours(x))
    assert actual.shape == expected.shape
    assert expected.std() > 1e-2, "outputs too small for the comparison to mean anything"
    torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_matches_torchvision(name: str) -> None:
    theirs = _torchvision(name)
    ours = _build_ours(name)
    assert _n_params(ours) == PUBLISHED[name], f"{name}: expected {PUBLISHED[name]}, got {_n_params(ours)}"
    size = 64 if name == "alexnet" else 32  # AlexNet needs >= 63 pixels; VGG and ResNet reach 1x1 at 32
    _check_against(ours, theirs, torch.randn(1, 3, size, size))


def test_vgg16_total_is_papers_138m() -> None:
    # 14,714,688 in the 13 convs + 123,642,856 in the three FC layers
    with torch.device("meta"):
        model = vgg_mod.vgg16()
    conv = sum(p.numel() for p in model.features.parameters())
    fc = sum(p.numel() for p in model.classifier.parameters())
    assert (conv, fc, conv + fc) == (14_714_688, 123_642_856, 138_357_544)


@pytest.mark.parametrize("aux_logits", [False, True])
def test_googlenet_matches_torchvision(aux_logits: bool) -> None:
    theirs = _torchvision("googlenet", aux_logits=aux_logits, init_weights=False, transform_input=False)
    with torch.device("meta"):
        ours = googlenet_mod.googlenet(aux_logits=aux_logits)
    if not aux_logits:
        assert _n_params(ours) == tvm.GoogLeNet_Weights.IMAGENET1K_V1.meta["num_params"] == 6_624_904

    def logits(out):
        if not aux_logits:
            return out
        # ours returns the named tuple in eval mode too; torchvision only the logits
        assert isinstance(out, googlenet_mod.GoogLeNetOutputs)
        assert out.aux_logits1.shape == out.aux_logits2.shape == (2, 1000)
        return out.logits

    _check_against(ours, theirs, torch.randn(2, 3, 32, 32), logits)


def test_googlenet_aux_heads_match_in_training() -> None:
    # in training torchvision returns (logits, aux2, aux1); with the same seed the dropout
    # masks are drawn in the same order, so all three heads must agree
    theirs = _torchvision("googlenet", aux_logits=True, init_weights=False)
    ours = googlenet_mod.googlenet(aux_logits=True)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(1)
    expected = theirs.train()(x)
    torch.manual_seed(1)
    actual = ours.train()(x)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e)


def test_googlenet_third_branch_is_3x3_like_torchvision() -> None:
    with torch.device("meta"):
        model = googlenet_mod.googlenet()
    assert model.inception3a.branch3[1].conv.weight.shape == (32, 16, 3, 3)


@pytest.mark.parametrize("name", ["alexnet", "vgg11", "vgg19_bn", "googlenet", "resnet18", "resnet50"])
def test_full_size_in_channels_and_num_classes(name: str) -> None:
    # shapes only, so the meta device is enough; numerics are covered above
    with torch.device("meta"):
        model = get_model(name, num_classes=7, in_channels=1).eval()
        out = model(torch.empty(2, 1, 64, 64))
    assert out.shape == (2, 7)
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 1


def test_alexnet_feature_map_sizes_at_224() -> None:
    # conv1: floor((224 + 2*2 - 11) / 4) + 1 = 55, pools: floor((55 - 3) / 2) + 1 = 27, then 13, then 6
    with torch.device("meta"):
        model = alexnet_mod.alexnet()
        x = torch.empty(1, 3, 224, 224)
        sizes = []
        for layer in model.features:
            x = layer(x)
            if isinstance(layer, (torch.nn.Conv2d, torch.nn.MaxPool2d)):
                sizes.append(x.shape[-1])
    assert sizes == [55, 27, 27, 13, 13, 13, 13, 6]
    assert [m.out_channels for m in model.features if isinstance(m, torch.nn.Conv2d)] == [64, 192, 384, 256, 256]


def test_resnet50_bottleneck_stride_on_3x3() -> None:
    with torch.device("meta"):
        model = resnet_mod.resnet50()
    block = model.layer2[0]
    assert (block.conv1.stride, block.conv2.stride) == ((1, 1), (2, 2))
    assert block.downsample[0].stride == (2, 2)


def test_vgg_cfg_table_depths() -> None:
    # weight layers = convs in the cfg + 3 FC layers: A=11, B=13, D=16, E=19
    depths = {k: sum(isinstance(v, int) for v in cfg) + 3 for k, cfg in vgg_mod.cfgs.items()}
    assert depths == {"A": 11, "B": 13, "D": 16, "E": 19}


def test_bad_input_raises_value_error() -> None:
    with torch.device("meta"):
        models = [alexnet_mod.alexnet(), vgg_mod.vgg11(), googlenet_mod.googlenet(), resnet_mod.resnet18()]
    for model in models:
        with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
            model(torch.empty(3, 64, 64, device="meta"))
        with pytest.raises(ValueError, match="got \\(1, 1, 64, 64\\)"):
            model(torch.empty(1, 1, 64, 64, device="meta"))


def test_registry_lists_every_builder() -> None:
    expected = {"alexnet", "alexnet_small", "googlenet", "googlenet_small", "cifar_resnet", "vgg_small"}
    expected |= set(PUBLISHED)
    assert expected <= set(list_models())
    for module in (alexnet_mod, vgg_mod, googlenet_mod, resnet_mod):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.__all__ lists missing {name}"


def test_googlenet_paper_kernel_option() -> None:
    # a 5x5 instead of 3x3 adds 16 * ch5x5red * ch5x5 weights per block (Table 1 columns):
    # 16 * (16*32 + 32*96 + 16*48 + 24*64 + 24*64 + 32*64 + 32*128 + 32*128 + 48*128) = 380,928
    with torch.device("meta"):
        paper = googlenet_mod.GoogLeNet(kernel_5x5=5)
    assert _n_params(paper) == 6_624_904 + 380_928 == 7_005_832
    assert paper.inception5b.branch3[1].conv.weight.shape == (128, 48, 5, 5)
