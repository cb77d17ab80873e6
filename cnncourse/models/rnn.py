"""Recurrent layers from scratch, drop-in compatible with ``torch.nn.RNN``, ``LSTM`` and ``GRU``, and a
sequence classifier for (permuted) sequential MNIST.

The layers keep PyTorch's parameter names (``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``,
``bias_hh_l0``, then ``_l1`` ...), shapes and initialisation, so ``load_state_dict`` works both ways
and the outputs are equal. The arithmetic is in :mod:`cnncourse.recurrent`; the Elman layer's
backward pass through time is written by hand there.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from cnncourse import recurrent as rec
from cnncourse.models._registry import register_model

__all__ = ["GRU", "LSTM", "RNN", "SequenceClassifier", "sequence_gru", "sequence_lstm", "sequence_rnn"]


class _RecurrentLayer(nn.Module):
    """Shared bookkeeping: parameters per layer, batch_first, initial states, shape checks."""

    gates = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
    ) -> None:
        super().__init__()
        if input_size < 1 or hidden_size < 1 or num_layers < 1:
            raise ValueError(
                f"{type(self).__name__} expected positive input_size, hidden_size and num_layers, "
                f"got {input_size}, {hidden_size}, {num_layers}"
            )
        if dropout or bidirectional:
            raise ValueError(
                f"{type(self).__name__} supports dropout=0 and bidirectional=False only, "
                f"got dropout={dropout}, bidirectional={bidirectional}"
            )
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first = bias, batch_first
        rows = self.gates * hidden_size
        for layer in range(num_layers):
            width = input_size if layer == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{layer}", nn.Parameter(torch.empty(rows, width)))
            self.register_parameter(f"weight_hh_l{layer}", nn.Parameter(torch.empty(rows, hidden_size)))
            if bias:
                self.register_parameter(f"bias_ih_l{layer}", nn.Parameter(torch.empty(rows)))
                self.register_parameter(f"bias_hh_l{layer}", nn.Parameter(torch.empty(rows)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every weight and bias uniform in ``(-1/sqrt(H), 1/sqrt(H))``, as in ``torch.nn.RNN``."""
        bound = 1 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def _weights(self, layer: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        w_ih: Tensor = getattr(self, f"weight_ih_l{layer}")
        w_hh: Tensor = getattr(self, f"weight_hh_l{layer}")
        b_ih: Tensor | None = getattr(self, f"bias_ih_l{layer}", None)  # absent with bias=False
        b_hh: Tensor | None = getattr(self, f"bias_hh_l{layer}", None)
        return w_ih, w_hh, b_ih, b_hh

    def _prepare(self, input: Tensor, hx: Tensor | None) -> tuple[Tensor, Tensor]:
        if not isinstance(input, Tensor) or input.dim() != 3:
            got = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
            order = "(N, T, I)" if self.batch_first else "(T, N, I)"
            raise ValueError(f"{type(self).__name__} expected input of shape {order} (3 dimensions), got {got}")
        x = input if self.batch_first else input.transpose(0, 1)  # the cells work on (N, T, I)
        if x.shape[2] != self.input_size:
            raise ValueError(f"{type(self).__name__} expected input size I={self.input_size}, got {x.shape[2]}")
        shape = (self.num_layers, x.shape[0], self.hidden_size)
        if hx is None:
            hx = x.new_zeros(shape)
        elif tuple(hx.shape) != shape:
            raise ValueError(
                f"{type(self).__name__} expected a hidden state of shape (num_layers, N, H)={shape}, "
                f"got {tuple(hx.shape)}"
            )
        return x, hx

    def _finish(self, out: Tensor) -> Tensor:
        return out if self.batch_first else out.transpose(0, 1)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        return s + (", batch_first=True" if self.batch_first else "")


class RNN(_RecurrentLayer):
    """Elman RNN with tanh, ``h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``, stacked ``num_layers`` deep.

    Input ``(T, N, I)``, or ``(N, T, I)`` with ``batch_first``; optional ``h0`` ``(num_layers, N, H)``.
    Returns ``(output, h_n)``: ``output`` holds the last layer's state at every step
    (``(T, N, H)`` or ``(N, T, H)``), ``h_n`` the last step's state of every layer ``(num_layers, N, H)``.
    The backward pass is backpropagation through time by hand (:func:`cnncourse.recurrent.elman_rnn`).

    Reference: J. L. Elman, Cognitive Science 14 (1990); https://pytorch.org/docs/stable/generated/torch.nn.RNN.html
    """

    gates = 1

    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x, hx = self._prepare(input, hx)
        last = []
        for layer in range(self.num_layers):
            x, h = rec.elman_rnn(x, hx[layer], *self._weights(layer))
            last.append(h)
        return self._finish(x), torch.stack(last)


class LSTM(_RecurrentLayer):
    """Long short-term memory, gates ``i, f, g, o`` as in ``torch.nn.LSTM`` (equations in
    :func:`cnncourse.recurrent.lstm_cell`).

    Returns ``(output, (h_n, c_n))``, each state ``(num_layers, N, H)``.

    Reference: S. Hochreiter, J. Schmidhuber, Neural Computation 9(8) (1997);
    https://pytorch.org/docs/stable/generated/torch.nn.LSTM.html
    """

    gates = 4

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        h0, c0 = (None, None) if hx is None else hx
        x, h0 = self._prepare(input, h0)
        if c0 is None:
            c0 = torch.zeros_like(h0)
        elif c0.shape != h0.shape:
            raise ValueError(f"LSTM expected c0 of shape {tuple(h0.shape)}, got {tuple(c0.shape)}")
        hs, cs = [], []
        for layer in range(self.num_layers):
            x, (h, c) = rec.lstm_sequence(x, (h0[layer], c0[layer]), *self._weights(layer))
            hs.append(h)
            cs.append(c)
        return self._finish(x), (torch.stack(hs), torch.stack(cs))


class GRU(_RecurrentLayer):
    """Gated recurrent unit, gates ``r, z, n`` as in ``torch.nn.GRU`` (equations in
    :func:`cnncourse.recurrent.gru_cell`).

    Returns ``(output, h_n)`` like :class:`RNN`.

    Reference: K. Cho et al., EMNLP 2014; https://pytorch.org/docs/stable/generated/torch.nn.GRU.html
    """

    gates = 3

    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x, hx = self._prepare(input, hx)
        last = []
        for layer in range(self.num_layers):
            x, h = rec.gru_sequence(x, hx[layer], *self._weights(layer))
            last.append(h)
        return self._finish(x), torch.stack(last)


_CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


class SequenceClassifier(nn.Module):
    """Read an image row by row and classify it from the last hidden state.

    An MNIST batch ``(N, 1, 28, 28)`` becomes a sequence of ``T = 28`` steps of ``I = 28`` pixels
    (one row per step); a ready sequence ``(N, T, I)`` is used as is. The logits are
    ``fc(h_T)``, ``(N, num_classes)``, so :func:`cnncourse.train.fit` trains it like any classifier.
    For permuted sequential MNIST, pass :func:`cnncourse.data.permute_pixels` as the data transform.

    Args:
        cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
        num_classes: output size.
        in_channels: ``C`` of the images; each step reads ``I = C * W`` values.
        image_size: ``H = W`` of the images, so ``T = H`` steps of ``I = C * W`` values; the model's
            ``input_size`` is ``(C, H, W)``, as for the convolutional models.
        hidden_size: ``H``.
        num_layers: stacked recurrent layers.
        backend: ``"scratch"`` (this module's layers) or ``"torch"`` (``torch.nn.RNN``/``LSTM``/``GRU``);
            both have the same parameters, so a state dict moves between them.

    Reference: Q. V. Le, N. Jaitly, G. E. Hinton, arXiv:1504.00941 (2015) for (permuted) sequential MNIST.
    """

    def __init__(
        self,
        cell: str = "lstm",
        *,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        hidden_size: int = 128,
        num_layers: int = 1,
        backend: str = "scratch",
    ) -> None:
        super().__init__()
        if cell not in _CELLS:
            raise ValueError(f"cell must be one of {sorted(_CELLS)}, got {cell!r}")
        if backend not in ("scratch", "torch"):
            raise ValueError(f"backend must be 'scratch' or 'torch', got {backend!r}")
        layer = _CELLS[cell] if backend == "scratch" else {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.cell, self.step_size = cell, in_channels * image_size
        self.input_size = (in_channels, image_size, image_size)
        self.rnn = layer(self.step_size, hidden_size, num_layers=num_layers, batch_first=True)
        self.fc = nn.Linear(hidden_size, num_classes)

    def sequences(self, x: Tensor) -> Tensor:
        """``(N, C, H, W)`` images to ``(N, H, C*W)`` row sequences; ``(N, T, I)`` passes through."""
        if x.dim() == 4:
            x = x.permute(0, 2, 1, 3).flatten(2)
        if x.dim() != 3 or x.shape[2] != self.step_size:
            raise ValueError(
                f"SequenceClassifier expected images (N, C, H, W) with C*W={self.step_size} or "
                f"sequences (N, T, {self.step_size}), got {tuple(x.shape)}"
            )
        return x

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(self.sequences(x))
        return self.fc(out[:, -1])


@register_model
def sequence_rnn(
    *, num_classes: int = 10, in_channels: int = 1, hidden_size: int = 128, **kwargs: Any
) -> SequenceClassifier:
    """Elman RNN classifier for sequential MNIST (28 steps of 28 pixels); see :class:`SequenceClassifier`."""
    return SequenceClassifier(
        "rnn", num_classes=num_classes, in_channels=in_channels, hidden_size=hidden_size, **kwargs
    )


@register_model
def sequence_lstm(
    *, num_classes: int = 10, in_channels: int = 1, hidden_size: int = 128, **kwargs: Any
) -> SequenceClassifier:
    """LSTM classifier for sequential MNIST (28 steps of 28 pixels); see :class:`SequenceClassifier`."""
    return SequenceClassifier(
        "lstm", num_classes=num_classes, in_channels=in_channels, hidden_size=hidden_size, **kwargs
    )


@register_model
def sequence_gru(
    *, num_classes: int = 10, in_channels: int = 1, hidden_size: int = 128, **kwargs: Any
) -> SequenceClassifier:
    """GRU classifier for sequential MNIST (28 steps of 28 pixels); see :class:`SequenceClassifier`."""
    return SequenceClassifier(
        "gru", num_classes=num_classes, in_channels=in_channels, hidden_size=hidden_size, **kwargs
    )
