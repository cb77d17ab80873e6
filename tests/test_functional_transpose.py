"""cnncourse.functional.conv_transpose2d against torch.nn.functional.conv_transpose2d, in float64."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cnncourse import functional as cf
from cnncourse.layers import ConvTranspose2d

DT = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: threads only spin-wait on a shared CPU


def rand(*shape, grad=False):
    return torch.randn(*shape, dtype=DT, requires_grad=grad)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


GRID = [(s, p, o, d) for s, p, o, d in itertools.product([1, 2, 3], [0, 1, 2], [0, 1, 2], [1, 2]) if o < max(s, d)]


@pytest.mark.parametrize("stride,padding,output_padding,dilation", GRID)
@pytest.mark.parametrize("use_bias", [True, False])
def test_conv_transpose2d_matches_torch_forward_and_grads(stride, padding, output_padding, dilation, use_bias):
    x, w = rand(2, 3, 5, 4, grad=True), rand(3, 2, 3, 2, grad=True)  # non-square input and kernel
    b = rand(2, grad=True) if use_bias else None
    args = (stride, padding, output_padding, 1, dilation)
    ours, ref = cf.conv_transpose2d(x, w, b, *args), F.conv_transpose2d(x, w, b, *args)
    torch.testing.assert_close(ours, ref)
    g = torch.randn_like(ref)
    leaves = [x, w] + ([b] if use_bias else [])
    for got, want in zip(torch.autograd.grad(ours, leaves, g), torch.autograd.grad(ref, leaves, g)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("stride,padding,output_padding,dilation", [
    (1, 0, 0, 1), (2, 1, 1, 1), (3, 2, 2, 2), ((2, 1), (1, 0), (1, 0), (1, 2)), (1, 0, 1, 2)])
@pytest.mark.parametrize("use_bias", [True, False])
def test_conv_transpose2d_gradcheck(stride, padding, output_padding, dilation, use_bias):
    x, w = rand(1, 2, 3, 3, grad=True), rand(2, 2, 2, 2, grad=True)
    b = rand(2, grad=True) if use_bias else None
    inputs = (x, w, b) if use_bias else (x, w)

    def fn(*t):
        return cf.conv_transpose2d(t[0], t[1], t[2] if use_bias else None, stride, padding, output_padding, 1,
                                   dilation)

    assert torch.autograd.gradcheck(fn, inputs)


def test_conv_transpose2d_backward_is_hand_written():
    out = cf.conv_transpose2d(rand(1, 1, 3, 3, grad=True), rand(1, 1, 2, 2, grad=True))
    assert type(out.grad_fn).__name__ == "_ConvTranspose2dFunctionBackward"


@st.composite
def transpose_case(draw):
    n, c_in, c_out = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s, d = (draw(st.integers(1, 3)), draw(st.integers(1, 3))), (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    o = tuple(draw(st.integers(0, max(s[a], d[a]) - 1)) for a in range(2))
    p = tuple(draw(st.integers(0, 2)) for _ in range(2))
    out = [(hw - 1) * s[a] - 2 * p[a] + d[a] * (k[a] - 1) + o[a] + 1 for a, hw in enumerate((h, w))]
    if min(out) < 1:
        p = (0, 0)
    return (n, c_in, h, w), (c_in, c_out, *k), dict(stride=s, padding=p, output_padding=o, dilation=d)


@settings(max_examples=60, deadline=None)
@given(transpose_case(), st.booleans())
def test_conv_transpose2d_hypothesis_matches_torch_and_naive(case, use_bias):
    x_shape, w_shape, kw = case
    x, w = rand(*x_shape, grad=True), rand(*w_shape, grad=True)
    b = rand(w_shape[1]) if use_bias else None
    ref = F.conv_transpose2d(x, w, b, **kw)
    torch.testing.assert_close(cf.conv_transpose2d(x, w, b, **kw), ref)
    torch.testing.assert_close(cf.conv_transpose2d_naive(x, w, b, **kw), ref)
    assert ref.shape[2:] == tuple(cf.conv_transpose_output_size(x_shape[2 + a], w_shape[2 + a], kw["stride"][a],
                                                                kw["padding"][a], kw["output_padding"][a],
                                                                kw["dilation"][a]) for a in range(2))


def test_conv_transpose_is_the_gradient_of_conv2d():
    """The defining property: conv_transpose2d(g) = d conv2d(x) / dx applied to g, for the same W."""
    x, w = rand(2, 3, 9, 8, grad=True), rand(4, 3, 3, 3)
    y = F.conv2d(x, w, stride=2, padding=1)
    g = torch.randn_like(y)
    (dx,) = torch.autograd.grad(y, x, g)
    op = tuple(x.shape[2 + a] - cf.conv_transpose_output_size(y.shape[2 + a], 3, 2, 1) for a in range(2))
    torch.testing.assert_close(cf.conv_transpose2d(g, w, stride=2, padding=1, output_padding=op), dx)


def test_conv_transpose2d_naive_gradients_match_torch():
    x, w, b = rand(2, 2, 3, 3, grad=True), rand(2, 3, 2, 2, grad=True), rand(3, grad=True)
    ours = cf.conv_transpose2d_naive(x, w, b, stride=2, padding=1, output_padding=1)
    ref = F.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1)
    g = torch.randn_like(ref)
    for got, want in zip(torch.autograd.grad(ours, (x, w, b), g), torch.autograd.grad(ref, (x, w, b), g)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("x_shape,w_shape,kwargs,message", [
    ((1, 2, 4, 4), (3, 2, 3, 3), {}, "C_in=3 channels"),
    ((2, 4, 4), (2, 2, 3, 3), {}, r"input of shape \(N, C_in, H, W\)"),
    ((1, 2, 4, 4), (2, 2, 3, 3), {"stride": 2, "output_padding": 2}, "output_padding must be smaller"),
    ((1, 2, 4, 4), (2, 2, 3, 3), {"groups": 2}, "groups=1 only"),
    ((1, 2, 1, 1), (2, 2, 1, 1), {"padding": 1}, "leaves no output"),
    ((1, 2, 4, 4), (2, 2, 3, 3), {"stride": 0}, "stride must be positive"),
])
def test_conv_transpose2d_errors(x_shape, w_shape, kwargs, message):
    for fn in (cf.conv_transpose2d, cf.conv_transpose2d_naive):
        with pytest.raises(ValueError, match=message):
            fn(rand(*x_shape), rand(*w_shape), **kwargs)


def test_conv_transpose_layer_loads_torch_state_and_matches():
    torch.manual_seed(1)
    ref = torch.nn.ConvTranspose2d(3, 5, (3, 2), stride=2, padding=1, output_padding=1).double()
    ours = ConvTranspose2d(3, 5, (3, 2), stride=2, padding=1, output_padding=1).double()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    ours.load_state_dict(ref.state_dict())
    x = rand(2, 3, 7, 7)
    torch.testing.assert_close(ours(x), ref(x))
    assert ours(x).shape == (2, 5, 14, 13)  # (7 - 1) * 2 - 2 + (K - 1) + 1 + 1 for K = 3, 2
