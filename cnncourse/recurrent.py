"""Recurrent cells written from scratch: Elman RNN (with backpropagation through time by hand), LSTM and GRU.

Every function here works on a whole batch at once and loops only over time. Shapes use fixed
letters: input sequence ``(N, T, I)`` (batch, time, input size), hidden state ``(N, H)``, outputs
``(N, T, H)``. Weights follow ``torch.nn.RNN``/``LSTM``/``GRU``: ``weight_ih`` ``(G*H, I)``,
``weight_hh`` ``(G*H, H)``, ``bias_ih`` and ``bias_hh`` ``(G*H,)`` with ``G`` = 1, 4 or 3 gates.

The layers in :mod:`cnncourse.models.rnn` stack these into ``torch.nn``-compatible modules.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["elman_cell", "elman_rnn", "elman_rnn_naive", "gru_cell", "gru_sequence", "lstm_cell", "lstm_sequence"]


def _check_sequence(x: Tensor, h: Tensor, weight_ih: Tensor, weight_hh: Tensor, gates: int, op: str) -> None:
    if not isinstance(x, Tensor) or x.dim() != 3:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{op} expected input of shape (N, T, I) (3 dimensions), got {got}")
    hidden = weight_hh.shape[1]
    if tuple(weight_ih.shape) != (gates * hidden, x.shape[2]):
        raise ValueError(
            f"{op} expected weight_ih of shape ({gates}*H, I)=({gates * hidden}, {x.shape[2]}), "
            f"got {tuple(weight_ih.shape)}"
        )
    if tuple(weight_hh.shape) != (gates * hidden, hidden):
        raise ValueError(
            f"{op} expected weight_hh of shape ({gates}*H, H)=({gates * hidden}, {hidden}), "
            f"got {tuple(weight_hh.shape)}"
        )
    if tuple(h.shape) != (x.shape[0], hidden):
        raise ValueError(f"{op} expected a hidden state of shape (N, H)=({x.shape[0]}, {hidden}), got {tuple(h.shape)}")


def _bias(b: Tensor | None) -> Tensor | float:
    return 0.0 if b is None else b


def elman_cell(
    x: Tensor,
    h: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> Tensor:
    """One step of an Elman network: ``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)``.

    Args:
        x: ``(N, I)`` input at this step.
        h: ``(N, H)`` hidden state from the previous step.
        weight_ih, weight_hh: ``(H, I)`` and ``(H, H)``.
        bias_ih, bias_hh: ``(H,)`` or ``None``.

    Returns:
        ``(N, H)``, the new hidden state.

    Reference: J. L. Elman, "Finding structure in time", Cognitive Science 14 (1990).
    """
    return torch.tanh(x @ weight_ih.t() + _bias(bias_ih) + h @ weight_hh.t() + _bias(bias_hh))


def elman_rnn_naive(
    input: Tensor,
    h0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Forward through time with :func:`elman_cell`, one step after another; autograd does the backward.

    Args:
        input: ``(N, T, I)``.
        h0: ``(N, H)`` initial hidden state.

    Returns:
        ``(output, h_n)``: every hidden state ``(N, T, H)`` and the last one ``(N, H)``.
    """
    _check_sequence(input, h0, weight_ih, weight_hh, 1, "elman_rnn_naive")
    h, outputs = h0, []
    for t in range(input.shape[1]):
        h = elman_cell(input[:, t], h, weight_ih, weight_hh, bias_ih, bias_hh)
        outputs.append(h)
    return torch.stack(outputs, dim=1), h


class _ElmanFunction(torch.autograd.Function):
    """An Elman layer whose backward is backpropagation through time, written out.

    Forward: ``a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh``, ``h_t = tanh(a_t)``. The input
    projections of all steps are one matrix product; only the recurrence loops over time.

    Backward, from the last step to the first, with ``g_t`` the gradient arriving at ``h_t`` from
    the output and ``dh_t`` the total gradient at ``h_t``::

        dh_{T-1} = g_{T-1} + dL/dh_n                 (the last state is also returned)
        da_t     = dh_t * (1 - h_t**2)               (tanh' = 1 - tanh**2)
        dh_{t-1} = g_{t-1} + da_t W_hh               (the path back through the recurrence)
        dW_hh    = sum_t da_t^T h_{t-1},   dW_ih = sum_t da_t^T x_t,   db = sum_t sum_n da_t
        dx_t     = da_t W_ih,              dh0   = da_0 W_hh

    The repeated factor ``diag(1 - h_t**2) W_hh`` in ``dh_{t-1}`` is why gradients vanish or explode
    over many steps.
    """

    @staticmethod
    def forward(ctx, input, h0, weight_ih, weight_hh, bias_ih, bias_hh):
        """Forward pass.

        Inputs:
            input: ``(N, T, I)``; h0: ``(N, H)``; weight_ih: ``(H, I)``; weight_hh: ``(H, H)``;
            bias_ih, bias_hh: ``(H,)`` or None.

        Returns:
            ``(hs, h_n)``: every step's state ``(N, T, H)`` and the last one ``(N, H)``.

        Saves:
            ``input``, ``h0``, both weights and ``hs`` (``tanh' = 1 - h**2`` needs only the outputs).
        """
        n, steps, _ = input.shape
        projected = input @ weight_ih.t() + _bias(bias_ih) + _bias(bias_hh)  # (N, T, H), all steps at once
        hs = input.new_empty(n, steps, h0.shape[1])
        h = h0
        for t in range(steps):
            h = torch.tanh(torch.addmm(projected[:, t], h, weight_hh.t()))
            hs[:, t] = h
        ctx.save_for_backward(input, h0, weight_ih, weight_hh, hs)
        ctx.has_bias = (bias_ih is not None, bias_hh is not None)
        return hs, h.clone()

    @staticmethod
    def backward(ctx, grad_output, grad_hn):
        """Backward pass through time (the equations in the class docstring).

        Inputs:
            grad_output: dL/dhs ``(N, T, H)``; grad_hn: dL/dh_n ``(N, H)``.

        Returns:
            ``(dx, dh0, dW_ih, dW_hh, db_ih, db_hh)`` with the shapes of the inputs; ``None`` where not needed
            (the two bias gradients are equal, since both biases enter ``a_t`` the same way).
        """
        input, h0, weight_ih, weight_hh, hs = ctx.saved_tensors
        steps = input.shape[1]
        da = torch.empty_like(hs)  # (N, T, H): gradient at the pre-activation of every step
        dh = grad_hn.clone()
        for t in range(steps - 1, -1, -1):
            dh = dh + grad_output[:, t]
            da[:, t] = dh * (1 - hs[:, t] * hs[:, t])
            dh = da[:, t] @ weight_hh  # to h_{t-1}
        h_prev = torch.cat([h0.unsqueeze(1), hs[:, :-1]], dim=1)  # (N, T, H): the state each step read
        flat_da = da.reshape(-1, da.shape[2])
        d_input = (da @ weight_ih) if ctx.needs_input_grad[0] else None
        d_wih = flat_da.t() @ input.reshape(-1, input.shape[2]) if ctx.needs_input_grad[2] else None
        d_whh = flat_da.t() @ h_prev.reshape(-1, h_prev.shape[2]) if ctx.needs_input_grad[3] else None
        d_b = flat_da.sum(dim=0)
        d_bih = d_b if ctx.has_bias[0] and ctx.needs_input_grad[4] else None
        d_bhh = d_b if ctx.has_bias[1] and ctx.needs_input_grad[5] else None
        return d_input, dh, d_wih, d_whh, d_bih, d_bhh


def elman_rnn(
    input: Tensor,
    h0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """An Elman layer over a whole sequence, with backpropagation through time written by hand.

    Same values as :func:`elman_rnn_naive`; the backward is in ``_ElmanFunction``.

    Args:
        input: ``(N, T, I)``.
        h0: ``(N, H)`` initial hidden state.
        weight_ih, weight_hh: ``(H, I)`` and ``(H, H)``.
        bias_ih, bias_hh: ``(H,)`` or ``None``.

    Returns:
        ``(output, h_n)``: ``(N, T, H)`` and ``(N, H)``.

    Raises:
        ValueError: on shapes that do not fit together.

    Reference: P. J. Werbos, "Backpropagation through time: what it does and how to do it",
    Proc. IEEE 78(10) (1990).
    """
    _check_sequence(input, h0, weight_ih, weight_hh, 1, "elman_rnn")
    return _ElmanFunction.apply(input, h0, weight_ih, weight_hh, bias_ih, bias_hh)


def lstm_cell(
    x: Tensor,
    state: tuple[Tensor, Tensor],
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One LSTM step, gates stacked in PyTorch's order ``i, f, g, o``::

        i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)      input gate
        f = sigmoid(W_if x + b_if + W_hf h + b_hf)      forget gate
        g = tanh(W_ig x + b_ig + W_hg h + b_hg)         candidate cell
        o = sigmoid(W_io x + b_io + W_ho h + b_ho)      output gate
        c' = f * c + i * g
        h' = o * tanh(c')

    Args:
        x: ``(N, I)``.
        state: ``(h, c)``, each ``(N, H)``.
        weight_ih, weight_hh: ``(4H, I)`` and ``(4H, H)``.
        bias_ih, bias_hh: ``(4H,)`` or ``None``.

    Returns:
        ``(h', c')``.

    Reference: S. Hochreiter, J. Schmidhuber, "Long short-term memory", Neural Computation 9(8) (1997);
    the forget gate is from F. Gers, J. Schmidhuber, F. Cummins, Neural Computation 12(10) (2000).
    """
    h, c = state
    gates = x @ weight_ih.t() + _bias(bias_ih) + h @ weight_hh.t() + _bias(bias_hh)
    return _lstm_update(gates, c)


def _lstm_update(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    i, f, g, o = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def gru_cell(
    x: Tensor,
    h: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> Tensor:
    """One GRU step, gates stacked in PyTorch's order ``r, z, n``::

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)      reset gate
        z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)      update gate
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))   candidate state
        h' = (1 - z) * n + z * h

    The reset gate multiplies ``W_hn h + b_hn`` *after* the matrix product, as in PyTorch and cuDNN;
    Cho et al. (2014) reset ``h`` before it. Both are GRUs; only this one matches ``torch.nn.GRU``.

    Args:
        x: ``(N, I)``.
        h: ``(N, H)``.
        weight_ih, weight_hh: ``(3H, I)`` and ``(3H, H)``.
        bias_ih, bias_hh: ``(3H,)`` or ``None``.

    Returns:
        ``(N, H)``, the new hidden state.

    Reference: K. Cho et al., "Learning phrase representations using RNN encoder-decoder for
    statistical machine translation", EMNLP 2014.
    """
    return _gru_update(x @ weight_ih.t() + _bias(bias_ih), h @ weight_hh.t() + _bias(bias_hh), h)


def _gru_update(gi: Tensor, gh: Tensor, h: Tensor) -> Tensor:
    i_r, i_z, i_n = gi.chunk(3, dim=1)
    h_r, h_z, h_n = gh.chunk(3, dim=1)
    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


def lstm_sequence(
    input: Tensor,
    state: tuple[Tensor, Tensor],
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """An LSTM layer over ``(N, T, I)``: input projections for all steps in one product, then the loop.

    Returns:
        ``(output, (h_n, c_n))`` with ``output`` ``(N, T, H)``.
    """
    h, c = state
    _check_sequence(input, h, weight_ih, weight_hh, 4, "lstm_sequence")
    projected = input @ weight_ih.t() + _bias(bias_ih) + _bias(bias_hh)  # (N, T, 4H)
    outputs = []
    for t in range(input.shape[1]):
        h, c = _lstm_update(torch.addmm(projected[:, t], h, weight_hh.t()), c)
        outputs.append(h)
    return torch.stack(outputs, dim=1), (h, c)


def gru_sequence(
    input: Tensor,
    h: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """A GRU layer over ``(N, T, I)``: input projections for all steps in one product, then the loop.

    Returns:
        ``(output, h_n)`` with ``output`` ``(N, T, H)``.
    """
    _check_sequence(input, h, weight_ih, weight_hh, 3, "gru_sequence")
    projected = input @ weight_ih.t() + _bias(bias_ih)  # (N, T, 3H); b_hh stays inside the reset gate's reach
    outputs = []
    for t in range(input.shape[1]):
        h = _gru_update(projected[:, t], h @ weight_hh.t() + _bias(bias_hh), h)
        outputs.append(h)
    return torch.stack(outputs, dim=1), h
