import pytest
import torch

from cnncourse import models

# The family's own option each builder accepts (passed through to the model class when the builder
# does not name it), with the expected effect: every registered model must take it.
_FAMILY_OPTION = {
    "alexnet": {"dropout": 0.3}, "alexnet_small": {"dropout": 0.3},
    "vgg11": {"dropout": 0.3}, "vgg11_bn": {"dropout": 0.3}, "vgg13": {"dropout": 0.3}, "vgg13_bn": {"dropout": 0.3},
    "vgg16": {"dropout": 0.3}, "vgg16_bn": {"dropout": 0.3}, "vgg19": {"dropout": 0.3}, "vgg19_bn": {"dropout": 0.3},
    "vgg_small": {"dropout": 0.3},
    "googlenet": {"dropout": 0.3}, "googlenet_small": {"dropout": 0.3},
    "lenet5": {"variant": "textbook", "pool": "avg"}, "lenet_caffe": {},
    "resnet18": {}, "resnet34": {}, "resnet50": {}, "resnet101": {}, "resnet152": {},
    "cifar_resnet": {"depth": 8, "residual": False},
    "sequence_rnn": {"hidden_size": 8}, "sequence_lstm": {"hidden_size": 8, "num_layers": 2},
    "sequence_gru": {"hidden_size": 8},
    "autoencoder": {"code_size": 3}, "conv_autoencoder": {"code_size": 3, "channels": (4, 8)},
    "denoising_autoencoder": {"code_size": 3, "noise_std": 0.2}, "sparse_autoencoder": {"code_size": 3, "sparsity": 0.01},
}

# Models whose output is a reconstruction of their input: they take in_channels and their own options, but a
# num_classes would mean nothing, so the registry test builds them without it and expects the input's shape back.
_RECONSTRUCTION = {"autoencoder", "conv_autoencoder", "denoising_autoencoder", "sparse_autoencoder"}


def test_every_builder_is_exported_and_registered():
    names = models.list_models()
    assert {"lenet5", "lenet_caffe", "alexnet", "vgg16", "googlenet", "resnet50", "cifar_resnet"} <= set(names)
    for name in names:
        assert getattr(models, name).__name__ == name, f"cnncourse.models.{name} is not the builder"


@pytest.mark.parametrize("name", models.list_models())
def test_every_registered_model_takes_the_common_options(name):
    """num_classes, in_channels (keyword-only) and the family's options; the model states its input_size."""
    assert name in _FAMILY_OPTION, f"add {name!r} and one of its own options to _FAMILY_OPTION"
    builder = getattr(models, name)
    common = {"in_channels": 2} if name in _RECONSTRUCTION else {"num_classes": 4, "in_channels": 2}
    with pytest.raises(TypeError):
        builder(**{k: v for k, v in _FAMILY_OPTION[name].items() if k in ("variant", "depth")}, **common,
                no_such_option=1)
    model = models.get_model(name, **common, **_FAMILY_OPTION[name])
    c, h, w = model.input_size
    assert c == 2
    if name in _RECONSTRUCTION:
        with torch.no_grad():
            assert model.eval()(torch.randn(2, c, h, w)).shape == (2, c, h, w)
            assert model.encode(torch.randn(2, c, h, w)).shape == (2, _FAMILY_OPTION[name]["code_size"])
        for key in ("noise_std", "sparsity"):
            if key in _FAMILY_OPTION[name]:
                assert getattr(model, key) == _FAMILY_OPTION[name][key], f"{name}: {key} was dropped"
    elif h > 64:  # ImageNet-sized: a forward pass costs seconds, so check the head and stem only
        first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        assert first.in_channels == 2 and last.out_features == 4
    else:
        with torch.no_grad():
            assert model.eval()(torch.randn(2, c, h, w)).shape == (2, 4)
    if "hidden_size" in _FAMILY_OPTION[name]:
        rnn = model.rnn
        assert (rnn.hidden_size, rnn.num_layers) == (8, _FAMILY_OPTION[name].get("num_layers", 1)), name
    if "dropout" in _FAMILY_OPTION[name]:
        ps = {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}
        assert ps == {0.3}, f"{name}: dropout=0.3 was dropped, got {ps}"


def test_builders_take_options_by_keyword_only():
    with pytest.raises(TypeError):
        models.vgg16(10)  # type: ignore[misc]
    with pytest.raises(TypeError):
        models.cifar_resnet(20, True)  # type: ignore[misc]
    with pytest.raises(TypeError):
        models.sequence_lstm(10)  # type: ignore[misc]
    with pytest.raises(TypeError):
        models.autoencoder(16)  # type: ignore[misc]


def test_vgg16_passes_dropout_through():
    model = models.get_model("vgg16", dropout=0.3)
    assert [m.p for m in model.classifier if isinstance(m, torch.nn.Dropout)] == [0.3, 0.3]


@pytest.mark.parametrize("name,kwargs,shape", [
    ("lenet5", {"variant": "textbook"}, (2, 1, 28, 28)),
    ("lenet_caffe", {}, (2, 1, 28, 28)),
    ("cifar_resnet", {"depth": 20}, (2, 1, 28, 28)),
    ("vgg_small", {}, (2, 1, 28, 28)),
])
def test_get_model_builds_small_models(name, kwargs, shape):
    model = models.get_model(name, **kwargs).eval()
    assert model(torch.randn(shape)).shape == (2, 10)


def test_unknown_name_lists_candidates():
    with pytest.raises(KeyError, match="unknown model 'lenet6'; expected one of: .*lenet5"):
        models.get_model("lenet6")
