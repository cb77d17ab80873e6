"""cnncourse.functional against torch.nn.functional, in float64."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cnncourse import functional as cf

DT = torch.float64
FAST = settings(max_examples=40, deadline=None)


def rand(*shape, grad=False):
    return torch.randn(*shape, dtype=DT, requires_grad=grad)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---------------------------------------------------------------- convolution

CONV_GRID = list(itertools.product([1, 2, 3], [0, 1, 2], [1, 2], [True, False]))


@pytest.mark.parametrize("stride,padding,dilation,use_bias", CONV_GRID)
@pytest.mark.parametrize("n", [1, 3])
def test_conv2d_matches_torch_forward_and_grads(n, stride, padding, dilation, use_bias):
    # odd H and W, non-square kernel
    x, w = rand(n, 3, 11, 9, grad=True), rand(4, 3, 3, 2, grad=True)
    b = rand(4, grad=True) if use_bias else None
    args = (stride, padding, dilation)
    ours, ref = cf.conv2d(x, w, b, *args), F.conv2d(x, w, b, *args)
    torch.testing.assert_close(ours, ref)
    g = torch.randn_like(ref)
    inputs = [x, w] + ([b] if use_bias else [])
    got = torch.autograd.grad(ours, inputs, g)
    want = torch.autograd.grad(ref, inputs, g)
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize(
    "stride,padding,dilation",
    [(1, 0, 1), (2, 1, 1), (3, 2, 2), ((1, 2), (2, 0), (2, 1)), (2, 0, 2)],
)
@pytest.mark.parametrize("use_bias", [True, False])
def test_conv2d_gradcheck(stride, padding, dilation, use_bias):
    x, w = rand(2, 2, 7, 6, grad=True), rand(3, 2, 3, 2, grad=True)
    b = rand(3, grad=True) if use_bias else None
    inputs = (x, w, b) if use_bias else (x, w)

    def fn(*t):
        return cf.conv2d(t[0], t[1], t[2] if use_bias else None, stride, padding, dilation)

    assert torch.autograd.gradcheck(fn, inputs)


def test_conv2d_backward_is_hand_written():
    x, w = rand(1, 1, 5, 5, grad=True), rand(1, 1, 3, 3, grad=True)
    out = cf.conv2d(x, w)
    assert type(out.grad_fn).__name__ == "_Conv2dFunctionBackward"
    pooled = cf.max_pool2d(x, 2), cf.avg_pool2d(x, 2)
    assert [type(p.grad_fn).__name__ for p in pooled] == ["_MaxPool2dFunctionBackward", "_AvgPool2dFunctionBackward"]


@st.composite
def conv_case(draw, dilation_max=2):
    n, c_in, c_out = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    k_h, k_w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, dilation_max)), draw(st.integers(1, dilation_max)))
    span = (dilation[0] * (k_h - 1) + 1, dilation[1] * (k_w - 1) + 1)
    h = draw(st.integers(max(1, span[0] - 2 * padding[0]), span[0] + 7))
    w = draw(st.integers(max(1, span[1] - 2 * padding[1]), span[1] + 7))
    bias = draw(st.booleans())
    return (n, c_in, h, w), (c_out, c_in, k_h, k_w), bias, stride, padding, dilation


@FAST
@given(conv_case())
def test_conv2d_hypothesis_matches_torch(case):
    x_shape, w_shape, use_bias, stride, padding, dilation = case
    x, w = rand(*x_shape, grad=True), rand(*w_shape, grad=True)
    b = rand(w_shape[0], grad=True) if use_bias else None
    ours = cf.conv2d(x, w, b, stride, padding, dilation)
    ref = F.conv2d(x, w, b, stride, padding, dilation)
    torch.testing.assert_close(ours, ref)
    g = torch.randn_like(ref)
    for a, e in zip(torch.autograd.grad(ours, (x, w), g), torch.autograd.grad(ref, (x, w), g)):
        torch.testing.assert_close(a, e)
    expected = tuple(
        cf.conv_output_size(s, k, st_, p, d)
        for s, k, st_, p, d in zip(x_shape[2:], w_shape[2:], stride, padding, dilation)
    )
    assert tuple(ours.shape) == (x_shape[0], w_shape[0], *expected)


@settings(max_examples=25, deadline=None)
@given(conv_case(dilation_max=1))
def test_conv2d_naive_matches_vectorised_and_torch(case):
    x_shape, w_shape, use_bias, stride, padding, _ = case
    x, w = rand(*x_shape), rand(*w_shape)
    b = rand(w_shape[0]) if use_bias else None
    naive = cf.conv2d_naive(x, w, b, stride, padding)
    torch.testing.assert_close(naive, cf.conv2d(x, w, b, stride, padding))
    torch.testing.assert_close(naive, F.conv2d(x, w, b, stride, padding))


def test_conv2d_naive_gradients_match_torch():
    x, w, b = rand(2, 2, 6, 5, grad=True), rand(3, 2, 3, 2, grad=True), rand(3, grad=True)
    ours, ref = cf.conv2d_naive(x, w, b, 2, 1), F.conv2d(x, w, b, 2, 1)
    g = torch.randn_like(ref)
    for a, e in zip(torch.autograd.grad(ours, (x, w, b), g), torch.autograd.grad(ref, (x, w, b), g)):
        torch.testing.assert_close(a, e)


def test_conv2d_float32_and_int_pair_equivalence():
    x, w = torch.randn(2, 3, 8, 8), torch.randn(5, 3, 3, 3)
    torch.testing.assert_close(cf.conv2d(x, w, stride=2, padding=1), F.conv2d(x, w, stride=2, padding=1))
    torch.testing.assert_close(cf.conv2d(x, w, None, 2, 1, 1), cf.conv2d(x, w, None, (2, 2), (1, 1), (1, 1)))


# ---------------------------------------------------------------- output size


@pytest.mark.parametrize(
    "size,kernel,stride,padding,dilation,expected",
    [(28, 5, 1, 0, 1, 24), (32, 5, 1, 0, 1, 28), (28, 5, 1, 2, 1, 28), (224, 11, 4, 2, 1, 55), (7, 3, 2, 0, 2, 2)],
)
def test_conv_output_size_known_values(size, kernel, stride, padding, dilation, expected):
    assert cf.conv_output_size(size, kernel, stride, padding, dilation) == expected


@FAST
@given(
    st.integers(1, 30), st.integers(1, 6), st.integers(1, 4), st.integers(0, 3), st.integers(1, 3)
)
def test_conv_output_size_matches_torch(size, kernel, stride, padding, dilation):
    if dilation * (kernel - 1) + 1 > size + 2 * padding:
        with pytest.raises(ValueError, match="kernel spans"):
            cf.conv_output_size(size, kernel, stride, padding, dilation)
        return
    out = F.conv2d(torch.zeros(1, 1, size, 1), torch.zeros(1, 1, kernel, 1), None, (stride, 1), (padding, 0), (dilation, 1))
    assert cf.conv_output_size(size, kernel, stride, padding, dilation) == out.shape[2]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(size=0, kernel=1), "size must be positive, got 0"),
        (dict(size=5, kernel=0), "kernel must be positive, got 0"),
        (dict(size=5, kernel=3, stride=0), "stride must be positive, got 0"),
        (dict(size=5, kernel=3, dilation=0), "dilation must be positive, got 0"),
        (dict(size=5, kernel=3, padding=-1), "padding must be non-negative, got -1"),
        (dict(size=3, kernel=5), r"kernel spans 5 pixels .* padded input is only 3"),
    ],
)
def test_conv_output_size_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        cf.conv_output_size(**kwargs)


# ---------------------------------------------------------------- pooling

POOLS = [
    (cf.max_pool2d, cf.max_pool2d_naive, F.max_pool2d),
    (cf.avg_pool2d, cf.avg_pool2d_naive, F.avg_pool2d),
]
POOL_ARGS = [
    dict(kernel_size=2),
    dict(kernel_size=2, stride=1),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(3, 2), stride=(1, 3), padding=(1, 1)),
    dict(kernel_size=(2, 5), stride=(3, 2), padding=(0, 2)),
    dict(kernel_size=4, stride=3, padding=2),
]


@pytest.mark.parametrize("kwargs", POOL_ARGS)
@pytest.mark.parametrize("ops", POOLS, ids=["max", "avg"])
@pytest.mark.parametrize("n", [1, 2])
def test_pool_matches_torch_and_naive(ops, kwargs, n):
    fast, naive, ref = ops
    x = rand(n, 3, 9, 11, grad=True)
    out, want = fast(x, **kwargs), ref(x, **kwargs)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(naive(x, **kwargs), want)
    g = torch.randn_like(want)
    expected = torch.autograd.grad(want, x, g)[0]
    torch.testing.assert_close(torch.autograd.grad(out, x, g)[0], expected)
    torch.testing.assert_close(torch.autograd.grad(naive(x, **kwargs), x, g)[0], expected)


@pytest.mark.parametrize("kwargs", POOL_ARGS[:4])
@pytest.mark.parametrize("ops", POOLS, ids=["max", "avg"])
def test_pool_gradcheck(ops, kwargs):
    x = rand(2, 2, 7, 6, grad=True)
    assert torch.autograd.gradcheck(lambda t: ops[0](t, **kwargs), (x,))


@st.composite
def pool_case(draw):
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = None if draw(st.booleans()) else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    h = draw(st.integers(max(1, k[0] - 2 * padding[0]), k[0] + 8))
    w = draw(st.integers(max(1, k[1] - 2 * padding[1]), k[1] + 8))
    return (draw(st.integers(1, 3)), draw(st.integers(1, 3)), h, w), k, stride, padding


@FAST
@given(pool_case(), st.sampled_from(["max", "avg"]))
def test_pool_hypothesis(case, kind):
    shape, k, stride, padding = case
    fast, naive, ref = POOLS[0] if kind == "max" else POOLS[1]
    x = rand(*shape, grad=True)
    out, want = fast(x, k, stride, padding), ref(x, k, stride, padding)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(naive(x, k, stride, padding), want)
    g = torch.randn_like(want)
    torch.testing.assert_close(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(want, x, g)[0])


def test_max_pool_routes_each_gradient_to_exactly_one_input_on_ties():
    x = torch.ones(1, 1, 4, 4, dtype=DT, requires_grad=True)
    cf.max_pool2d(x, 2).sum().backward()
    windows = x.grad.reshape(2, 2, 2, 2).permute(0, 2, 1, 3).reshape(4, 4)
    assert windows.sum(dim=1).tolist() == [1.0] * 4
    assert set(x.grad.unique().tolist()) == {0.0, 1.0}


def test_avg_pool_counts_padding_in_the_mean():
    x = torch.ones(1, 1, 2, 2, dtype=DT)
    out = cf.avg_pool2d(x, 3, stride=1, padding=1)
    # every 3x3 window sees the 4 ones and 5 padded zeros
    torch.testing.assert_close(out, torch.full((1, 1, 2, 2), 4 / 9, dtype=DT))


# ---------------------------------------------------------------- errors

CONV_FNS = [cf.conv2d, cf.conv2d_naive]


@pytest.mark.parametrize("fn", CONV_FNS, ids=["conv2d", "conv2d_naive"])
@pytest.mark.parametrize(
    "x_shape,w_shape,bias_shape,kwargs,message",
    [
        ((3, 5, 5), (2, 3, 3, 3), None, {}, r"input of shape \(N, C_in, H, W\) \(4 dimensions\), got 3 dimensions with shape \(3, 5, 5\)"),
        ((1, 3, 5, 5), (3, 3, 3), None, {}, r"weight of shape \(C_out, C_in, K_h, K_w\) \(4 dimensions\), got 3 dimensions"),
        ((1, 2, 5, 5), (4, 3, 3, 3), None, {}, r"C_in=3 channels .* got input with 2 channels"),
        ((1, 3, 5, 5), (4, 3, 3, 3), (3,), {}, r"bias of shape \(C_out,\)=\(4,\), got \(3,\)"),
        ((1, 3, 4, 4), (4, 3, 5, 5), None, {}, r"kernel no larger than the padded input: kernel spans \(5, 5\).*padded input is \(4, 4\)"),
        ((1, 3, 4, 4), (4, 3, 5, 3), None, {"padding": (0, 1)}, r"kernel spans \(5, 3\).*padded input is \(4, 6\)"),
        ((1, 3, 5, 5), (4, 3, 3, 3), None, {"stride": 0}, r"stride must be positive, got \(0, 0\)"),
        ((1, 3, 5, 5), (4, 3, 3, 3), None, {"stride": (1, -2)}, r"stride must be positive, got \(1, -2\)"),
        ((1, 3, 5, 5), (4, 3, 3, 3), None, {"padding": -1}, r"padding must be non-negative, got \(-1, -1\)"),
        ((1, 3, 5, 5), (4, 3, 3, 3), None, {"stride": (1, 2, 3)}, r"stride must be an int or a pair of ints, got \(1, 2, 3\)"),
        ((1, 3, 5, 5), (4, 3, 3, 3), None, {"padding": 1.5}, r"padding must be an int or a pair of ints, got 1.5"),
    ],
)
def test_conv_errors(fn, x_shape, w_shape, bias_shape, kwargs, message):
    b = rand(*bias_shape) if bias_shape else None
    with pytest.raises(ValueError, match=message):
        fn(rand(*x_shape), rand(*w_shape), b, **kwargs)


def test_conv2d_dilation_and_type_errors():
    x, w = rand(1, 3, 9, 9), rand(2, 3, 3, 3)
    with pytest.raises(ValueError, match=r"dilation must be positive, got \(0, 1\)"):
        cf.conv2d(x, w, dilation=(0, 1))
    with pytest.raises(ValueError, match=r"kernel spans \(9, 9\).*padded input is \(8, 8\)"):
        cf.conv2d(rand(1, 3, 8, 8), w, dilation=4)
    with pytest.raises(ValueError, match="expected input to be a torch.Tensor .* got list"):
        cf.conv2d([[1.0]], w)
    with pytest.raises(ValueError, match=r"bias of shape \(C_out,\)=\(2,\), got list"):
        cf.conv2d(x, w, [0.0, 0.0])


POOL_FNS = [cf.max_pool2d, cf.max_pool2d_naive, cf.avg_pool2d, cf.avg_pool2d_naive]


@pytest.mark.parametrize("fn", POOL_FNS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    "shape,kwargs,message",
    [
        ((4, 4), dict(kernel_size=2), r"input of shape \(N, C, H, W\) \(4 dimensions\), got 2 dimensions with shape \(4, 4\)"),
        ((1, 1, 4, 4), dict(kernel_size=0), r"kernel_size must be positive, got \(0, 0\)"),
        ((1, 1, 4, 4), dict(kernel_size=2, stride=0), r"stride must be positive, got \(0, 0\)"),
        ((1, 1, 4, 4), dict(kernel_size=2, padding=-1), r"padding must be non-negative, got \(-1, -1\)"),
        ((1, 1, 4, 4), dict(kernel_size=2, padding=2), r"padding at most half the kernel size \(2, 2\), got padding \(2, 2\)"),
        ((1, 1, 2, 5), dict(kernel_size=3), r"kernel no larger than the padded input: kernel spans \(3, 3\).*padded input is \(2, 5\)"),
        ((1, 1, 4, 4), dict(kernel_size=(2, 2, 2)), r"kernel_size must be an int or a pair of ints"),
    ],
)
def test_pool_errors(fn, shape, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fn(rand(*shape), **kwargs)


@pytest.mark.parametrize("c_in,c_out", [(5, 3), (3, 5)])  # dX by full correlation, and by fold
@pytest.mark.parametrize("padding,dilation", [(0, 1), (2, 1), ((4, 1), (1, 2)), (3, 2)])
def test_conv2d_input_grad_both_paths(c_in, c_out, padding, dilation):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, c_in, 9, 8, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(c_out, c_in, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    ours = cf.conv2d(x, w, None, 1, padding, dilation)
    dy = torch.randn(ours.shape, generator=g, dtype=torch.float64)
    ref = F.conv2d(x, w, None, 1, padding, dilation)
    torch.testing.assert_close(torch.autograd.grad(ours, (x, w), dy), torch.autograd.grad(ref, (x, w), dy))


def test_batch_chunks_cover_the_batch_in_order():
    assert cf._batch_chunks(7, 10, budget=30) == [slice(0, 3), slice(3, 6), slice(6, 7)]
    assert cf._batch_chunks(2, 10, budget=5) == [slice(0, 1), slice(1, 2)]  # at least one image per chunk
    assert cf._batch_chunks(4, 10, budget=100) == [slice(0, 4)]


@pytest.mark.parametrize("c_out", [8, 24])  # dX by full correlation (C_out <= C_in), and by fold
def test_conv2d_over_several_chunks_matches_torch(c_out):
    # float64 columns of 16*3*3 rows by 64*64 windows are 4.7 MB per image: 7 images need two chunks
    x = rand(7, 16, 64, 64, grad=True)
    w, b = rand(c_out, 16, 3, 3, grad=True), rand(c_out, grad=True)
    per_image = 16 * 9 * 64 * 64 * x.element_size()
    assert len(cf._batch_chunks(7, per_image)) > 1
    ours, ref = cf.conv2d(x, w, b, 1, 1), F.conv2d(x, w, b, 1, 1)
    torch.testing.assert_close(ours, ref)
    g = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(ours, (x, w, b), g), torch.autograd.grad(ref, (x, w, b), g))
