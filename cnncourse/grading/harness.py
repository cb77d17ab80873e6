"""The trusted side of a test: the source lab's test code runs here, in the grader's process.

A test cell is executed in a fresh :class:`TestNamespace`. Names the test defines, the
lab's own library imports and the check helpers are ordinary local objects; any other
name is looked up in the student's kernel and arrives by value (plain data) or as a
:class:`~cnncourse.grading.rpc.Proxy`. So ``out = conv_forward_naive(x, w, b)`` calls
the student's function in their kernel and ``out`` is a plain tensor built here, and
``check_close(out, ...)`` is this process's ``check_close`` comparing it. The student's
kernel can send wrong data; it cannot change this code, the helpers or the result.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import gc
import hashlib
import io
import socket
import zlib
from typing import Any

import nbformat

from cnncourse.grading import checks, integrity
from cnncourse.grading.rpc import GRADER_ATTRS, Channel, PeerGone, PeerTimeout, ProtocolError, Proxy, apply_op

_FEEDBACK_CHARS = 600
# Names a test may use without importing them: always the grader's own modules.
_ALIASES = {"torch": "torch", "np": "numpy", "F": "torch.nn.functional", "nn": "torch.nn"}
# Packages whose classes a proxy may claim to be an instance of (for isinstance in tests).
_CLASS_ROOTS = ("torch.", "cnncourse.")


def lab_imports(nb: nbformat.NotebookNode) -> str:
    """The top-level import statements of the lab's own (non-solution, non-test) code cells.

    The grader runs them in each test's namespace, so a library name the lab imports for
    its tests (``count_parameters``, ``summary``) is the grader's, whatever the student rebinds.
    """
    lines = []
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.get("cell_type") != "code" or (isinstance(meta, dict) and (meta.get("solution") or meta.get("grade"))):
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        lines += [ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    return "\n".join(dict.fromkeys(lines))


_FROZEN = False


def warm_up(imports: str) -> None:
    """Run the lab's imports once in this process, so their one-off cost never counts against a test's time.

    The first call also freezes what the imports built (``gc.freeze``): torch's half a million objects then
    never take part in a garbage collection again, so the full collection after every test (see
    :func:`run_test`) costs well under a millisecond instead of about 0.2 s.
    """
    global _FROZEN
    with contextlib.redirect_stdout(_CappedText()), contextlib.redirect_stderr(_CappedText()):
        exec(compile(imports, "<lab imports>", "exec"), {"__name__": "__warm_up__"})
    if not _FROZEN:
        gc.collect()  # garbage that exists now would otherwise be frozen with the rest, forever
        gc.freeze()
        _FROZEN = True


def _local_class(type_name: str) -> Any:
    """The grader's own ``nn.Module`` subclass that a student's object claims to be, or ``None``."""
    import sys

    import torch

    module_name, _, qualname = type_name.rpartition(".")
    if not module_name.startswith(_CLASS_ROOTS) or module_name not in sys.modules or "<" in qualname:
        return None
    obj: Any = sys.modules[module_name]
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj if isinstance(obj, type) and issubclass(obj, torch.nn.Module) else None


class GraderChannel(Channel):
    """The grader's end: answers only calls into objects the test itself handed to the student's code."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock, trusted=True)
        self.class_lookup = _local_class

    def perform(self, op: str, target: Any, args: list, forbid: list) -> Any:
        import torch

        if type(target) is Proxy or not any(target is o for o in self.objects.values()):
            raise PermissionError("the grader answers requests only on objects a test passed to your code")
        if op == "call" and callable(target) and not isinstance(target, type):
            return apply_op(op, target, args)
        data = isinstance(target, (torch.nn.Module, torch.Tensor))
        if (
            op == "getattr"
            and args
            and type(args[0]) is str
            and (args[0] in GRADER_ATTRS or (data and not args[0].startswith("_")))
        ):
            return apply_op(op, target, args)
        if op in ("value", "len", "iter", "next", "repr", "str", "bool", "format") and not isinstance(target, type):
            if op == "value" and not isinstance(target, torch.Tensor):
                raise TypeError("only tensors can be fetched by value")
            return apply_op(op, target, args)
        if (
            op == "op"
            and data
            and args
            and args[0] in ("getitem", "neg", "abs", "add", "sub", "mul", "truediv", "lt", "le", "gt", "ge", "eq", "ne")
        ):
            return apply_op(op, target, args)
        if op == "getattr":  # an AttributeError, so hasattr() and dict() treat it as absent
            raise AttributeError(
                f"the grader does not give out attribute {str(args[0])[:50]!r} of {type(target).__name__}"
            )
        raise PermissionError(f"the grader does not answer {op!r} on {type(target).__name__}")


class TestNamespace(dict):
    """Globals of a test: a name the test did not define is fetched from the student's kernel."""

    def __init__(self, channel: GraderChannel) -> None:
        super().__init__()
        self.channel = channel
        self.fetched: dict[str, Any] = {}

    def __missing__(self, name: str) -> Any:
        if name.startswith("__") or name in vars(builtins):
            raise KeyError(name)
        try:
            value = self.channel.request("name", name)
        except NameError:
            raise KeyError(name) from None
        self[name] = self.fetched[name] = value
        return value


class _CappedText(io.TextIOBase):
    """A text sink that keeps the first ``cap`` characters and counts the rest."""

    def __init__(self, cap: int = 2000) -> None:
        self.cap, self.size = cap, 0
        self.parts: list[str] = []

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


def test_seed(grade_id: str, secret: str) -> int:
    """The seed of the grader's global RNG for one test: fixed per question, and per course when a secret is set."""
    if not secret:
        return zlib.crc32(grade_id.encode())
    return int.from_bytes(hashlib.sha256(f"{secret}\0{grade_id}".encode()).digest()[:8], "big") >> 1


def _is_plain(value: Any, depth: int = 0) -> bool:
    import torch

    if depth > 20:
        return False
    if value is None or type(value) in (
        bool,
        int,
        float,
        str,
        torch.Tensor,
        torch.dtype,
        torch.Size,
        torch.device,
        Proxy,
    ):
        return True
    if type(value) in (list, tuple):
        return all(_is_plain(v, depth + 1) for v in value)
    if type(value) is dict:
        return all(_is_plain(k, depth + 1) and _is_plain(v, depth + 1) for k, v in value.items())
    return False


def run_test(
    channel: GraderChannel,
    grade_id: str,
    public: str,
    hidden: str,
    imports: str,
    carry: dict[str, Any],
    secret: str = "",
) -> dict[str, Any]:
    """Run one source-lab test cell (public part, then hidden part) here, against the student's kernel.

    Returns:
        ``{"public", "hidden", "output"}``: each part ``None`` (passed), ``"not run"``, or
        ``{"type", "message"}`` of the exception raised; ``output`` is what the test printed.

    Raises:
        PeerTimeout, PeerGone: the student's kernel did not answer in time, or died.
    """
    import torch

    result: dict[str, Any] = {"public": None, "hidden": None if hidden.strip() else "not run", "output": ""}
    captured = _CappedText()
    checks.SECRET = secret

    def build(factory: Any, *args: Any, **kwargs: Any) -> Any:
        where = f"{getattr(factory, '__module__', '')}:{getattr(factory, '__qualname__', '')}"
        return channel.request("build", where, list(args), kwargs)

    checks._REMOTE_BUILD = build
    previous_forbidden = integrity._remote_forbidden
    integrity._remote_forbidden = channel.forbidden
    ns = TestNamespace(channel)
    try:
        ns.update(carry)
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            exec(compile(imports, f"<{grade_id}: lab imports>", "exec"), ns)
        for alias, module in _ALIASES.items():
            ns[alias] = __import__(module, fromlist=["_"])
        ns.update(
            {
                k: v
                for k, v in vars(checks).items()
                if not k.startswith("_") and getattr(v, "__module__", None) == checks.__name__
            }
        )
        ns.update(forbid=integrity.forbid, DelegationError=integrity.DelegationError)
        ns["__builtins__"] = dict(vars(builtins))
        ns["__name__"] = "__main__"
        before = dict(ns)
        torch.manual_seed(test_seed(grade_id, secret))
        for part, source in (("public", public), ("hidden", hidden)):
            if not source.strip():
                continue
            try:
                with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
                    exec(compile(source, f"<{grade_id}: {part} tests>", "exec"), ns)
            except (PeerTimeout, PeerGone):
                raise
            except ProtocolError as exc:
                result[part] = {
                    "type": "ProtocolError",
                    "message": f"the submission sent data the grader cannot read: {exc}",
                }
            except BaseException as exc:  # noqa: BLE001  (a test's failure, whatever its type)
                if isinstance(exc, KeyboardInterrupt):
                    raise
                result[part] = _describe(exc)
            if result[part] is not None:
                if part == "public" and hidden.strip():
                    result["hidden"] = "not run"
                break
        # Names a test cell defines stay visible to later tests and, where they are data, to later cells.
        skip = {"__builtins__", "__name__"}
        new = {
            k: v
            for k, v in ns.items()
            if k not in skip and not (k in before and before[k] is v) and not (k in ns.fetched and ns.fetched[k] is v)
        }
        for name, value in new.items():
            if _is_plain(value):
                try:
                    channel.request("setname", name, value)
                except (PeerTimeout, PeerGone):
                    raise
                except Exception:  # noqa: BLE001  (a name the kernel refuses stays local)
                    pass
            carry[name] = value
    finally:
        integrity._remote_forbidden = previous_forbidden
        checks.SECRET = None
        checks._REMOTE_BUILD = None
        # The handles this test gave the kernel (a helper function, a model) end with it: a later test, or the
        # kernel between tests, can no longer call them, and they no longer keep this test's objects alive.
        channel.objects.clear()
    result["output"] = captured.getvalue()
    # A test that defines a function makes a reference cycle (the function's globals are the test's namespace),
    # so the namespace and everything it holds (lab04's test builds AlexNet: 61 M parameters) outlive the test
    # until a full collection, which a process with torch loaded rarely runs on its own. With the handles above,
    # grading lab04's mutants grew this process by 1.4 GB a run until the machine ran out of memory. Collect now.
    # ``before`` still holds the names carried in from earlier tests, so it goes too.
    del ns, before, new
    gc.collect()
    return result
