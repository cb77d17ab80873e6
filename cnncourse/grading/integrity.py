"""Integrity helpers for hidden tests: catch a submission that delegates to a reference.

A lab asks students to *write* an operation. A hidden test wraps its call in
:func:`forbid`, which replaces the reference implementations with a function that
fails loudly, so a submission that merely calls ``torch.nn.functional.conv2d`` (or the
course's own ``cnncourse.functional.conv2d``) fails that question.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from typing import Any, Iterator

# Namespaces where the same function object often lives under other names:
# ``torch.nn.functional.conv2d is torch.conv2d``, and ``from torch.nn.functional import
# conv2d`` in a notebook binds it in ``__main__``.
_ALIAS_MODULES = ("__main__", "torch", "torch.nn.functional")
# Set by the grader while a test runs in its own process: the names are then forbidden in the
# student's kernel during each call the test makes into it, instead of in this process.
_remote_forbidden: list[str] | None = None


class DelegationError(AssertionError):
    """Raised when a forbidden reference implementation is called inside :func:`forbid`."""


def _resolve(dotted: str) -> tuple[Any, str]:
    """Split ``"pkg.mod.attr"`` into (the object holding ``attr``, ``"attr"``), importing as needed."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:-1]:
            owner = getattr(owner, name)
        if not hasattr(owner, parts[-1]):
            raise ValueError(f"cannot forbid {dotted!r}: {owner!r} has no attribute {parts[-1]!r}")
        return owner, parts[-1]
    raise ValueError(f"cannot forbid {dotted!r}: no importable module in that name")


@contextlib.contextmanager
def forbid(*dotted_names: str) -> Iterator[None]:
    """Make each named function raise :class:`DelegationError` while the block runs.

    Example::

        with forbid("torch.nn.functional.conv2d", "cnncourse.functional.conv2d"):
            out = student_conv2d(x, w)   # fails if it calls either of them

    Every other binding of the same function object in ``__main__`` (the notebook's
    namespace), ``torch`` and ``torch.nn.functional`` is replaced too, so an alias such as
    ``torch.conv2d`` or a ``from torch.nn.functional import conv2d`` made earlier is caught.
    The originals are restored on exit, even when the block raises.

    Under the autograder the test runs in the grader's process and the student's code in
    their kernel: the names are then sent with every call into the kernel and blocked
    there for its duration. That is best effort: code in the kernel can undo it.

    Reference: the standard library's ``unittest.mock.patch``, reduced to one purpose.
    """
    if _remote_forbidden is not None:
        mark = len(_remote_forbidden)
        _remote_forbidden.extend(dotted_names)
        try:
            yield
        finally:
            del _remote_forbidden[mark:]
    else:
        with forbid_here(*dotted_names):
            yield


@contextlib.contextmanager
def forbid_here(*dotted_names: str) -> Iterator[None]:
    """:func:`forbid` in this process, always (the grading agent uses it in the student's kernel)."""
    # Resolve everything before patching anything: names may alias one another
    # (torch.conv2d is torch.nn.functional.conv2d), and the first name given is the one reported.
    originals: dict[int, tuple[str, Any]] = {}
    targets: dict[tuple[int, str], tuple[Any, str, int]] = {}
    for dotted in dotted_names:
        owner, attr = _resolve(dotted)
        original = getattr(owner, attr)
        originals.setdefault(id(original), (dotted, original))
        targets[(id(owner), attr)] = (owner, attr, id(original))
    for name in _ALIAS_MODULES:
        module = sys.modules.get(name)
        for alias, value in list(vars(module).items()) if module is not None else ():
            if id(value) in originals and originals[id(value)][1] is value:
                targets.setdefault((id(module), alias), (module, alias, id(value)))
    saved = []
    try:
        for owner, attr, key in targets.values():

            def refuse(*args: Any, _name: str = originals[key][0], **kwargs: Any) -> Any:
                raise DelegationError(
                    f"{_name} was called, but this question asks you to implement the operation yourself"
                )

            saved.append((owner, attr, getattr(owner, attr)))
            setattr(owner, attr, refuse)
        yield
    finally:
        for owner, attr, original in reversed(saved):
            setattr(owner, attr, original)
