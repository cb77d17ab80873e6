"""Public check helpers for lab test cells: a failure says what was expected and what was got."""

from __future__ import annotations

import hashlib
import os
from typing import Any, Callable, Sequence

import torch

# The per-course secret: set by the grader for each test; ``None`` means "read CNNCOURSE_SECRET".
SECRET: str | None = None
# Set by the grader while a test runs: builds an object in the student's kernel (see in_student_kernel).
_REMOTE_BUILD: Callable[..., Any] | None = None
# How many times course_seed has run (the mutant suite: a test that never asks has the same inputs under every secret).
_SECRET_USES = 0


class CheckFailed(AssertionError):
    """A lab check failed; the message is written for the student."""


def check_shape(actual: Any, expected: Sequence[int], name: str = "result") -> None:
    """Fail unless ``actual`` is a tensor of shape ``expected``.

    Reference: the ``(N, C, H, W)`` convention of ``torch.nn.Conv2d``.
    """
    if not isinstance(actual, torch.Tensor):
        raise CheckFailed(
            f"{name}: expected a torch.Tensor of shape {tuple(expected)}, got {actual.__class__.__name__}"
        )
    if tuple(actual.shape) != tuple(expected):
        raise CheckFailed(f"{name}: expected shape {tuple(expected)}, got {tuple(actual.shape)}")


def check_dtype(actual: torch.Tensor, expected: torch.dtype, name: str = "result") -> None:
    """Fail unless ``actual.dtype`` is ``expected``.

    Reference: https://pytorch.org/docs/stable/tensor_attributes.html
    """
    if actual.dtype != expected:
        raise CheckFailed(f"{name}: expected dtype {expected}, got {actual.dtype}")


def check_close(actual: Any, expected: Any, name: str = "result", rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Fail unless ``actual`` matches ``expected`` in shape and value within tolerance.

    Reference: ``torch.testing.assert_close``, whose message this extends with ``name``.
    """
    expected = torch.as_tensor(expected)
    if not isinstance(actual, torch.Tensor):
        raise CheckFailed(f"{name}: expected a torch.Tensor, got {actual.__class__.__name__}")
    check_shape(actual, expected.shape, name)
    actual_c, expected_c = actual.detach().to(torch.float64), expected.detach().to(torch.float64)
    if not torch.allclose(actual_c, expected_c, rtol=rtol, atol=atol):
        diff = (actual_c - expected_c).abs()
        worst = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape)) if diff.dim() else ()
        raise CheckFailed(
            f"{name}: values differ; largest difference {diff.max().item():.3g} at index {worst}: "
            f"expected {expected_c[worst].item():.6g}, got {actual_c[worst].item():.6g}"
        )


def check_equal(actual: Any, expected: Any, name: str = "result") -> None:
    """Fail unless ``actual == expected`` (numbers, strings, tuples).

    Reference: Python's ``==``.
    """
    if actual != expected:
        raise CheckFailed(f"{name}: expected {expected!r}, got {actual!r}")


def course_seed(seed: int) -> int:
    """The seed for a hidden test's random inputs: ``seed`` itself, or mixed with the course's secret.

    An instructor grades with ``--secret`` (or ``CNNCOURSE_SECRET``), so the inputs of the
    hidden tests differ from those in the public repository; without a secret the test
    sees exactly ``seed``, as in the source lab.

    Reference: keyed hashing with SHA-256, https://docs.python.org/3/library/hashlib.html
    """
    global _SECRET_USES
    _SECRET_USES += 1
    secret = os.environ.get("CNNCOURSE_SECRET", "") if SECRET is None else SECRET
    if not secret:
        return int(seed)
    digest = hashlib.sha256(f"{secret}\0{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def in_student_kernel(factory: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``factory(*args, **kwargs)``, called where the student's code runs.

    In a notebook that is right here. Under the autograder the test runs in the grader's
    process and the student's code in their kernel, so a test that builds an object for a
    student's function to change (freeze its layers, swap its head), or that seeds the
    random state the student's code draws from, does it with this; an object it returns
    then lives in the student's kernel and the test reads it through a proxy. ``factory``
    must be a function or class of ``cnncourse`` or ``torch``.

    Example::

        m = in_student_kernel(lenet5, "textbook", num_classes=5)
        freeze(m, "features")
    """
    if _REMOTE_BUILD is not None:
        return _REMOTE_BUILD(factory, *args, **kwargs)
    return factory(*args, **kwargs)


def call_unchanged(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, bool]:
    """``(fn(*args, **kwargs), True if fn left every tensor argument unchanged)``.

    For in-place rules: under the autograder a tensor the test passes reaches the student's
    function as a copy, so a change made in place is invisible to the test. A test therefore
    calls ``in_student_kernel(call_unchanged, student_fn, x, ...)``, which compares the
    arguments before and after the call where the function runs.
    """
    before = [a.clone() if isinstance(a, torch.Tensor) else None for a in args]
    out = fn(*args, **kwargs)
    unchanged = all(b is None or (a.shape == b.shape and torch.equal(a, b)) for a, b in zip(args, before))
    return out, unchanged
