"""Autoencoders: shapes, the two regularisers, from-scratch transposed convolutions, and training through fit."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from cnncourse import models
from cnncourse.data import add_noise, noisy_pairs
from cnncourse.models.autoencoder import Autoencoder, ConvAutoencoder
from cnncourse.train import evaluate, fit

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name,kwargs", [("autoencoder", {"code_size": 7}), ("conv_autoencoder", {"code_size": 7}),
                                         ("denoising_autoencoder", {"code_size": 7}),
                                         ("sparse_autoencoder", {"code_size": 7}),
                                         ("autoencoder", {"code_size": 7, "linear": True, "hidden": (64,)})])
def test_shapes_and_helpers(name, kwargs):
    model = models.get_model(name, **kwargs).eval()
    x = torch.randn(3, 1, 28, 28)
    code = model.encode(x)
    assert code.shape == (3, 7)
    assert model.decode(code).shape == model(x).shape == model.reconstruct(x).shape == (3, 1, 28, 28)
    torch.testing.assert_close(model.reconstruct(x), model(x))
    with pytest.raises(ValueError, match=r"decode expected codes of shape \(N, 7\), got \(3, 8\)"):
        model.decode(torch.randn(3, 8))


def test_linear_autoencoder_has_no_hidden_layer_or_activation():
    model = Autoencoder(code_size=5, linear=True)
    kinds = [type(m).__name__ for m in [*model.encoder, *model.decoder]]
    assert kinds == ["Flatten", "Linear", "Linear", "Unflatten"]
    assert sum(p.numel() for p in model.parameters()) == 784 * 5 + 5 + 5 * 784 + 784


def test_denoising_corrupts_only_in_training():
    torch.manual_seed(0)
    model = models.denoising_autoencoder(code_size=4, noise_std=0.5)
    x = torch.randn(2, 1, 28, 28)
    assert not torch.equal(model.train()(x), model(x))  # fresh noise every call
    torch.testing.assert_close(model.eval()(x), model(x))
    torch.testing.assert_close(model.train().reconstruct(x), model.eval()(x))  # reconstruct never adds noise


def test_sparsity_adds_the_l1_gradient_on_the_code():
    torch.manual_seed(0)
    sparse = models.sparse_autoencoder(code_size=6, sparsity=0.3)
    plain = copy.deepcopy(sparse)
    plain.sparsity = 0.0
    x = torch.randn(5, 1, 28, 28)
    g = torch.randn(5, 1, 28, 28)
    (sparse(x) * g).sum().backward()
    explicit = (plain(x) * g).sum() + 0.3 * plain.encode(x).abs().sum(1).mean()
    explicit.backward()
    for a, b in zip(sparse.parameters(), plain.parameters()):
        torch.testing.assert_close(a.grad, b.grad)
    without_penalty = torch.autograd.grad((plain(x) * g).sum(), plain.encoder[1].weight)[0]
    assert not torch.allclose(sparse.encoder[1].weight.grad, without_penalty)  # the penalty changed something


def test_conv_autoencoder_from_scratch_matches_torch_layers():
    torch.manual_seed(0)
    ours, ref = ConvAutoencoder(code_size=5, from_scratch=True), ConvAutoencoder(code_size=5)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(ours(x), ref(x))
    assert type(ours.decoder[3]).__module__ == "cnncourse.layers"


def test_noisy_pairs_are_fixed_by_seed(mnist_train):
    data = mnist_train.take(10)
    (n1, c1), (n2, _) = noisy_pairs(data, 0.5, seed=3), noisy_pairs(data, 0.5, seed=3)
    assert torch.equal(n1, n2) and n1.shape == c1.shape == (10, 1, 28, 28)
    assert abs((n1 - c1).std().item() - 0.5) < 0.02
    torch.testing.assert_close(c1.mean(), torch.tensor((data.images.float() / 255).mean().item() - 0.1307) / 0.3081)
    assert not torch.equal(add_noise(0.1)(c1), c1)


def test_fit_trains_an_autoencoder_with_a_target(mnist_train):
    data = mnist_train.take(1024)
    model = models.autoencoder(code_size=16)
    history = fit(model, data, data, epochs=2, batch_size=64, loss_fn=F.mse_loss, target=lambda x, y: x,
                  progress=False)
    assert history["train_loss"][-1] < 0.85 * history["train_loss"][0]
    assert history.last["train_acc"] is None and history.last["val_acc"] is None
    metrics = evaluate(model, data, loss_fn=F.mse_loss, target=lambda x, y: x)
    assert metrics["accuracy"] is None and metrics["loss"] < history["train_loss"][0]
    assert "train_loss" in str(history)
