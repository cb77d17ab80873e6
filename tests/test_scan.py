"""The integrity scan: true positives for each construct, and zero flags on every lab's reference solution."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from nbformat import v4

from cnncourse.grading.autograde import load_lab
from cnncourse.grading.scan import CODES, flag_codes, scan_notebook, scan_source

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "grading"))
from make_fixtures import _solved  # noqa: E402

LABS = sorted((ROOT / "labs").glob("*.ipynb"))


def _codes(source: str) -> set[str]:
    return {code for code, _, _ in scan_source(source)}


@pytest.mark.parametrize("source, code", [
    ("import cnncourse.grading.runner as r\nr.run_test = print", "grader-internals"),
    ("from cnncourse.grading import runner", "grader-internals"),
    ("x = __import__('cnncourse.grading.runner')", "grader-internals"),
    ("import builtins\nbuiltins.print = None", "builtins"),
    ("AssertionError = Exception", "builtins"),
    ("def isinstance(a, b):\n    return True", "builtins"),
    ("m = __import__('os')", "__import__"),
    ("import importlib\nimportlib.import_module('os')", "__import__"),
    ("import sys\ndel sys.modules['torch']", "sys.modules"),
    ("from sys import modules", "sys.modules"),
    ("get_ipython().input_transformers_post.append(f)", "ipython-hooks"),
    ("get_ipython().events.register('post_run_cell', f)", "ipython-hooks"),
    ("from IPython.core.interactiveshell import InteractiveShell\nInteractiveShell.showtraceback = f", "ipython-hooks"),
    ("import gc\nobjs = gc.get_objects()", "gc"),
    ("import ctypes", "ctypes"),
    ("import inspect\nf = inspect.currentframe().f_back", "frames"),
    ("import sys\nf = sys._getframe(1)", "frames"),
    ("import sys\nsys.settrace(t)", "tracing"),
    ("import threading\nthreading.setprofile(t)", "tracing"),
    ("import sys as s\ns.settrace(t)", "tracing"),
    ("class T(torch.Tensor):\n    pass", "tensor-subclass"),
    ("y = x.as_subclass(T)", "tensor-subclass"),
    ("exec('x = 1')", "dynamic-code"),
    ("y = eval(text)", "dynamic-code"),
    ("c = compile(s, 'f', 'exec')", "dynamic-code"),
    ("open('/x/checks.py', 'w').write('')", "writes-py-file"),
    ("import cnncourse.grading.checks as c\nopen(c.__file__, 'a').write('x')", "writes-py-file"),
    ("from pathlib import Path\nPath('m.py').write_text('x')", "writes-py-file"),
    ("torch.allclose = lambda *a, **k: True", "monkeypatch"),
    ("import numpy\nnumpy.testing.assert_allclose = f", "monkeypatch"),
    ("setattr(torch, 'allclose', f)", "monkeypatch"),
    ("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)", "signal-handler"),
    ("import os\nif os.fork() == 0:\n    os.setsid()", "process"),
    ("import subprocess\nsubprocess.run(['ls'])", "process"),
    ("import atexit\natexit.register(f)", "atexit"),
    ("cells = json.load(open('../labs/lab00_tensors.ipynb'))", "reads-notebook"),
    ("!cat /etc/passwd", "shell"),
    ("%%bash\necho hi", "shell"),
])
def test_each_construct_is_flagged(source, code):
    assert code in CODES
    assert code in _codes(source), scan_source(source)


@pytest.mark.parametrize("source", [
    "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\nfrom cnncourse.data import load_dataset",
    "from cnncourse.grading.checks import check_close, check_shape\ncheck_close(x, y, 'x')",
    "model.eval()\nwith torch.no_grad():\n    out = model(x)",
    "torch.backends.cudnn.deterministic = True",
    "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.fc = nn.Linear(2, 3)",
    "opt = torch.compile(model)\nmax = 3\nid = 7",
    "import inspect\nprint(inspect.signature(f))",
    "with open('notes.txt', 'w') as f:\n    f.write('ok')",
    "%matplotlib inline\nimport matplotlib.pyplot as plt",
    "%timeit conv(x, w)",
])
def test_innocent_code_is_not_flagged(source):
    assert scan_source(source) == []


def test_magics_and_broken_cells_do_not_crash_the_scan():
    flags = scan_source("%load_ext autoreload\ndef broken(:\nimport gc\n!ls\nexec('1')")
    assert {"gc", "dynamic-code"} <= {c for c, _, _ in flags}
    assert scan_source("def f(:\n    pass") == []
    assert scan_source("import gc\nx = " + "(" * 5000 + "1" + ")" * 5000)[0][0] == "gc"   # too deep: per line


@pytest.mark.parametrize("lab_path", LABS, ids=[p.stem for p in LABS])
def test_every_reference_solution_gets_zero_flags(lab_path):
    lab = load_lab(lab_path)
    solved = _solved(nbformat.read(lab_path, as_version=4))
    assert scan_notebook(solved, [t.grade_id for t in lab.tests], lab.required_ids) == []


def test_flags_name_cell_and_line_and_skip_the_students_copy_of_test_cells():
    nb = v4.new_notebook(cells=[
        v4.new_markdown_cell("# lab"),
        v4.new_code_cell("x = 1\nimport gc"),
        v4.new_code_cell("import ctypes", metadata={"nbgrader": {"grade_id": "test_q", "grade": True}}),
    ])
    assert scan_notebook(nb, ["test_q"], ["test_q"]) == ["gc (cell 1, line 2): imports gc"]
    assert flag_codes(scan_notebook(nb)) == {"gc", "ctypes"}


def test_forged_nbgrader_metadata_is_flagged():
    meta = {"nbgrader": {"grade_id": "test_q", "grade": True, "solution": False}}
    nb = v4.new_notebook(cells=[
        v4.new_code_cell("def f(): pass", metadata={"nbgrader": {"grade_id": "test_q", "solution": True}}),
        v4.new_code_cell("", metadata=meta),
        v4.new_markdown_cell("hi", metadata=meta),
        v4.new_code_cell("y = 2", metadata={"nbgrader": {"grade_id": "made_up"}}),
    ])
    flags = scan_notebook(nb, ["test_q"], ["q", "test_q"])
    assert any("solution cell claims the test's grade_id 'test_q'" in f for f in flags), flags
    assert any("repeats cell 0" in f for f in flags) and any("markdown cell claims" in f for f in flags)
    assert any("'made_up' is not in the lab" in f for f in flags)
    assert flag_codes(flags) == {"nbgrader-metadata"}


def test_twenty_thousand_empty_cells_are_skipped():
    empty = {"cell_type": "code", "source": "", "metadata": {}, "outputs": []}
    nb = {"cells": [dict(empty) for _ in range(20_000)] + [dict(empty, source="import gc")]}
    assert scan_notebook(nb) == ["gc (cell 20000, line 1): imports gc"]
