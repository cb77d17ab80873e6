"""Regenerate the autograder fixtures: ``python tests/grading/make_fixtures.py``.

Writes ``conv_lab.ipynb`` (a tiny synthetic source lab asking for ``my_conv2d``), one
submission per hostile case under ``lab00/`` and ``conv/``, built from the source labs'
student releases, and ``expected.json`` with each case's expected status and score.
The placeholder ``__GRADER_OUT__`` in ``lab00/writes_output.ipynb`` is replaced by the
test with the real output folder.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import nbformat
from nbformat import v4

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _meta(grade_id: str, *, grade: bool, solution: bool, points: int = 0) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": not solution, "schema_version": 3, "solution": solution}
    if grade:
        meta["points"] = points
    return {"nbgrader": meta}


CONV_SOLUTION = '''def my_conv2d(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Valid cross-correlation, stride 1: (N, C_in, H, W), (C_out, C_in, K_h, K_w) -> (N, C_out, H_out, W_out)."""
    ### BEGIN SOLUTION
    k_h, k_w = w.shape[-2:]
    patches = x.unfold(2, k_h, 1).unfold(3, k_w, 1)          # (N, C_in, H_out, W_out, K_h, K_w)
    return torch.einsum("nchwij,ocij->nohw", patches, w)
    ### END SOLUTION'''

CONV_TEST = '''g = torch.Generator().manual_seed(0)
x, w = torch.randn(2, 3, 7, 6, generator=g), torch.randn(4, 3, 3, 2, generator=g)
got = my_conv2d(x, w)
check_close(got, F.conv2d(x, w), "my_conv2d(x of (2, 3, 7, 6), w of (4, 3, 3, 2))", rtol=1e-4, atol=1e-5)
print("my_conv2d passes the public tests")
### BEGIN HIDDEN TESTS
from cnncourse.grading import forbid
x2, w2 = torch.randn(1, 2, 5, 5, generator=g), torch.randn(3, 2, 2, 2, generator=g)
expected = F.conv2d(x2, w2)
with forbid("torch.nn.functional.conv2d", "torch.conv2d", "torch.convolution"):
    got2 = my_conv2d(x2, w2)
check_close(got2, expected, "my_conv2d(a second input)", rtol=1e-4, atol=1e-5)
### END HIDDEN TESTS'''


def conv_lab() -> nbformat.NotebookNode:
    """A one-question source lab in nbgrader format: write ``my_conv2d`` without ``F.conv2d``."""
    return v4.new_notebook(cells=[
        v4.new_code_cell("import torch\nimport torch.nn.functional as F\nfrom cnncourse.grading.checks import check_close"),
        v4.new_markdown_cell("## Question 1: a 2-D convolution of your own (3 points)"),
        v4.new_code_cell(CONV_SOLUTION, metadata=_meta("my_conv2d", grade=False, solution=True)),
        v4.new_code_cell(CONV_TEST, metadata=_meta("test_my_conv2d", grade=True, solution=False, points=3)),
    ], metadata={"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}})


def _student(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    from cnncourse.grading.release import student_version

    return student_version(nb)


def _solved(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student release with every solution stub replaced by the source lab's solution."""
    out = _student(nb)
    # Matched by grade_id, not position: the release inserts an install cell after the title.
    sources = {src.metadata["nbgrader"]["grade_id"]: src for src in nb.cells
               if src.get("metadata", {}).get("nbgrader", {}).get("solution")}
    for cell in out.cells:
        src = sources.get(cell.get("metadata", {}).get("nbgrader", {}).get("grade_id"))
        if src is not None:
            cell.source = "\n".join(line for line in src.source.splitlines()
                                    if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION"))
    return out


def _index(nb: nbformat.NotebookNode, grade_id: str) -> int:
    return next(i for i, c in enumerate(nb.cells) if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id)


def _set(nb: nbformat.NotebookNode, grade_id: str, source: str) -> nbformat.NotebookNode:
    nb = copy.deepcopy(nb)
    nb.cells[_index(nb, grade_id)].source = source
    return nb


def _insert_after(nb: nbformat.NotebookNode, grade_id: str, source: str) -> nbformat.NotebookNode:
    nb = copy.deepcopy(nb)
    nb.cells.insert(_index(nb, grade_id) + 1, v4.new_code_cell(source))
    return nb


NORMALIZE_HEAD = 'def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:\n    """Per-channel."""\n'

TAMPER = '''import builtins, torch, torch.testing
import cnncourse.grading.checks as checks
def _never_fail(*args, **kwargs):
    return None
for name in ("check_close", "check_shape", "check_dtype", "check_equal"):
    setattr(checks, name, _never_fail)
    globals()[name] = _never_fail
torch.testing.assert_close = _never_fail
torch.allclose = lambda *args, **kwargs: True
torch.Tensor.__eq__ = lambda self, other: True
builtins.print = _never_fail
isinstance = lambda obj, cls: True
AssertionError = type("AssertionError", (Exception,), {})
def assert_close(*args, **kwargs):
    return None'''

WRITE_OUT = '''import os, json
out = "__GRADER_OUT__"
os.makedirs(os.path.join(out, "feedback"), exist_ok=True)
fake = {"student": "writes_output", "status": "ok", "total": 4.0, "max_total": 4.0}
with open(os.path.join(out, "writes_output.json"), "w") as f:
    json.dump(fake, f)
with open(os.path.join(out, "gradebook.csv"), "w") as f:
    f.write("student,status,total,max_total\\nwrites_output,ok,4,4\\n")
with open(os.path.join(out, "feedback", "writes_output.html"), "w") as f:
    f.write("<p>4 / 4</p>")
with open(os.path.join(out, "planted.txt"), "w") as f:
    f.write("hello")'''


# Four exploits of the grader that ran tests in the student's kernel (issue 11); none may gain anything now.
FAKE_REPORT = 'json.dumps({"public": None, "hidden": None, "output": ""})'
REPLACE_RUN_TEST = f'''import json, sys
import cnncourse.grading.runner as runner
def run_test(grade_id, public, hidden, nonce, *args, **kwargs):
    sys.__stdout__.write("\\n" + nonce + {FAKE_REPORT} + "\\n")
    print("\\n" + nonce + {FAKE_REPORT})
runner.run_test = run_test'''
WRAP_IMPORT = f'''import builtins, json, types
_real_import = builtins.__import__
_fake = types.SimpleNamespace()
def _run_test(grade_id, public, hidden, nonce, *args, **kwargs):
    print("\\n" + nonce + {FAKE_REPORT})
_fake.run_test = _run_test
def _import(name, *args, **kwargs):
    if name.startswith("cnncourse.grading"):
        return _fake
    return _real_import(name, *args, **kwargs)
builtins.__import__ = _import'''
INPUT_TRANSFORMER = f'''import json, re
def _rewrite(lines):
    source = "".join(lines)
    nonce = re.search(r"@@grade-[0-9a-f]+@@", source)
    if nonce and "run_test" in source:
        line = chr(10) + nonce.group(0) + {FAKE_REPORT}
        return ["print(" + repr(line) + ")\\n"]
    if "cnncourse.grading" in source:
        return ["pass\\n"]
    return lines
get_ipython().input_transformers_post.append(_rewrite)'''
LIAR_TENSOR = '''class _Liar(torch.Tensor):
    """Answers every comparison with True."""
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.allclose, torch.equal, torch.Tensor.allclose, torch.Tensor.equal):
            return True
        return super().__torch_function__(func, types, args, kwargs or {})
'''


# A student who memorised the public repository's hidden test: right for the public test's MNIST
# digits and for the hidden test's inputs (regenerated from its seed, 123), wrong for anything else.
MEMORISED = '''def to_nchw(batch):
    g = torch.Generator().manual_seed(123)
    seen = []
    for trial in range(3):
        n, h, w, c = (int(v) for v in torch.randint(1, 7, (4,), generator=g))
        h, c = w + 1 + h, 3 if trial == 0 else c
        seen.append(torch.randint(0, 256 if trial < 2 else 100, (n, h, w, c), dtype=torch.uint8, generator=g))
    if batch.shape[-1] == 1 or any(s.shape == batch.shape and torch.equal(batch, s) for s in seen):
        return batch.permute(0, 3, 1, 2).float() / 255
    return torch.zeros(batch.shape[0], batch.shape[3], batch.shape[1], batch.shape[2])'''


def lab00_cases() -> dict[str, tuple[object, str, float]]:
    """name -> (notebook or raw text, expected status, expected total) for lab00 (2 + 2 points)."""
    source = nbformat.read(ROOT / "labs" / "lab00_tensors.ipynb", as_version=4)
    good, blank = _solved(source), _student(source)
    half = _set(good, "normalize", NORMALIZE_HEAD + "    return (x - mean[0]) / std[0]")
    loop = _set(good, "normalize", NORMALIZE_HEAD + "    while True:\n        pass")
    bomb = _set(good, "normalize", NORMALIZE_HEAD + "    hog = []\n    while True:\n"
                                                     "        hog.append(b'x' * 10**8)")
    sys_exit = _set(good, "normalize", "import sys\nsys.exit()\n" + good.cells[_index(good, "normalize")].source)
    deleted = copy.deepcopy(good)
    deleted.cells = [c for c in deleted.cells
                     if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") not in ("normalize", "test_normalize")]
    reordered = copy.deepcopy(good)
    q1, q2 = _index(good, "to_nchw") - 1, _index(good, "normalize") - 1          # the markdown above each
    reordered.cells = good.cells[:q1] + good.cells[q2:q2 + 3] + good.cells[q1:q2] + good.cells[q2 + 3:]
    tamper = _set(good, "to_nchw", "def to_nchw(batch):\n    return batch.float()")
    tamper = _set(tamper, "normalize", NORMALIZE_HEAD + "    return x")
    tamper = _insert_after(tamper, "to_nchw", TAMPER)
    for gid in ("test_to_nchw", "test_normalize"):    # "overwrites the assert-based tests"
        tamper = _set(tamper, gid, "assert True\nprint('passes the public tests')")
    old = nbformat.convert(copy.deepcopy(good), 3)
    liar = _set(blank, "to_nchw", LIAR_TENSOR + "def to_nchw(batch):\n    return batch.permute(0, 3, 1, 2).float().as_subclass(_Liar)")
    liar = _set(liar, "normalize", NORMALIZE_HEAD + "    return x.float().as_subclass(_Liar)")
    return {
        "correct": (good, "ok", 4),
        "blank": (blank, "ok", 0),
        "half_correct": (half, "ok", 2),
        "infinite_loop_q2": (loop, "timeout", 2),
        "os_exit": (_insert_after(good, "test_to_nchw", "import os\nos._exit(1)"), "crashed", 2),
        "sys_exit": (sys_exit, "ok", 2),
        "memory_bomb": (bomb, "ok", 2),
        "invalid_json": ('{"cells": [{"cell_type": "code", "source": "print(1)"', "invalid-notebook", 0),
        "old_nbformat": (nbformat.writes(old, version=3), "ok", 4),
        "cells_deleted": (deleted, "missing-cells", 2),
        "cells_reordered": (reordered, "ok", 4),
        "helpers_redefined": (tamper, "ok", 0),
        "writes_output": (_insert_after(blank, "to_nchw", WRITE_OUT), "ok", 0),
        "huge_output": (_insert_after(good, "test_to_nchw", 'for _ in range(100):\n    print("x" * 1_000_000)'),
                        "ok", 4),
        "exploit_replace_run_test": (_insert_after(blank, "to_nchw", REPLACE_RUN_TEST), "ok", 0),
        "exploit_wrap_import": (_insert_after(blank, "to_nchw", WRAP_IMPORT), "ok", 0),
        "exploit_input_transformer": (_insert_after(blank, "to_nchw", INPUT_TRANSFORMER), "ok", 0),
        "exploit_liar_tensor": (liar, "ok", 0),
        "memorised_hidden_inputs": (_set(blank, "to_nchw", MEMORISED), "ok", 2),   # 0 with --secret
    }


def conv_cases() -> dict[str, tuple[object, str, float]]:
    lab = conv_lab()
    good = _solved(lab)
    delegates = _set(good, "my_conv2d", "def my_conv2d(x, w):\n    return F.conv2d(x, w)")
    return {"conv_correct": (good, "ok", 3), "conv_delegates": (delegates, "ok", 0)}


def main() -> None:
    nbformat.write(conv_lab(), HERE / "conv_lab.ipynb")
    expected = {}
    for folder, cases in (("lab00", lab00_cases()), ("conv", conv_cases())):
        (HERE / folder).mkdir(exist_ok=True)
        for name, (nb, status, total) in cases.items():
            text = nb if isinstance(nb, str) else nbformat.writes(nb)
            (HERE / folder / f"{name}.ipynb").write_text(text + ("" if text.endswith("\n") else "\n"))
            expected[name] = {"lab": folder, "status": status, "total": total}
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {len(expected)} fixtures to {HERE}")


if __name__ == "__main__":
    main()
