"""Recurrent cells from scratch: BPTT by hand against autograd, gradcheck, and parity with torch.nn.RNN/LSTM/GRU."""

from __future__ import annotations

import pytest
import torch

from cnncourse import models
from cnncourse import recurrent as rec
from cnncourse.data import as_sequences, permute_pixels
from cnncourse.models.rnn import GRU, LSTM, RNN, SequenceClassifier
from cnncourse.train import fit

DT = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


def rand(*shape, grad=True):
    return torch.randn(*shape, dtype=DT, requires_grad=grad)


def elman_args(n, t, i, h, bias=True):
    args = [rand(n, t, i), rand(n, h), rand(h, i) / 2, rand(h, h) / 2]
    return args + ([rand(h), rand(h)] if bias else [None, None])


@pytest.mark.parametrize("n,t,i,h", [(1, 1, 1, 1), (3, 5, 4, 6), (2, 28, 7, 3), (4, 9, 1, 8)])
@pytest.mark.parametrize("bias", [True, False])
def test_bptt_by_hand_matches_autograd(n, t, i, h, bias):
    torch.manual_seed(n * 100 + t)
    args = elman_args(n, t, i, h, bias)
    out, hn = rec.elman_rnn(*args)
    ref_out, ref_hn = rec.elman_rnn_naive(*args)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(hn, ref_hn)
    assert type(out.grad_fn).__name__ == "_ElmanFunctionBackward"
    leaves = [a for a in args if a is not None]
    g_out, g_hn = torch.randn_like(out), torch.randn_like(hn)  # gradient from every step AND from h_n
    ours = torch.autograd.grad((out, hn), leaves, (g_out, g_hn))
    ref = torch.autograd.grad((ref_out, ref_hn), leaves, (g_out, g_hn))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("bias", [True, False])
def test_bptt_gradcheck(bias):
    torch.manual_seed(1)
    args = elman_args(2, 4, 3, 3, bias)
    leaves = [a for a in args if a is not None]

    def fn(*t):
        full = list(t) + ([None, None] if not bias else [])
        return rec.elman_rnn(*full)

    assert torch.autograd.gradcheck(fn, leaves)


@pytest.mark.parametrize("cell,ref_cls", [(RNN, torch.nn.RNN), (LSTM, torch.nn.LSTM), (GRU, torch.nn.GRU)])
@pytest.mark.parametrize("num_layers,batch_first,bias", [(1, True, True), (2, False, True), (2, True, False)])
def test_layers_load_torch_state_and_match(cell, ref_cls, num_layers, batch_first, bias):
    torch.manual_seed(2)
    ref = ref_cls(5, 7, num_layers=num_layers, batch_first=batch_first, bias=bias).double()
    ours = cell(5, 7, num_layers=num_layers, batch_first=batch_first, bias=bias).double()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    ours.load_state_dict(ref.state_dict())
    x = rand(3, 6, 5)
    state = rand(num_layers, 3 if batch_first else 6, 7)
    state = (state, rand(*state.shape)) if cell is LSTM else state
    (o1, s1), (o2, s2) = ours(x, state), ref(x, state)
    torch.testing.assert_close(o1, o2)
    torch.testing.assert_close(s1, s2)
    g = torch.randn_like(o1)
    leaves_ours, leaves_ref = [x, *ours.parameters()], [x, *ref.parameters()]
    for a, b in zip(torch.autograd.grad(o1, leaves_ours, g), torch.autograd.grad(o2, leaves_ref, g)):
        torch.testing.assert_close(a, b)
    # and back: torch's module loads ours
    ref.load_state_dict(cell(5, 7, num_layers=num_layers, batch_first=batch_first, bias=bias).double().state_dict())


@pytest.mark.parametrize("cell,step", [("lstm", rec.lstm_cell), ("gru", rec.gru_cell)])
def test_single_cells_match_torch_cells(cell, step):
    torch.manual_seed(3)
    ref = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}[cell](4, 5).double()
    x, h = rand(3, 4), rand(3, 5)
    state = (h, rand(3, 5)) if cell == "lstm" else h
    got = step(x, state, ref.weight_ih, ref.weight_hh, ref.bias_ih, ref.bias_hh)
    want = ref(x, state)
    for a, b in zip(got if cell == "lstm" else [got], want if cell == "lstm" else [want]):
        torch.testing.assert_close(a, b)


def test_default_initialisation_is_uniform_in_one_over_sqrt_h():
    torch.manual_seed(0)
    layer = LSTM(10, 64)
    values = torch.cat([p.flatten() for p in layer.parameters()])
    assert values.abs().max() <= 1 / 8 and values.abs().max() > 0.12


@pytest.mark.parametrize("kwargs,x_shape,message", [
    ({}, (3, 4), r"input of shape \(T, N, I\)"),
    ({}, (3, 4, 6), "input size I=5"),
    ({"bidirectional": True}, (3, 4, 5), "bidirectional=False only"),
])
def test_layer_errors(kwargs, x_shape, message):
    with pytest.raises(ValueError, match=message):
        GRU(5, 7, **kwargs)(torch.randn(*x_shape))


def test_sequence_classifier_reads_rows_and_matches_torch_backend():
    torch.manual_seed(4)
    images = torch.randn(2, 1, 28, 28)
    assert torch.equal(as_sequences(images)[:, 3], images[:, 0, 3])  # step 3 is row 3
    for cell in ("rnn", "lstm", "gru"):
        ours = models.get_model(f"sequence_{cell}", hidden_size=16)
        ref = SequenceClassifier(cell, hidden_size=16, backend="torch")
        ref.load_state_dict(ours.state_dict())
        torch.testing.assert_close(ours(images), ref(images))
        assert ours(images).shape == (2, 10)


def test_permute_pixels_is_a_fixed_permutation():
    x = torch.arange(2 * 784, dtype=torch.float32).reshape(2, 1, 28, 28)
    a, b = permute_pixels(seed=1)(x), permute_pixels(seed=1)(x)
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert torch.equal(a.flatten(1).sort(1).values, x.flatten(1))
    assert not torch.equal(permute_pixels(seed=2)(x), a)


def test_fit_trains_a_sequence_classifier_unchanged(mnist_train):
    torch.manual_seed(0)
    data = mnist_train.take(2048)
    model = models.sequence_gru(hidden_size=32)
    history = fit(model, data, epochs=3, lr=1e-2, batch_size=64, progress=False)
    assert history["train_loss"][-1] < history["train_loss"][0] - 0.5
    assert history.last["train_acc"] > 0.5
