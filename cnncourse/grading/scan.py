"""Integrity flags: a static scan of a submission's code for constructs that have no place in these labs.

The scan parses each code cell with :mod:`ast` and never runs it. A flag names a construct
(``tracing``, ``tensor-subclass``...) and where it is; it tells the instructor which notebook
to read and never changes a score. IPython syntax (``%magic``, ``!shell``) is first turned into
Python by IPython's own ``TransformerManager``; a cell that still does not parse (a student's
syntax error) is scanned line by line, so a broken cell is scanned as far as it can be.

Each flag is a string ``"<code> (cell <i>, line <n>): <what>"``; :data:`CODES` lists the codes.

Reference: Python's ``ast`` module, https://docs.python.org/3/library/ast.html
"""

from __future__ import annotations

import ast
import builtins
from typing import Any, Iterable, Iterator

CODES = {
    "grader-internals": "refers to the grader (cnncourse.grading other than its checks, run_test, its nonce)",
    "builtins": "reaches or rebinds Python's builtins",
    "__import__": "uses __import__",
    "sys.modules": "reads or changes sys.modules",
    "ipython-hooks": "changes IPython's input transformers, traceback display or events",
    "gc": "walks the garbage collector's objects",
    "ctypes": "uses ctypes",
    "frames": "inspects stack frames",
    "tracing": "installs a trace, profile, monitoring or audit hook",
    "tensor-subclass": "defines a Tensor subclass or __torch_function__",
    "dynamic-code": "runs code from strings (exec, eval, compile)",
    "writes-py-file": "writes to a Python source file",
    "monkeypatch": "replaces an attribute of a library module",
    "signal-handler": "installs a signal handler or timer",
    "process": "forks, kills or starts processes",
    "atexit": "registers an exit hook",
    "reads-notebook": "names a notebook file",
    "shell": "runs shell commands (! or %%bash)",
    "nbgrader-metadata": "nbgrader metadata that does not match the lab",
}

_MODULES = {
    "builtins": "builtins",
    "gc": "gc",
    "ctypes": "ctypes",
    "atexit": "atexit",
    "signal": "signal-handler",
    "subprocess": "process",
    "multiprocessing": "process",
    "pty": "process",
    "_thread": "process",
    "importlib": "__import__",
    "sys.monitoring": "tracing",
}
_ATTRS = {  # (module, attribute) -> code, for module attributes used after `import module`
    ("sys", "modules"): "sys.modules",
    ("sys", "settrace"): "tracing",
    ("sys", "setprofile"): "tracing",
    ("sys", "addaudithook"): "tracing",
    ("sys", "monitoring"): "tracing",
    ("threading", "settrace"): "tracing",
    ("threading", "setprofile"): "tracing",
    ("sys", "_getframe"): "frames",
    ("inspect", "currentframe"): "frames",
    ("inspect", "stack"): "frames",
    ("inspect", "trace"): "frames",
    ("inspect", "getouterframes"): "frames",
    ("inspect", "getinnerframes"): "frames",
    ("os", "fork"): "process",
    ("os", "forkpty"): "process",
    ("os", "kill"): "process",
    ("os", "killpg"): "process",
    ("os", "setsid"): "process",
    ("os", "system"): "process",
    ("os", "popen"): "process",
    ("os", "execv"): "process",
    ("os", "execvp"): "process",
    ("os", "spawnv"): "process",
    ("os", "posix_spawn"): "process",
    ("os", "_exit"): "process",
    ("os", "register_at_fork"): "atexit",
}
_ANY_ATTRS = {  # attribute names suspicious on any object
    "input_transformers_cleanup": "ipython-hooks",
    "input_transformers_post": "ipython-hooks",
    "input_transformer_manager": "ipython-hooks",
    "ast_transformers": "ipython-hooks",
    "showtraceback": "ipython-hooks",
    "_showtraceback": "ipython-hooks",
    "showsyntaxerror": "ipython-hooks",
    "set_custom_exc": "ipython-hooks",
    "custom_exceptions": "ipython-hooks",
    "register_magic_function": "ipython-hooks",
    "f_back": "frames",
    "f_globals": "frames",
    "f_locals": "frames",
    "f_trace": "frames",
    "tb_frame": "frames",
    "gi_frame": "frames",
    "cr_frame": "frames",
    "__torch_function__": "tensor-subclass",
    "__torch_dispatch__": "tensor-subclass",
    "as_subclass": "tensor-subclass",
    "_make_subclass": "tensor-subclass",
    "__builtins__": "builtins",
    "__import__": "__import__",
    "__globals__": "frames",
    "__code__": "frames",
    "__subclasses__": "gc",
}
_NAMES = {
    "__import__": "__import__",
    "__builtins__": "builtins",
    "get_referrers": "gc",
    "get_objects": "gc",
    "InteractiveShell": "ipython-hooks",
    "CheckFailed": "grader-internals",
    "DelegationError": "grader-internals",
    "run_test": "grader-internals",
    "__torch_function__": "tensor-subclass",
    "settrace": "tracing",
    "setprofile": "tracing",
    "currentframe": "frames",
    "_getframe": "frames",
    "fork": "process",
    "setitimer": "signal-handler",
}
_DYNAMIC = {"exec", "eval", "compile", "execfile"}
# Builtins whose rebinding defeats checks; shadowing `max` or `input` is common and harmless.
_GUARDED_BUILTINS = {
    n
    for n in dir(builtins)
    if isinstance(getattr(builtins, n), type) and issubclass(getattr(builtins, n), BaseException)
} | {"isinstance", "issubclass", "print", "getattr", "setattr", "hasattr", "super", "open", "__import__"}
_LIBRARIES = {
    "torch",
    "numpy",
    "np",
    "F",
    "nn",
    "math",
    "cnncourse",
    "checks",
    "builtins",
    "sys",
    "IPython",
    "nbclient",
    "jupyter_client",
    "ipykernel",
    "testing",
}
_WRITERS = {
    "write_text",
    "write_bytes",
    "copy",
    "copyfile",
    "copy2",
    "move",
    "rename",
    "replace",
    "symlink",
    "link",
    "unlink",
    "remove",
    "truncate",
}
_SHELL = ("system", "getoutput", "run_cell_magic")


def _grader(name: str) -> bool:
    """Whether a dotted name is the grader's, other than the public check helpers every lab imports."""
    return name.startswith("cnncourse.grading") and not (
        name == "cnncourse.grading.checks" or name.startswith("cnncourse.grading.checks.")
    )


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` for a chain of attributes on a name; ``""`` for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    if isinstance(node, ast.Call):  # get_ipython().input_transformers_post
        inner = _dotted(node.func)
        return ".".join([inner + "()", *reversed(parts)]) if inner else ""
    return ""


def _findings(tree: ast.AST) -> Iterator[tuple[str, int, str]]:
    """(code, line, what) for each suspicious construct in ``tree``."""
    aliases: dict[str, str] = {}  # local name -> module, from imports
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[(a.asname or a.name).split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            )
            for name in names:
                if _grader(name):
                    yield "grader-internals", line, f"imports {name}"
                for module, code in _MODULES.items():
                    if name == module or name.startswith(module + "."):
                        yield code, line, f"imports {name}"
                if name.startswith(
                    (
                        "sys.settrace",
                        "sys.setprofile",
                        "sys.modules",
                        "inspect.currentframe",
                        "inspect.stack",
                        "os.fork",
                        "signal.signal",
                        "os.kill",
                        "os.system",
                    )
                ):
                    head, _, tail = name.partition(".")
                    yield _ATTRS.get((head, tail), "process"), line, f"imports {name}"
        elif isinstance(node, ast.Attribute):
            dotted = _dotted(node)
            head = dotted.split(".")[0]
            full = ".".join([aliases.get(head, head), *dotted.split(".")[1:]]) if dotted else ""
            if _grader(full):
                yield "grader-internals", line, full
            parts = full.split(".")
            for i in range(len(parts) - 1):
                found = _ATTRS.get((parts[i], parts[i + 1]))
                if found:
                    yield found, line, full
            if node.attr in _ANY_ATTRS:
                yield _ANY_ATTRS[node.attr], line, f".{node.attr}"
            if node.attr == "events" and dotted.startswith("get_ipython()"):
                yield "ipython-hooks", line, dotted
            if node.attr in _SHELL and dotted.startswith("get_ipython()"):
                yield "shell", line, dotted
        elif isinstance(node, ast.Name):
            if node.id in _NAMES:
                yield _NAMES[node.id], line, node.id
            target = aliases.get(node.id, "")
            if _grader(target):
                yield "grader-internals", line, target
            if isinstance(node.ctx, ast.Store) and node.id in _GUARDED_BUILTINS:
                yield "builtins", line, f"rebinds the builtin {node.id}"
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in _GUARDED_BUILTINS:
            yield "builtins", line, f"rebinds the builtin {node.name}"
        elif isinstance(node, ast.ClassDef):
            for base in node.bases:
                dotted = _dotted(base)
                if dotted.split(".")[-1] in ("Tensor", "TensorBase"):
                    yield "tensor-subclass", line, f"class {node.name}({dotted})"
                if dotted.split(".")[-1] in ("CheckFailed", "AssertionError", "DelegationError"):
                    yield "grader-internals", line, f"class {node.name}({dotted})"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if "cnncourse.grading" in text or "cnncourse/grading" in text or "@@grade-" in text:
                yield "grader-internals", line, repr(text[:60])
            if ".ipynb" in text:
                yield "reads-notebook", line, repr(text[:60])
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in _DYNAMIC:
                yield "dynamic-code", line, f"{func.id}(...)"
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name == "setattr" and node.args and _dotted(node.args[0]).split(".")[0] in _LIBRARIES | set(aliases):
                yield "monkeypatch", line, f"setattr({_dotted(node.args[0])}, ...)"
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for t in targets:
                for sub in t.elts if isinstance(t, (ast.Tuple, ast.List)) else [t]:
                    if isinstance(sub, ast.Attribute):
                        dotted = _dotted(sub)
                        root = dotted.split(".")[0]
                        if dotted.startswith("torch.backends."):  # cudnn.deterministic and friends: settings
                            continue
                        if root in _LIBRARIES or aliases.get(root, "").split(".")[0] in _LIBRARIES:
                            yield "monkeypatch", line, _dotted(sub)
    yield from _file_writes(tree)


def _file_writes(tree: ast.AST) -> Iterator[tuple[str, int, str]]:
    """A write to a file in a cell that also names a ``.py`` file or a module's ``__file__``."""
    names_source = any(
        (
            isinstance(n, ast.Constant)
            and isinstance(n.value, str)
            and n.value.rstrip().endswith((".py", ".pyc", ".pth"))
        )
        or (isinstance(n, ast.Attribute) and n.attr in ("__file__", "__path__", "__cached__"))
        or (isinstance(n, ast.Name) and n.id == "__file__")
        for n in ast.walk(tree)
    )
    if not names_source:
        return
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name == "open":
            modes = [a for a in node.args[1:2]] + [k.value for k in node.keywords if k.arg == "mode"]
            if any(
                isinstance(m, ast.Constant) and isinstance(m.value, str) and set(m.value) & set("wax+") for m in modes
            ) or any(not isinstance(m, ast.Constant) for m in modes):
                yield "writes-py-file", node.lineno, "open(..., write mode) with a .py path in the cell"
        elif name in _WRITERS:
            yield "writes-py-file", node.lineno, f"{name}(...) with a .py path in the cell"


def _parse(source: str) -> Iterator[tuple[ast.AST, int]]:
    """ASTs of a cell's code with the line offset of each; IPython syntax is transformed first."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        python = TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001  (IPython refuses some broken input; fall back to raw lines)
        python = source
    try:
        yield ast.parse(python), 0
        return
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        pass
    for offset, line in enumerate(python.splitlines()):  # a cell with a syntax error: line by line
        try:
            yield ast.parse(line.strip()), offset
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue


def scan_source(source: str) -> list[tuple[str, int, str]]:
    """Flags of one cell's source: ``(code, line, what)``, one per code and line, sorted."""
    found: dict[tuple[str, int], str] = {}
    for tree, offset in _parse(source):
        for code, line, what in _findings(tree):
            found.setdefault((code, line + offset), what)  # one flag per construct and line
    return sorted((code, line, what) for (code, line), what in found.items())


def _metadata_flags(cells: list[Any], test_ids: set[str], known_ids: set[str] | None) -> Iterator[str]:
    seen: dict[str, int] = {}
    for index, cell in enumerate(cells):
        meta = cell.get("metadata", {}).get("nbgrader", {}) if isinstance(cell.get("metadata"), dict) else {}
        gid = meta.get("grade_id") if isinstance(meta, dict) else None
        if not gid:
            continue
        where = f"nbgrader-metadata (cell {index}): "
        if cell.get("cell_type") != "code" and gid in (known_ids or test_ids):
            yield where + f"a {cell.get('cell_type')} cell claims the grade_id {gid!r}"
        if gid in seen:
            yield where + f"grade_id {gid!r} repeats cell {seen[gid]}"
        seen.setdefault(gid, index)
        if known_ids is not None and gid not in known_ids and cell.get("cell_type") == "code":
            yield where + f"grade_id {gid!r} is not in the lab"
        if gid in test_ids and (meta.get("solution") or not meta.get("grade")):
            yield where + f"a solution cell claims the test's grade_id {gid!r}"


def scan_notebook(nb: Any, test_ids: Iterable[str] = (), known_ids: Iterable[str] | None = None) -> list[str]:
    """Integrity flags for a notebook: ``"<code> (cell <i>, line <n>): <what>"``, in cell order.

    Args:
        nb: a version-4 notebook (``nbformat.NotebookNode`` or a dict of the same shape).
        test_ids: ``grade_id``s of the lab's test cells; the grader replaces those cells with its own, so
            the student's copy (which imports the check helpers) is not scanned.
        known_ids: every ``grade_id`` of the source lab, to flag cells that claim an unknown one.
    """
    from cnncourse.grading.release import install_cell_source, is_selfcheck_cell

    test_ids = set(test_ids)
    course_cell = install_cell_source()  # the released labs' own install cell, kept verbatim
    cells = list(nb.get("cells", []))
    flags = list(_metadata_flags(cells, test_ids, None if known_ids is None else set(known_ids)))
    for index, cell in enumerate(cells):
        if cell.get("cell_type") != "code" or not str(cell.get("source", "")).strip():
            continue
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if isinstance(meta, dict) and meta.get("grade_id") in test_ids:
            continue
        if str(cell["source"]).strip() == course_cell.strip() or is_selfcheck_cell(cell):
            continue
        for code, line, what in scan_source(str(cell["source"])):
            flags.append(f"{code} (cell {index}, line {line}): {what}")
    return flags


def flag_codes(flags: Iterable[str]) -> set[str]:
    """The codes of a list of flags, e.g. ``{"tracing", "gc"}``."""
    return {f.split(" (", 1)[0] for f in flags}
