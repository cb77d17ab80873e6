import pytest
import torch

from cnncourse import models


def test_every_builder_is_exported_and_registered():
    names = models.list_models()
    assert {"lenet5", "lenet_caffe", "alexnet", "vgg16", "googlenet", "resnet50", "cifar_resnet"} <= set(names)
    for name in names:
        assert getattr(models, name).__name__ == name, f"cnncourse.models.{name} is not the builder"


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
