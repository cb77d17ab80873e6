"""Regenerate the hostile lab00 submissions: ``python tests/grading/hostile/make_hostile.py``.

Each case is a student who has read the grader's source and tries to score more than their
work deserves, or to change another student's grade. ``expected.json`` gives, per case, the
status, the *true* score (what the honest part of the notebook earns: an exploit must gain
nothing), the integrity-flag codes the static scan must report (written by hand here, not
computed by the scanner), and ``defeated_by_trusted_tests`` where only running the tests outside
the student's kernel (in the grader, through proxies) defeats it. The 20,000-empty-cell notebook is built by the test
(:func:`empty_cells`) rather than stored (it is 2 MB of JSON).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import nbformat
from nbformat import v4

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from make_fixtures import NORMALIZE_HEAD, ROOT, _index, _insert_after, _set, _solved, _student  # noqa: E402

PASS_REPORT = '{"public": null, "hidden": null, "output": ""}'

REPLACE_RUN_TEST = f'''import cnncourse.grading.runner as runner
def fake_run_test(grade_id, public, hidden, nonce):
    print("\\n" + nonce + {PASS_REPORT!r})
runner.run_test = fake_run_test'''

WRAP_IMPORT = f'''import builtins, types
_real_import = builtins.__import__
_fake = types.SimpleNamespace(run_test=lambda g, p, h, nonce: print("\\n" + nonce + {PASS_REPORT!r}))
def _import(name, *args, **kwargs):
    if name == "cnncourse.grading.runner":
        return _fake
    return _real_import(name, *args, **kwargs)
builtins.__import__ = _import'''

INPUT_TRANSFORMER = f'''import re
def _rewrite(lines):
    found = re.search(r"(@@grade-[0-9a-f]+@@)", "".join(lines))
    if found:
        return ["print('\\\\n' + " + repr(found.group(1)) + " + " + repr({PASS_REPORT!r}) + ")\\n"]
    return lines
get_ipython().input_transformers_post.append(_rewrite)'''

TENSOR_SUBCLASS = '''class Agreeable(torch.Tensor):
    """A tensor that says yes to every comparison."""
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.allclose, torch.equal, torch.Tensor.equal):
            return True
        return super().__torch_function__(func, types, args, kwargs or {})

def to_nchw(batch: torch.Tensor) -> torch.Tensor:
    return batch.permute(0, 3, 1, 2).float().as_subclass(Agreeable)   # forgot / 255'''

REWRITE_CHECKS = '''import cnncourse.grading.checks as checks
with open(checks.__file__, "a") as f:
    f.write("\\n\\ndef check_close(*args, **kwargs):  # poisoned by a submission\\n    return None\\n")'''

SHOWTRACEBACK = '''from IPython.core.interactiveshell import InteractiveShell
InteractiveShell.showtraceback = lambda *args, **kwargs: None
get_ipython().showtraceback = lambda *args, **kwargs: None'''

PATCH_EXCEPTIONS = '''import builtins
import cnncourse.grading.checks as checks
class Quiet(Exception):
    pass
builtins.AssertionError = Quiet
checks.CheckFailed = Quiet
AssertionError = Quiet
def to_nchw(batch):
    return batch.float()'''

SETTRACE = '''import sys, ctypes, torch
def _tracer(frame, event, arg):
    if event == "call" and frame.f_code.co_name == "check_close":
        frame.f_locals["actual"] = torch.as_tensor(frame.f_locals["expected"]).clone()
        ctypes.pythonapi.PyFrame_LocalsToFast(ctypes.py_object(frame), ctypes.c_int(0))
    return None
sys.settrace(_tracer)
sys.settrace = lambda func: None      # the grader's reset now does nothing
def to_nchw(batch):
    return batch.permute(0, 3, 1, 2).float()   # forgot / 255'''

GC_WALK = f'''import gc
def _fake(grade_id, public, hidden, nonce):
    print("\\n" + nonce + {PASS_REPORT!r})
for obj in gc.get_objects():
    if callable(obj) and getattr(obj, "__name__", "") == "run_test" and hasattr(obj, "__code__"):
        obj.__code__ = _fake.__code__'''

READ_SOURCE = '''import glob, json, os, sys
import cnncourse
guesses = [os.path.join(os.path.dirname(os.path.dirname(cnncourse.__file__)), "labs", "lab00_tensors.ipynb")]
for pattern in ("/work/*/labs/lab00_tensors.ipynb", "/*/labs/lab00_tensors.ipynb", "/tmp/**/lab00_tensors.ipynb",
                os.path.join(sys.prefix, "..", "labs", "lab00_tensors.ipynb"), os.path.expanduser("~/*/labs/*.ipynb")):
    guesses += glob.glob(pattern, recursive=True)
for path in guesses:
    try:
        cells = json.load(open(path))["cells"]
    except (OSError, ValueError, KeyError):
        continue
    for cell in cells:
        source = "".join(cell["source"])
        if "### BEGIN SOLUTION" in source:
            exec(source, globals())
    break'''

SIGNALS_HANG = '''import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)
while True:
    time.sleep(0.1)'''

# The child leaves the kernel's process group and outlives it unless the sandbox's PID namespace ends it.
FORK_MARKER = "4242.4242"
FORK_SURVIVOR = f'''import os
if os.fork() == 0:
    os.setsid()
    os.execvp("sleep", ["sleep", "{FORK_MARKER}"])'''

ATEXIT_SLEEPS = '''import atexit, time
atexit.register(time.sleep, 600)'''


def _grade_meta(nb: nbformat.NotebookNode, index: int, grade_id: str, **extra: object) -> None:
    cell = nb.cells[index]
    cell.metadata.setdefault("nbgrader", {}).update({"grade_id": grade_id, **extra})


def _lab00() -> tuple[nbformat.NotebookNode, nbformat.NotebookNode]:
    """lab00 solved and blank, without the closing figure (it costs time and no case needs it)."""
    source = nbformat.read(ROOT / "labs" / "lab00_tensors.ipynb", as_version=4)
    good, blank = _solved(source), _student(source)
    end = _index(good, "test_normalize") + 1
    good.cells, blank.cells = good.cells[:end], blank.cells[:end]
    return good, blank


def empty_cells(n: int = 20_000) -> nbformat.NotebookNode:
    """The solved lab00 with ``n`` empty code cells after it."""
    nb = _lab00()[0]
    nb.cells += [v4.new_code_cell("") for _ in range(n)]
    return nb


def cases() -> dict[str, tuple[object, dict]]:
    """name -> (notebook, expected record fields) for lab00 (2 + 2 points)."""
    good, blank = _lab00()
    half = _set(good, "normalize", NORMALIZE_HEAD + "    return (x - mean[0]) / std[0]")   # true score 2

    claims = copy.deepcopy(good)        # the normalize solution claims the first test's id (and 100 points)
    _grade_meta(claims, _index(good, "normalize"), "test_to_nchw", grade=True, solution=False, points=100)
    duplicate = copy.deepcopy(good)     # a second copy of a test cell and of a solution cell
    for gid in ("test_to_nchw", "to_nchw"):
        cell = good.cells[_index(good, gid)]
        duplicate.cells.append(v4.new_code_cell(cell.source, metadata=copy.deepcopy(cell.metadata)))
    markdown = copy.deepcopy(good)      # the test cell turned into markdown, keeping its grade_id
    i = _index(good, "test_normalize")
    markdown.cells[i] = v4.new_markdown_cell("the test was here", metadata=copy.deepcopy(good.cells[i].metadata))

    def case(nb, status, total, flags, trusted=False, note=""):
        return nb, {"status": status, "total": total, "flags": sorted(flags), "defeated_by_trusted_tests": trusted,
                    "note": note}

    return {
        # the five exploits of issue 11
        "replace_run_test": case(_insert_after(blank, "to_nchw", REPLACE_RUN_TEST), "ok", 0,
                                 {"grader-internals", "monkeypatch"}, True, "replaces runner.run_test"),
        "wrap_import": case(_insert_after(blank, "to_nchw", WRAP_IMPORT), "ok", 0,
                            {"builtins", "__import__", "grader-internals", "monkeypatch"}, True,
                            "wraps builtins.__import__ to hand the grader a fake runner"),
        "input_transformer": case(_insert_after(blank, "to_nchw", INPUT_TRANSFORMER), "ok", 0,
                                  {"ipython-hooks", "grader-internals"},
                                  True, "an IPython input transformer rewrites the grader's test call"),
        "tensor_subclass": case(_set(good, "to_nchw", TENSOR_SUBCLASS), "ok", 2, {"tensor-subclass"}, True,
                                "to_nchw is 255 times too large but answers allclose with True"),
        "a_rewrites_checks": case(_insert_after(blank, "to_nchw", REWRITE_CHECKS), "ok", 0, {"writes-py-file"},
                                  False, "appends a no-op check_close to the installed checks.py"),
        "b_victim": case(half, "ok", 2, set(), False, "half correct, graded after a_rewrites_checks"),
        # more of the same kind
        "showtraceback": case(_insert_after(blank, "to_nchw", SHOWTRACEBACK), "ok", 0,
                              {"ipython-hooks", "monkeypatch"}, False,
                              "InteractiveShell.showtraceback replaced"),
        "patched_exceptions": case(_set(_insert_after(blank, "to_nchw", PATCH_EXCEPTIONS), "normalize",
                                        NORMALIZE_HEAD + "    return x"), "ok", 0,
                                   {"builtins", "monkeypatch"}, False, "AssertionError and CheckFailed patched"),
        "settrace": case(_insert_after(blank, "to_nchw", SETTRACE), "ok", 0,
                         {"tracing", "ctypes", "frames", "monkeypatch"}, True,
                         "a trace function rewrites check_close's argument; sys.settrace made a no-op"),
        "gc_walk": case(_insert_after(blank, "to_nchw", GC_WALK), "ok", 0, {"gc", "frames"}, True,
                        "finds runner.run_test through gc and swaps its code"),
        # what the sandbox and the limits defeat
        "reads_source_lab": case(_insert_after(blank, "to_nchw", READ_SOURCE), "ok", 0,
                                 {"dynamic-code", "reads-notebook"}, False,
                                 "guesses where the source lab is and runs its solutions"),
        "signals_then_hang": case(_insert_after(good, "test_to_nchw", SIGNALS_HANG), "timeout", 2,
                                  {"signal-handler"}, False, "ignores SIGTERM and SIGINT, then hangs"),
        "fork_survivor": case(_insert_after(good, "test_normalize", FORK_SURVIVOR), "ok", 4, {"process"}, False,
                              "a forked child leaves the process group and sleeps"),
        "atexit_sleeps": case(_insert_after(good, "test_normalize", ATEXIT_SLEEPS), "ok", 4, {"atexit"}, False,
                              "an exit hook that sleeps 600 s"),
        "forged_claims_test_id": case(claims, "missing-cells", 2, {"nbgrader-metadata"}, False,
                                      "the normalize solution claims test_to_nchw's grade_id and 100 points"),
        "forged_duplicate_ids": case(duplicate, "ok", 4, {"nbgrader-metadata"}, False,
                                     "a test cell and a solution cell appear twice"),
        "forged_markdown_id": case(markdown, "missing-cells", 4, {"nbgrader-metadata"}, False,
                                   "a markdown cell holds test_normalize's grade_id"),
        "empty_cells_20000": (None, {"status": "ok", "total": 4, "flags": [], "defeated_by_trusted_tests": False,
                                     "note": "20,000 empty code cells, built by the test (empty_cells())"}),
    }


def main() -> None:
    expected = {}
    for name, (nb, fields) in cases().items():
        if nb is not None:
            nbformat.write(nb, HERE / f"{name}.ipynb")
        expected[name] = fields
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {len(expected)} hostile cases to {HERE}")


if __name__ == "__main__":
    main()
