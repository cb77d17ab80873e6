"""The kernel side of the autograder: runs inside each submission's Jupyter kernel.

:func:`setup` runs first, before any student code, and snapshots the objects a
submission could tamper with (builtins, the check helpers, ``torch``'s testing and
comparison functions, ``sys.stdout``). :func:`run_test` runs one graded test cell of the
*source* lab after the student's code: it restores those snapshots, imports the check
helpers afresh, and executes the test in a copy of the student's namespace with a clean
``__builtins__``. It reports one line, ``<nonce><json>``, on the original stdout; the
nonce is fresh for every test and known only to the grader process, so output that the
student's code printed earlier cannot pose as a result.

This contains casual tampering (redefined helpers, monkeypatched ``torch.testing``,
rebound builtins). It is not a sandbox: code in the same process can, with effort, reach
this module too. See the threat model in the README's "For instructors" section.
"""

from __future__ import annotations

import builtins
import importlib
import io
import json
import sys
from typing import Any

# Modules whose attributes are restored before every test (only those already imported at setup).
_GUARDED_MODULES = ("builtins", "torch", "torch.testing", "torch.nn", "torch.nn.functional", "torch.linalg",
                    "numpy", "numpy.testing", "math", "importlib", "cnncourse.grading", "cnncourse.functional")
# Helper modules that are imported afresh for every test.
_FRESH_MODULES = ("cnncourse.grading.checks", "cnncourse.grading.integrity")
# Names a test may rely on without importing them; rebound to the real module if the student shadowed them.
_ALIASES = {"torch": "torch", "np": "numpy", "F": "torch.nn.functional", "nn": "torch.nn"}
_FEEDBACK_CHARS = 600

_state: dict[str, Any] = {}


def setup(user_ns: dict[str, Any]) -> None:
    """Snapshot what a submission could tamper with; called by the grader before any student cell.

    Reference: ``importlib`` and the data model's module ``__dict__``, https://docs.python.org/3/reference/datamodel.html
    """
    import torch  # noqa: F401  (the labs need it; importing here makes it part of the snapshot)

    import cnncourse.grading.checks  # noqa: F401
    import cnncourse.grading.integrity  # noqa: F401

    modules = {name: sys.modules[name] for name in _GUARDED_MODULES if name in sys.modules}
    classes = [torch.Tensor, torch._C.TensorBase]
    _state.update(
        user_ns=user_ns,
        modules=modules,
        module_dicts={name: dict(vars(m)) for name, m in modules.items()},
        class_dicts=[(cls, dict(vars(cls))) for cls in classes],
        builtins=dict(vars(builtins)),
        stdout=sys.stdout,
        stderr=sys.stderr,
        meta_path=list(sys.meta_path),
        carry={},
    )


def _restore() -> None:
    """Put back every snapshotted attribute a submission may have replaced or deleted."""
    sys.settrace(None)
    sys.setprofile(None)
    sys.stdout, sys.stderr = _state["stdout"], _state["stderr"]
    sys.meta_path[:] = _state["meta_path"]
    for name, module in _state["modules"].items():
        sys.modules[name] = module
        current = vars(module)
        for key, value in _state["module_dicts"][name].items():
            if current.get(key, _MISSING) is not value:
                try:
                    setattr(module, key, value)
                except (AttributeError, TypeError):
                    pass
    for cls, saved in _state["class_dicts"]:
        current = vars(cls)
        for key, value in saved.items():
            if current.get(key, _MISSING) is not value:
                try:
                    setattr(cls, key, value)
                except (AttributeError, TypeError):
                    pass
        for key in [k for k in current if k not in saved]:
            try:
                delattr(cls, key)
            except (AttributeError, TypeError):
                pass


_MISSING = object()


def _fresh_helpers() -> dict[str, Any]:
    """Import the check helpers anew and return their public names (plus ``forbid``)."""
    names: dict[str, Any] = {}
    for name in _FRESH_MODULES:
        sys.modules.pop(name, None)
        module = importlib.import_module(name)
        names.update({k: v for k, v in vars(module).items() if not k.startswith("_")
                      and getattr(v, "__module__", None) == name})
    package = sys.modules["cnncourse.grading"]
    package.checks = sys.modules["cnncourse.grading.checks"]
    package.integrity = sys.modules["cnncourse.grading.integrity"]
    package.forbid, package.DelegationError = names["forbid"], names["DelegationError"]
    return names


class _CappedText(io.TextIOBase):
    """A text sink that keeps the first ``cap`` characters and counts the rest."""

    def __init__(self, cap: int = 2000) -> None:
        self.cap, self.parts, self.size = cap, [], 0

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        if self.size < self.cap:
            self.parts.append(s[: self.cap - self.size])
        self.size += len(s)
        return len(s)

    def getvalue(self) -> str:
        return "".join(self.parts)


def _describe(exc: BaseException) -> dict[str, str]:
    message = str(exc)
    if len(message) > _FEEDBACK_CHARS:
        message = message[:_FEEDBACK_CHARS] + " [...]"
    return {"type": type(exc).__name__, "message": message}


def _namespace(helpers: dict[str, Any]) -> dict[str, Any]:
    user_ns, clean = _state["user_ns"], _state["builtins"]
    ns = {k: v for k, v in user_ns.items() if not (k in clean and v is not clean[k])}
    ns.update(_state["carry"])
    for alias, module in _ALIASES.items():
        if alias in ns and module in sys.modules and ns[alias] is not sys.modules[module]:
            ns[alias] = sys.modules[module]
    ns.update(helpers)
    ns["__builtins__"] = dict(clean)
    ns["__name__"] = "__main__"
    return ns


def run_test(grade_id: str, public: str, hidden: str, nonce: str) -> None:
    """Run one source-lab test cell (public part, then hidden part) and report the outcome.

    The report is one line on the original stdout: ``nonce`` then JSON with keys
    ``public`` and ``hidden``, each ``None`` (passed), ``"not run"``, or
    ``{"type", "message"}`` of the exception raised.

    Reference: nbgrader's autograde step, https://nbgrader.readthedocs.io/en/stable/user_guide/autograding.html
    """
    _restore()
    result: dict[str, Any] = {"public": None, "hidden": None if hidden.strip() else "not run", "output": ""}
    captured = _CappedText()
    try:
        helpers = _fresh_helpers()
        ns = _namespace(helpers)
        before = dict(ns)
    except BaseException as exc:  # noqa: BLE001  (a grader failure must still produce a report)
        result["public"], result["hidden"] = _describe(exc), "not run"
        ns, before = {}, {}
    else:
        for part, source in (("public", public), ("hidden", hidden)):
            if not source.strip():
                continue
            sys.stdout = sys.stderr = captured
            try:
                exec(compile(source, f"<{grade_id}: {part} tests>", "exec"), ns)
            except BaseException as exc:  # noqa: BLE001  (SystemExit, KeyboardInterrupt from student code too)
                result[part] = _describe(exc)
                if part == "public" and hidden.strip():
                    result["hidden"] = "not run"
                break
            finally:
                sys.stdout, sys.stderr = _state["stdout"], _state["stderr"]
    # Names a test cell defines stay visible to later cells, as when the notebook runs top to bottom.
    skip = {"__builtins__", "__name__"}
    new = {k: v for k, v in ns.items() if k not in skip and before.get(k, _MISSING) is not v}
    _state["carry"].update(new)
    _state["user_ns"].update(new)
    result["output"] = captured.getvalue()
    _restore()
    stream = _state["stdout"]
    stream.write("\n" + nonce + json.dumps(result) + "\n")
    stream.flush()
