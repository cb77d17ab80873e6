"""Every lab's mutants (tests/labs/<lab>.toml) must fail their question's hidden tests, for every secret tried.

A mutant is a plausible wrong answer, stored as the snippet that replaces a solution region
(see cnncourse/grading/mutants.py). The suite runs through the grader's own plan and test code;
one kernel per lab is shared by the reference and its mutants. The labs run in two worker
processes (the machine has two cores), started once for the whole module.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from cnncourse.grading.mutants import MutantFileError, load_mutants, mutated_source, run_suite, run_suites

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted((ROOT / "tests" / "labs").glob("*.toml"))
LAB01 = ROOT / "labs" / "lab01_convolution.ipynb"


@pytest.fixture(scope="module")
def suites(request):
    """Each selected lab's :class:`SuiteResult` (or the exception it raised), computed in parallel once.

    Only the labs whose suite test was selected run (``-k lab03`` runs lab03's suite alone).
    """
    selected = {item.callspec.params["toml"] for item in request.session.items
                if getattr(item, "originalname", "") == "test_every_mutant_is_killed_and_the_reference_scores_full_marks"}
    return run_suites([ROOT / "labs" / f"{f.stem}.ipynb" for f in selected], jobs=2)


@pytest.mark.mutants
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("toml", FILES, ids=[f.stem for f in FILES])
def test_every_mutant_is_killed_and_the_reference_scores_full_marks(suites, toml):
    result = suites[toml.stem]
    if isinstance(result, Exception):
        raise result
    wrong = {q: s for q, s in result.reference.items() if any(v != result.points[q] for v in s)}
    assert not wrong, f"{toml.stem}: the reference loses points (per secret): {wrong}"
    assert result.results, f"{toml}: no mutants"
    survivors = [r.describe() for r in result.survivors]
    assert not survivors, f"{toml.stem}: {len(survivors)} of {len(result.results)} mutants survive:\n" + \
        "\n".join(survivors)


@pytest.mark.parametrize("toml", FILES, ids=[f.stem for f in FILES])
def test_every_graded_question_has_five_mutants(toml):
    from cnncourse.grading.autograde import load_lab

    lab = ROOT / "labs" / f"{toml.stem}.ipynb"
    counts = {t.grade_id: 0 for t in load_lab(lab).tests}
    for m in load_mutants(toml, lab):
        counts[m.question] += 1
    few = {q: n for q, n in counts.items() if n < 5}
    assert not few, f"{toml.stem}: questions with fewer than 5 mutants: {few}"


def _write(tmp_path, text):
    path = tmp_path / "m.toml"
    path.write_text(textwrap.dedent(text))
    return path


GOOD = '''
    [[mutant]]
    name = "a"
    solution = "conv_forward_naive"
    question = "test_conv_forward_naive"
    kind = "missing-bias"
    why = "w"
    code = "return x"
'''


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.replace('name = "a"\n', ""), "missing key(s) name"),
    (lambda s: s.replace('"conv_forward_naive"\n', '"conv_naive"\n'), "solution 'conv_naive' is not a solution cell"),
    (lambda s: s.replace('"test_conv_forward_naive"', '"test_nothing"'), "question 'test_nothing' is not a graded"),
    (lambda s: s.replace('"missing-bias"', '"typo"'), "kind 'typo' is not one of"),
    (lambda s: s + "    region = 3\n", "region 3 out of range; cell 'conv_forward_naive' has 1 solution region"),
    (lambda s: s + "    colour = 1\n", "unknown key(s) colour"),
    (lambda s: s + s, "the name 'a' is used twice"),
    (lambda s: s.replace("[[mutant]]", "[mutant]"), "expected only [[mutant]] tables"),
    (lambda s: s.replace('code = "return x"', 'code = "'), "not a readable TOML file"),
])
def test_loader_names_file_mutant_and_what_was_expected(tmp_path, edit, message):
    path = _write(tmp_path, edit(GOOD))
    with pytest.raises(MutantFileError) as info:
        load_mutants(path, LAB01)
    assert message in str(info.value) and str(path) in str(info.value)


def test_loader_accepts_a_good_file_and_the_snippet_is_reindented(tmp_path):
    (m,) = load_mutants(_write(tmp_path, GOOD), LAB01)
    assert (m.name, m.region) == ("a", 0)
    src = "def f(x):\n    y = 1\n    ### BEGIN SOLUTION\n    return 2\n    ### END SOLUTION\n"
    assert mutated_source(src, 0, "if x:\n    return x\n") == "def f(x):\n    y = 1\n    if x:\n        return x"


@pytest.mark.parametrize("source, reads", [
    ("for name in NETS:\n    print(name)", {"NETS", "print"}),  # a loop variable is bound before it is read
    ("x = f(x)", {"f", "x"}),  # the right-hand side runs first: x comes from an earlier cell
    ("y = 1\nz = y + w", {"w"}),
    ("total += step", {"total", "step"}),
    ("out = [g(a) for a in items]", {"g", "items"}),  # a comprehension's variable is its own
    ("import torch\nt = torch.zeros(3)", set()),
    ("def f():\n    return helper(q)", {"helper", "q"}),  # a body counts every name it reads
    ("model.weight[0] = 1", {"model"}),
])
def test_a_cell_reads_only_the_names_it_does_not_bind_first(source, reads):
    from cnncourse.grading.dataflow import cell_names

    assert cell_names(source)[1] == reads


def test_a_cell_that_rebinds_a_loop_variable_does_not_pull_in_the_training_cell():
    """lab05: the grad-norms cell loops over ``name``, which the training cell also binds. A residual-block
    mutant must re-run the grad-norms cell, not the training (which once made each such mutant take a minute)."""
    from types import SimpleNamespace

    from cnncourse.grading.dataflow import dependants

    def test(grade_id, code):
        return ("test", SimpleNamespace(grade_id=grade_id, public=code, hidden=""))

    steps = [
        ("student", (0, "class Block: pass")),
        test("test_block", "Block()"),
        ("student", (2, "train = load()")),
        ("student", (3, "for name in NETS:\n    hist[name] = fit(Net(Block), train)")),
        ("student", (4, "x = next(iter(train))")),
        ("student", (5, "norms = {}\nfor name in ('a', 'b'):\n    norms[name] = grad(Net(Block), x)")),
        test("test_norms", "check(norms, grad(Net(Block), x))"),
    ]
    assert dependants(steps, 0, "test_block") == [1, 5, 6]
    steps[5] = ("student", (5, "norms = {}\nnorms[name] = grad(Net(Block), x)"))  # reads the training's `name`
    assert dependants(steps, 0, "test_block") == [1, 3, 5, 6]


@pytest.mark.timeout(300)
def test_a_test_runs_once_only_when_no_secret_can_reach_it(tmp_path):
    """The suite runs a test under one secret only when the test neither called course_seed nor drew from the
    grader's seeded generator. A mutant wrong on even inputs must still survive under some secrets and not
    others when the inputs come from either source; a test with fixed inputs runs once per step, not six times."""
    import nbformat

    from cnncourse.grading.mutants import SECRETS, Mutant

    grader = {"grade": True, "locked": True, "points": 1, "schema_version": 3, "solution": False}
    runs = tmp_path / "runs.txt"

    def test_cell(grade_id, source):
        return nbformat.v4.new_code_cell(source, metadata={"nbgrader": {**grader, "grade_id": grade_id}})

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("QUICK = True", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import torch"),
        nbformat.v4.new_code_cell("def f(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION",
                                  metadata={"nbgrader": {"grade": False, "grade_id": "f", "locked": False,
                                                         "schema_version": 3, "solution": True}}),
        test_cell("test_fixed", f"open({str(runs)!r}, 'a').write('x')\ncheck_equal(f(3), 4)"),
        # its own generator: the grader's seeded one is left untouched, only course_seed brings the secret
        test_cell("test_course_seed", "g = torch.Generator().manual_seed(course_seed(7))\n"
                                      "v = int(torch.randint(0, 1000, (), generator=g))\ncheck_equal(f(v), v + 1)"),
        test_cell("test_generator", "v = int(torch.randint(0, 1000, ()))\ncheck_equal(f(v), v + 1)"),
    ])
    lab = tmp_path / "labs" / "lab_tiny.ipynb"
    lab.parent.mkdir()
    nbformat.write(nb, lab)
    even = "return x if x % 2 == 0 else x + 1"
    mutants = [Mutant(f"even_{q}", "f", q, "other", "wrong on even inputs", even)
               for q in ("test_course_seed", "test_generator")]
    result = run_suite(lab, mutants)
    assert result.reference_ok, result.reference
    assert result.reference["test_fixed"] == [1] * len(SECRETS)
    for r in result.results:
        assert 0 < len(r.survived_secrets) < len(SECRETS), (r.mutant.name, r.survived_secrets)
    # The reference ran test_fixed once, and each mutant re-ran it once (it uses f).
    assert runs.read_text() == "x" * (1 + len(mutants))
