"""Autoencoders: a network trained to output its own input, ``x_hat = decode(encode(x)) ~ x``.

Two families share one interface (``encode``, ``decode``, ``reconstruct``, ``forward``):

* :class:`Autoencoder`, fully connected: ``(N, 1, 28, 28)`` -> code ``(N, code_size)`` -> ``(N, 1, 28, 28)``;
  with ``linear=True`` and squared error it learns the PCA subspace (Baldi and Hornik, 1989).
* :class:`ConvAutoencoder`: strided convolutions down to a code, transposed convolutions back up.

Two regularisers, both options of either family:

* ``noise_std > 0``: a *denoising* autoencoder. In training mode ``forward`` corrupts its input with
  Gaussian noise and is scored against the clean input, so copying is no longer the answer.
* ``sparsity > 0``: a *sparse* autoencoder. The code receives the gradient of
  ``sparsity * mean_n ||code_n||_1`` during backward, so any training loop (``train.fit`` included)
  adds the L1 penalty without a special loss. The loss it reports is the reconstruction error alone.

Train any of them with ``fit(model, data, loss_fn=F.mse_loss, target=lambda x, y: x)``; both are declared on
the model (``loss_fn``, ``training_target``), so ``fit(model, data, **input_pipeline(model, data)._asdict())``
and ``python -m cnncourse train autoencoder`` need no autoencoder case.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from cnncourse import layers
from cnncourse.models._registry import register_model

__all__ = [
    "Autoencoder",
    "ConvAutoencoder",
    "autoencoder",
    "conv_autoencoder",
    "denoising_autoencoder",
    "sparse_autoencoder",
]


class _L1Penalty(torch.autograd.Function):
    """Identity in the forward pass; adds ``weight * sign(code) / N`` to the code's gradient.

    That is the gradient of ``weight * mean over the batch of ||code||_1``.
    """

    @staticmethod
    def forward(ctx, code, weight):
        ctx.save_for_backward(code)
        ctx.weight = weight
        return code.view_as(code)

    @staticmethod
    def backward(ctx, grad):
        (code,) = ctx.saved_tensors
        return grad + ctx.weight * torch.sign(code) / code.shape[0], None


class _AutoencoderBase(nn.Module):
    """``encode``/``decode``/``reconstruct`` and the two regularisers shared by both families."""

    encoder: nn.Module
    decoder: nn.Module
    # What training needs besides the weights (read by ``cnncourse.train.input_pipeline``, so the
    # CLI's ``train`` needs no autoencoder case): squared error against the input itself.
    loss_fn = staticmethod(F.mse_loss)
    training_target = "inputs"

    def __init__(self, code_size: int, noise_std: float, sparsity: float) -> None:
        super().__init__()
        if code_size < 1:
            raise ValueError(f"code_size must be positive, got {code_size}")
        if noise_std < 0 or sparsity < 0:
            raise ValueError(f"noise_std and sparsity must be non-negative, got {noise_std} and {sparsity}")
        self.code_size, self.noise_std, self.sparsity = code_size, float(noise_std), float(sparsity)

    def encode(self, x: Tensor) -> Tensor:
        """Images ``(N, 1, 28, 28)`` to codes ``(N, code_size)``; never adds noise."""
        return self.encoder(x)

    def decode(self, code: Tensor) -> Tensor:
        """Codes ``(N, code_size)`` to images ``(N, 1, 28, 28)``."""
        if code.dim() != 2 or code.shape[1] != self.code_size:
            raise ValueError(f"decode expected codes of shape (N, {self.code_size}), got {tuple(code.shape)}")
        return self.decoder(code)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """``decode(encode(x))`` without noise or gradients, whatever the mode."""
        return self.decode(self.encode(x))

    def corrupt(self, x: Tensor) -> Tensor:
        """``x + noise_std * eps`` with ``eps ~ N(0, 1)``: the denoising corruption."""
        return x + self.noise_std * torch.randn_like(x) if self.noise_std > 0 else x

    def forward(self, x: Tensor) -> Tensor:
        """The reconstruction ``(N, 1, 28, 28)``; in training mode the input is corrupted first."""
        code = self.encode(self.corrupt(x) if self.training else x)
        if self.sparsity > 0 and torch.is_grad_enabled():
            code = _L1Penalty.apply(code, self.sparsity)
        return self.decoder(code)


class Autoencoder(_AutoencoderBase):
    """A fully connected autoencoder.

    ``encoder``: flatten, then ``Linear`` + ReLU for each width in ``hidden``, then ``Linear`` to the
    code (followed by ``code_activation`` if given). ``decoder``: the mirror image, ending in a
    ``Linear`` to ``C*H*W`` values reshaped to ``(N, C, H, W)``. The output is unbounded, so it
    reconstructs normalised images.

    Args:
        code_size: the code's width. Below the input size (784) the code is *undercomplete*.
        hidden: widths of the hidden layers on the encoder side, mirrored in the decoder.
        linear: no hidden layers and no activations: a linear autoencoder (PCA's subspace).
        code_activation: ``None`` or ``"relu"`` (non-negative codes, the usual choice for sparsity).
        noise_std: denoising corruption during training (0 = off).
        sparsity: L1 weight on the code (0 = off).
        input_shape: ``(C, H, W)``.

    Reference: G. E. Hinton, R. R. Salakhutdinov, "Reducing the dimensionality of data with neural
    networks", Science 313 (2006); P. Baldi, K. Hornik, Neural Networks 2 (1989) for the linear case.
    """

    def __init__(
        self,
        code_size: int = 32,
        hidden: tuple[int, ...] = (256,),
        *,
        linear: bool = False,
        code_activation: str | None = None,
        noise_std: float = 0.0,
        sparsity: float = 0.0,
        input_shape: tuple[int, int, int] = (1, 28, 28),
    ) -> None:
        super().__init__(code_size, noise_std, sparsity)
        if code_activation not in (None, "relu"):
            raise ValueError(f"code_activation must be None or 'relu', got {code_activation!r}")
        widths = [input_shape[0] * input_shape[1] * input_shape[2], *(() if linear else hidden)]
        enc: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(widths, widths[1:]):
            enc += [nn.Linear(a, b), nn.ReLU()]
        enc.append(nn.Linear(widths[-1], code_size))
        if code_activation == "relu":
            enc.append(nn.ReLU())
        dec: list[nn.Module] = []
        back = [code_size, *reversed(widths[1:])]
        for a, b in zip(back, back[1:]):
            dec += [nn.Linear(a, b), nn.ReLU()]
        dec += [nn.Linear(back[-1], widths[0]), nn.Unflatten(1, input_shape)]
        self.encoder, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)
        self.input_size = tuple(input_shape)


class ConvAutoencoder(_AutoencoderBase):
    """A convolutional autoencoder: stride-2 convolutions down, stride-2 transposed convolutions up.

    For 28 x 28 inputs with ``channels=(16, 32)``::

        (N, 1, 28, 28) -conv 3x3 s2 p1-> (N, 16, 14, 14) -conv 3x3 s2 p1-> (N, 32, 7, 7) -linear-> (N, code)
        (N, code) -linear-> (N, 32, 7, 7) -convT 3x3 s2 p1 op1-> (N, 16, 14, 14) -convT 3x3 s2 p1 op1-> (N, 1, 28, 28)

    Each transposed convolution doubles the size: ``(7 - 1) * 2 - 2 * 1 + (3 - 1) + 1 + 1 = 14``.

    Args:
        code_size: the code's width.
        channels: feature maps after the first and second convolution.
        from_scratch: build the convolutions from :mod:`cnncourse.layers` (``Conv2d``,
            ``ConvTranspose2d``) instead of ``torch.nn``; same parameters, slower.
        noise_std, sparsity: as in :class:`Autoencoder`.
        in_channels: ``C`` of the ``(N, C, 28, 28)`` images.
    """

    def __init__(
        self,
        code_size: int = 16,
        channels: tuple[int, int] = (16, 32),
        *,
        from_scratch: bool = False,
        noise_std: float = 0.0,
        sparsity: float = 0.0,
        in_channels: int = 1,
    ) -> None:
        super().__init__(code_size, noise_std, sparsity)
        conv = layers.Conv2d if from_scratch else nn.Conv2d
        convt = layers.ConvTranspose2d if from_scratch else nn.ConvTranspose2d
        c1, c2 = channels
        self.encoder = nn.Sequential(
            conv(in_channels, c1, 3, stride=2, padding=1),
            nn.ReLU(),
            conv(c1, c2, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(c2 * 7 * 7, code_size),
        )
        self.decoder = nn.Sequential(
            nn.Linear(code_size, c2 * 7 * 7),
            nn.ReLU(),
            nn.Unflatten(1, (c2, 7, 7)),
            convt(c2, c1, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(),
            convt(c1, in_channels, 3, stride=2, padding=1, output_padding=1),
        )
        self.input_size = (in_channels, 28, 28)


# Builders follow the other families (keyword-only: ``in_channels``, then the family's options, the rest
# passed through to the class) except that an autoencoder has no ``num_classes``: its output is its input.


@register_model
def autoencoder(*, in_channels: int = 1, code_size: int = 32, **kwargs: Any) -> Autoencoder:
    """Fully connected autoencoder (784-256-code-256-784); other options go to :class:`Autoencoder`."""
    return Autoencoder(code_size, input_shape=kwargs.pop("input_shape", (in_channels, 28, 28)), **kwargs)


@register_model
def conv_autoencoder(*, in_channels: int = 1, code_size: int = 16, **kwargs: Any) -> ConvAutoencoder:
    """Convolutional autoencoder with transposed-convolution decoder; see :class:`ConvAutoencoder`."""
    return ConvAutoencoder(code_size, in_channels=in_channels, **kwargs)


@register_model
def denoising_autoencoder(
    *, in_channels: int = 1, code_size: int = 32, noise_std: float = 0.5, **kwargs: Any
) -> Autoencoder:
    """Fully connected autoencoder trained on inputs corrupted with Gaussian noise.

    Reference: P. Vincent, H. Larochelle, Y. Bengio, P.-A. Manzagol, "Extracting and composing robust
    features with denoising autoencoders", ICML 2008.
    """
    return Autoencoder(
        code_size, input_shape=kwargs.pop("input_shape", (in_channels, 28, 28)), noise_std=noise_std, **kwargs
    )


@register_model
def sparse_autoencoder(
    *,
    in_channels: int = 1,
    code_size: int = 32,
    sparsity: float = 1e-3,
    code_activation: str | None = "relu",
    **kwargs: Any,
) -> Autoencoder:
    """Fully connected autoencoder with an L1 penalty on a non-negative code.

    Reference: I. Goodfellow, Y. Bengio, A. Courville, *Deep Learning* (2016), section 14.2.1.
    """
    return Autoencoder(
        code_size,
        input_shape=kwargs.pop("input_shape", (in_channels, 28, 28)),
        sparsity=sparsity,
        code_activation=code_activation,
        **kwargs,
    )
