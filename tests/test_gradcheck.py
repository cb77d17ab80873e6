"""numerical_gradient and rel_error, and their use on the hand-written backwards."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cnncourse import functional as cf
from cnncourse.gradcheck import numerical_gradient, rel_error

DT = torch.float64


def test_numerical_gradient_of_a_scalar_function():
    torch.manual_seed(0)
    x = torch.randn(3, 4, dtype=DT)
    before = x.clone()
    grad = numerical_gradient(lambda t: (t**3).sum(), x)
    torch.testing.assert_close(grad, 3 * x**2, rtol=1e-7, atol=1e-8)
    assert torch.equal(x, before), "x must be restored after the sweep"


def test_numerical_gradient_with_upstream_gradient():
    torch.manual_seed(1)
    x, a = torch.randn(2, 5, dtype=DT), torch.randn(5, 3, dtype=DT)
    df = torch.randn(2, 3, dtype=DT)
    grad = numerical_gradient(lambda t: t @ a, x, df=df)
    torch.testing.assert_close(grad, df @ a.T)


def test_numerical_gradient_on_non_contiguous_input():
    x = torch.arange(6, dtype=DT).reshape(2, 3).t()
    assert not x.is_contiguous()
    grad = numerical_gradient(lambda t: (t * torch.tensor([[1.0, 2.0]], dtype=DT)).sum(), x)
    torch.testing.assert_close(grad, torch.tensor([[1.0, 2.0]] * 3, dtype=DT))


@pytest.mark.parametrize("op", ["conv", "max", "avg"])
def test_numerical_gradient_agrees_with_hand_written_backwards(op):
    torch.manual_seed(2)
    x = torch.randn(2, 2, 5, 6, dtype=DT, requires_grad=True)
    w = torch.randn(3, 2, 3, 2, dtype=DT)
    fns = {
        "conv": lambda t: cf.conv2d(t, w, None, stride=2, padding=1),
        "max": lambda t: cf.max_pool2d(t, 2, 1),
        "avg": lambda t: cf.avg_pool2d(t, 3, 2, 1),
    }
    out = fns[op](x)
    df = torch.randn_like(out)
    (analytic,) = torch.autograd.grad(out, x, df)
    numeric = numerical_gradient(fns[op], x, df=df)
    assert rel_error(analytic, numeric) < 1e-7


def test_rel_error_definition():
    a = torch.tensor([1.0, 2.0, 0.0])
    b = torch.tensor([1.0, 1.0, 0.0])
    # |2 - 1| / (2 + 1) = 1/3 is the largest; 0/0 is guarded by the 1e-8 floor
    assert rel_error(a, b) == pytest.approx(1 / 3)
    assert rel_error(a, a) == 0.0
    assert rel_error(torch.tensor([1e-9]), torch.tensor([0.0])) == pytest.approx(0.1)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=8))
def test_rel_error_is_symmetric_and_bounded(values):
    a = torch.tensor(values, dtype=DT)
    b = a * 1.5 + 0.25
    assert rel_error(a, b) == pytest.approx(rel_error(b, a))
    assert 0.0 <= rel_error(a, b) <= 1.0


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: numerical_gradient(lambda t: t.sum(), torch.arange(3)), "floating-point tensor x, got torch.int64"),
        (lambda: numerical_gradient(lambda t: t.sum(), [1.0, 2.0]), "floating-point tensor x, got list"),
        (lambda: numerical_gradient(lambda t: t.sum(), torch.ones(2, dtype=DT), h=0.0), "positive step h, got 0.0"),
        (lambda: numerical_gradient(lambda t: t * 2, torch.ones(2, dtype=DT)), r"f\(x\) to be a scalar when df is None, got shape \(2,\)"),
        (
            lambda: numerical_gradient(lambda t: t * 2, torch.ones(2, dtype=DT), df=torch.ones(3, dtype=DT)),
            r"df of shape \(2,\) \(the shape of f\(x\)\), got \(3,\)",
        ),
        (lambda: rel_error(torch.ones(2), torch.ones(3)), r"same shape, got \(2,\) and \(3,\)"),
    ],
)
def test_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
